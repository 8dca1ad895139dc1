#include "common/repo/storage/cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string_view>
#include <vector>

#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo::storage {
namespace {
std::atomic<uint64_t> g_tmp{0};

bool safe_name(const std::string& n) {
  if (n.empty() || n.size() > 128) return false;
  for (char c : n)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}
}  // namespace

std::string default_cache_dir() {
  if (const char* d = std::getenv("CAIRN_CACHE_DIR"); d && *d) return d;
  if (const char* d = std::getenv("XDG_CACHE_HOME"); d && *d == '/') return std::string(d) + "/cairn";
  if (const char* h = std::getenv("HOME"); h && *h == '/') return std::string(h) + "/.cache/cairn";
  return "/var/tmp/cairn-cache-" + std::to_string(::getuid());
}

uint64_t default_cache_max() {
  constexpr uint64_t kDefault = 2ull << 30;
  const char* v = std::getenv("CAIRN_CACHE_MAX");
  if (!v || !*v) return kDefault;
  char* end = nullptr;
  errno = 0;
  unsigned long long n = std::strtoull(v, &end, 10);
  if (errno || end == v) return kDefault;
  uint64_t mult = 1;
  switch (*end) {
    case '\0':
      break;
    case 'K':
    case 'k':
      mult = 1ull << 10;
      ++end;
      break;
    case 'M':
    case 'm':
      mult = 1ull << 20;
      ++end;
      break;
    case 'G':
    case 'g':
      mult = 1ull << 30;
      ++end;
      break;
    default:
      return kDefault;
  }
  if (*end || n > UINT64_MAX / mult) return kDefault;
  return n * mult;
}

ObjectCache::ObjectCache(std::string dir) : dir_(std::move(dir)) {}

std::string ObjectCache::path(const char* kind, const std::string& name) const { return dir_ + "/" + kind + "/" + name; }

namespace {
// An entry: this line, then the object's bytes.
std::string entry_header(const std::string& fingerprint) { return "cairn-cache 2 " + fingerprint + "\n"; }
bool safe_fingerprint(const std::string& f) {
  if (f.empty() || f.size() > 256) return false;
  for (char c : f)
    if (c == '\n' || c == '\0') return false;
  return true;
}
}  // namespace

std::optional<Bytes> ObjectCache::get(const char* kind, const std::string& name, const std::string& fingerprint) {
  if (!safe_name(name) || !safe_fingerprint(fingerprint)) return std::nullopt;
  try {
    std::string p = path(kind, name);
    Bytes b = read_file(p, 64u << 20);
    const std::string head = entry_header(fingerprint);
    if (b.size() < head.size() || !std::equal(head.begin(), head.end(), b.begin())) {
      ::unlink(p.c_str());  // of another version of the object (or an older cache's format)
      misses_++;
      return std::nullopt;
    }
    b.erase(b.begin(), b.begin() + ptrdiff_t(head.size()));
    hits_++;
    ::utimensat(AT_FDCWD, p.c_str(), nullptr, 0);  // used now: trimmed last (its mtime is its last use)
    return b;
  } catch (const Error&) {
    misses_++;
    return std::nullopt;
  }
}

void ObjectCache::put(const char* kind, const std::string& name, std::span<const uint8_t> data, const std::string& fingerprint) noexcept {
  if (!safe_name(name) || !safe_fingerprint(fingerprint)) return;
  try {
    std::string d = dir_ + "/" + kind;
    mkdir_p(d, 0700);
    std::string tmp = d + "/.tmp-" + std::to_string(::getpid()) + "-" + std::to_string(g_tmp++);
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) return;
    try {
      const std::string head = entry_header(fingerprint);
      write_all(fd.get(), reinterpret_cast<const uint8_t*>(head.data()), head.size(), tmp);
      write_all(fd.get(), data.data(), data.size(), tmp);
    } catch (const Error&) {
      ::unlink(tmp.c_str());
      return;
    }
    fd.reset();
    if (::rename(tmp.c_str(), path(kind, name).c_str()) != 0) ::unlink(tmp.c_str());
  } catch (...) {
    // a cache that cannot be written is a cache that is not used
  }
}

void ObjectCache::drop(const char* kind, const std::string& name) noexcept {
  if (safe_name(name)) ::unlink(path(kind, name).c_str());
}

uint64_t ObjectCache::trim(uint64_t max_bytes) noexcept {
  struct Entry {
    int rank;  // 0: trees, 1: index files and snapshots (every open reads them)
    int64_t used;
    uint64_t size;
    std::string path;
  };
  try {
    std::vector<Entry> all;
    uint64_t total = 0;
    for (const char* kind : {"trees", "index", "snapshots"}) {
      int rank = std::string_view(kind) == "trees" ? 0 : 1;
      each_entry(kind, [&](int dfd, const std::string& n) {
        struct stat st {};
        if (::fstatat(dfd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(st.st_mode)) return;
        total += uint64_t(st.st_size);
        all.push_back({rank, int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec, uint64_t(st.st_size), path(kind, n)});
      });
    }
    if (total <= max_bytes) return 0;
    std::sort(all.begin(), all.end(), [](const Entry& a, const Entry& b) { return a.rank != b.rank ? a.rank < b.rank : a.used < b.used; });
    uint64_t removed = 0;
    for (const auto& e : all) {
      if (total - removed <= max_bytes) break;
      if (::unlink(e.path.c_str()) == 0) removed += e.size;
    }
    return removed;
  } catch (...) {
    return 0;  // a cache that cannot be trimmed is still a cache
  }
}

void ObjectCache::keep_only(const char* kind, const std::set<std::string>& listed) noexcept {
  keep_if(kind, [&](const std::string& n) { return listed.count(n) != 0; });
}

void ObjectCache::each_entry(const char* kind, const std::function<void(int, const std::string&)>& fn) const {
  std::string d = dir_ + "/" + kind;
  DIR* dir = ::opendir(d.c_str());
  if (!dir) return;
  std::unique_ptr<DIR, int (*)(DIR*)> guard(dir, ::closedir);
  while (auto* e = ::readdir(dir)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") fn(::dirfd(dir), n);
  }
}

void ObjectCache::keep_if(const char* kind, const std::function<bool(const std::string&)>& keep) noexcept {
  try {
    each_entry(kind, [&](int dfd, const std::string& n) {
      bool drop = n.rfind(".tmp-", 0) == 0;  // a stale partial write
      if (!drop) {
        try {
          drop = !keep(n);
        } catch (...) {
        }
      }
      if (drop) ::unlinkat(dfd, n.c_str(), 0);
    });
  } catch (...) {
    // a cache that cannot be read is one that is not used
  }
}

}  // namespace cairn::repo::storage
