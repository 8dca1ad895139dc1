#include "agent/drill_paths.h"

#include <sys/stat.h>

#include <filesystem>

#include "common/util/fs.h"

namespace cairn::agent {

namespace fs = std::filesystem;

namespace {

bool within(const fs::path& p, const fs::path& root) {
  auto r = root.begin(), x = p.begin();
  for (; r != root.end(); ++r, ++x)
    if (x == p.end() || *x != *r) return false;
  return true;
}

}  // namespace

std::optional<std::string> sandboxed_path(const std::string& root, const std::string& recorded, std::string* why) {
  auto no = [&](std::string w) -> std::optional<std::string> {
    if (why) *why = std::move(w);
    return std::nullopt;
  };
  if (!is_clean_absolute_path(recorded)) return no("'" + recorded + "' is not an absolute path without '..'");
  std::string at = root;
  for (const auto& part : fs::path(recorded).relative_path()) {
    if (part.empty() || part == ".") continue;
    at += "/" + part.string();
    struct stat st {};
    if (::lstat(at.c_str(), &st) != 0) break;  // missing: nothing below it to follow
    if (S_ISLNK(st.st_mode))
      return no("'" + at.substr(root.size()) + "' in the restored tree is a symbolic link; a drill does not follow it");
  }
  return root + recorded;
}

std::vector<std::string> links_out_of(const std::string& root, size_t max) {
  std::vector<std::string> out;
  std::error_code ec;
  const fs::path base = fs::canonical(root, ec);
  if (ec) return {root + ": " + ec.message()};
  for (auto it = fs::recursive_directory_iterator(base, fs::directory_options::none, ec);
       !ec && it != fs::recursive_directory_iterator() && out.size() < max; it.increment(ec)) {
    std::error_code e2;
    if (!it->is_symlink(e2)) continue;
    const fs::path target = fs::read_symlink(it->path(), e2);
    if (e2) {
      out.push_back(it->path().lexically_relative(base).string() + " -> (unreadable)");
      continue;
    }
    const fs::path full = target.is_absolute() ? target : it->path().parent_path() / target;
    const fs::path resolved = fs::weakly_canonical(full, e2);
    if (e2 || !within(resolved.lexically_normal(), base))
      out.push_back(it->path().lexically_relative(base).string() + " -> " + target.string());
  }
  return out;
}

}  // namespace cairn::agent
