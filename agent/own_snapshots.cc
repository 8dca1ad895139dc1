#include "agent/own_snapshots.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent {

namespace {
constexpr int kVersion = 1;
}

OwnSnapshots::OwnSnapshots(std::string path) : path_(std::move(path)) {
  if (!path_.empty()) load();
}

void OwnSnapshots::load() {
  struct stat st {};
  if (::stat(path_.c_str(), &st) != 0) return;  // no backup written yet
  std::string why;
  if (uint64_t(st.st_size) > kMaxFileBytes) {
    why = "it is larger than " + std::to_string(kMaxFileBytes) + " bytes";
  } else {
    try {
      Bytes text = read_file(path_);
      auto j = nlohmann::json::parse(text.begin(), text.end());
      if (j.value("version", 0) != kVersion) throw Error(Errc::unsupported, "unknown version");
      for (const auto& s : j.at("sources")) {
        if (ids_.size() >= kMaxSources) break;
        auto& list = ids_[{s.at("repository").get<std::string>(), s.at("component").get<std::string>()}];
        for (const auto& id : s.at("snapshots")) list.push_back(id.get<std::string>());
        if (list.size() > kKeepPerSource) list.erase(list.begin(), list.end() - kKeepPerSource);
      }
    } catch (const std::exception& e) {
      ids_.clear();
      why = std::string("it cannot be read: ") + e.what();
    }
  }
  if (why.empty()) return;
  // Never silently: without the record every next backup reads all its files.
  std::string aside = path_ + ".unusable";
  std::error_code ec;
  std::filesystem::rename(path_, aside, ec);
  spdlog::warn(
      "the record of this agent's own snapshots '{}' is set aside as '{}' because {}; the next backup of each "
      "component reads every file",
      path_, aside, why);
}

bool OwnSnapshots::contains(const std::string& repository, const std::string& component, const std::string& id) const {
  std::lock_guard g(mu_);
  auto it = ids_.find({repository, component});
  return it != ids_.end() && std::find(it->second.begin(), it->second.end(), id) != it->second.end();
}

std::string OwnSnapshots::add(const std::string& repository, const std::string& component, const std::string& id) {
  std::lock_guard g(mu_);
  Source key{repository, component};
  if (!ids_.count(key) && ids_.size() >= kMaxSources) ids_.erase(ids_.begin());
  auto& list = ids_[key];
  list.erase(std::remove(list.begin(), list.end(), id), list.end());
  list.push_back(id);
  if (list.size() > kKeepPerSource) list.erase(list.begin(), list.end() - kKeepPerSource);
  return save();
}

std::string OwnSnapshots::save() const {
  if (path_.empty()) return {};
  nlohmann::json sources = nlohmann::json::array();
  for (const auto& [k, v] : ids_) sources.push_back({{"repository", k.first}, {"component", k.second}, {"snapshots", v}});
  std::string text = nlohmann::json{{"version", kVersion}, {"sources", sources}}.dump();
  try {
    mkdir_p(std::filesystem::path(path_).parent_path().string(), 0700);
    write_file_atomic(path_, as_bytes(text), 0600);
  } catch (const std::exception& e) {
    return e.what();
  }
  return {};
}

}  // namespace cairn::agent
