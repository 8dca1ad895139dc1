// Filesystem backend: local disks and network mounts (NFS, SMB/Azure Files).
#include "common/util/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "common/repo/storage/backend.h"
#include "common/util/error.h"

namespace cairn::repo {

const char* file_type_name(FileType t) {
  switch (t) {
    case FileType::config:
      return "config";
    case FileType::key:
      return "keys";
    case FileType::pack:
      return "data";
    case FileType::index:
      return "index";
    case FileType::snapshot:
      return "snapshots";
    case FileType::lock:
      return "locks";
    case FileType::dict:
      return "dicts";
    case FileType::claim:
      return "claims";
    case FileType::set_record:
      return "sets";
    case FileType::exported:
      return "exports";
  }
  return "?";
}

const char* protection_name(Protection p) {
  switch (p) {
    case Protection::not_applicable:
      return "not_applicable";
    case Protection::none:
      return "none";
    case Protection::unknown:
      return "unknown";
    case Protection::versioning:
      return "versioning";
    case Protection::object_lock:
      return "object_lock";
    case Protection::create_only:
      return "create_only";
  }
  return "?";
}

Bytes Backend::load_version(const Handle& h, const std::string& version) {
  throw Error(Errc::unsupported, "'" + location() + "' keeps no versions ('" + object_path(h) + "' version " + version + ")");
}

std::string object_path(const Handle& h) {
  switch (h.type) {
    case FileType::config:
      return "config";
    case FileType::pack:
      return "data/" + h.name.substr(0, 2) + "/" + h.name;
    default:
      return std::string(file_type_name(h.type)) + "/" + h.name;
  }
}

namespace {

std::atomic<uint64_t> g_tmp_counter{0};

class FsBackend final : public Backend {
 public:
  explicit FsBackend(std::string root) : root_(std::move(root)) {
    while (root_.size() > 1 && root_.back() == '/') root_.pop_back();
  }
  std::string location() const override { return root_; }
  BackendCaps caps() const override { return {.local = true, .atomic_replace = true, .exclusive_create = true}; }

  std::string path(const Handle& h) const { return root_ + "/" + object_path(h); }

  // Makes a missing directory below the root (data/xx, claims/), never the
  // root itself: a repository whose disk is not mounted must fail, not grow
  // a new tree on the mount point that later hides the real one.
  void make_type_dir(const std::string& dir) const {
    struct stat st {};
    if (::stat((root_ + "/keys").c_str(), &st) != 0)  // made by create() before anything else is written
      throw Error(Errc::not_found, "no repository at '" + root_ + "' (its keys/ directory is missing: is the disk or share mounted?)");
    mkdir_p(dir, 0700);
  }

  void create() override {
    struct stat st {};
    if (::stat((root_ + "/config").c_str(), &st) == 0) throw Error(Errc::exists, "a repository already exists at '" + root_ + "'");
    mkdir_p(root_, 0700);
    for (auto t : {FileType::key, FileType::pack, FileType::index, FileType::snapshot, FileType::lock, FileType::dict})
      mkdir_p(root_ + "/" + file_type_name(t), 0700);
    static const char* hex = "0123456789abcdef";
    for (int i = 0; i < 256; ++i) {
      char d[3] = {hex[i >> 4], hex[i & 15], 0};
      mkdir_p(root_ + "/data/" + d, 0700);
    }
  }

  void save(const Handle& h, std::span<const uint8_t> data) override {
    std::string p = path(h);
    std::string dir = p.substr(0, p.rfind('/'));
    std::string tmp = dir + "/.tmp-" + std::to_string(::getpid()) + "-" + std::to_string(g_tmp_counter++);
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd && errno == ENOENT) {  // a data/xx dir may be missing on a hand-copied repository
      make_type_dir(dir);
      fd = Fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    }
    if (!fd) throw_errno("cannot create", tmp, errno);
    try {
      write_all(fd.get(), data.data(), data.size(), p);
      if (::fsync(fd.get()) != 0) throw_errno("cannot sync", p, errno);
      fd.reset();
      if (::rename(tmp.c_str(), p.c_str()) != 0) throw_errno("cannot rename into", p, errno);
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
    fsync_dir(dir);
  }

  bool create_exclusive(const Handle& h, std::span<const uint8_t> data) override {
    std::string p = path(h);
    std::string dir = p.substr(0, p.rfind('/'));
    Fd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd && errno == ENOENT) {  // claims/ is made on first use (older repositories have none)
      make_type_dir(dir);
      fd = Fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    }
    if (!fd) {
      if (errno == EEXIST) return false;
      throw_errno("cannot create", p, errno);
    }
    write_all(fd.get(), data.data(), data.size(), p);
    return true;
  }

  Bytes load(const Handle& h, uint64_t offset, uint64_t length) override {
    Bytes out;
    load_into(h, offset, length, out);
    return out;
  }

  void load_into(const Handle& h, uint64_t offset, uint64_t length, Bytes& out) override {
    std::string p = path(h);
    Fd fd(::open(p.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) throw_errno("cannot open", p, errno);
    if (length == 0) {
      struct stat st {};
      if (fstat(fd.get(), &st) != 0) throw_errno("cannot stat", p, errno);
      if (uint64_t(st.st_size) < offset) throw Error(Errc::corrupt, "'" + p + "' is shorter than expected");
      length = uint64_t(st.st_size) - offset;
    }
    out.resize(length);
    pread_all(fd.get(), out.data(), length, offset, p);
  }

  std::optional<uint64_t> size(const Handle& h) override {
    struct stat st {};
    std::string p = path(h);
    if (::stat(p.c_str(), &st) != 0) {
      if (errno == ENOENT) return std::nullopt;
      throw_errno("cannot stat", p, errno);
    }
    return uint64_t(st.st_size);
  }

  void remove(const Handle& h) override {
    std::string p = path(h);
    if (::unlink(p.c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove", p, errno);
  }

  void list(FileType t, const std::function<void(const std::string&, uint64_t)>& fn) override {
    if (t == FileType::config) {
      if (auto s = size({t, ""})) fn("config", *s);
      return;
    }
    std::string dir = root_ + "/" + file_type_name(t);
    if (t == FileType::pack) {
      static const char* hex = "0123456789abcdef";
      for (int i = 0; i < 256; ++i) {
        char d[3] = {hex[i >> 4], hex[i & 15], 0};
        list_dir(dir + "/" + d, fn);
      }
    } else {
      list_dir(dir, fn);
    }
  }

 private:
  static void list_dir(const std::string& dir, const std::function<void(const std::string&, uint64_t)>& fn) {
    DIR* d = ::opendir(dir.c_str());
    if (!d) {
      if (errno == ENOENT) return;
      throw_errno("cannot list", dir, errno);
    }
    std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
    while (auto* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;  // ., .. and in-progress .tmp-* files
      struct stat st {};
      std::string p = dir + "/" + e->d_name;
      if (::stat(p.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      fn(e->d_name, uint64_t(st.st_size));
    }
  }

  std::string root_;

 public:
  void list_leftovers(const std::function<void(const std::string&, uint64_t)>& fn) override {
    auto scan = [&](const std::string& rel) {
      DIR* d = ::opendir((root_ + "/" + rel).c_str());
      if (!d) return;
      std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
      while (auto* e = ::readdir(d)) {
        if (std::strncmp(e->d_name, ".tmp-", 5) != 0) continue;
        struct stat st {};
        std::string p = rel + "/" + e->d_name;
        if (::lstat((root_ + "/" + p).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
        fn(p, uint64_t(st.st_size));
      }
    };
    static const char* hex = "0123456789abcdef";
    scan(".");  // config
    for (FileType t :
         {FileType::key, FileType::index, FileType::snapshot, FileType::lock, FileType::dict, FileType::claim, FileType::set_record})
      scan(file_type_name(t));
    for (int i = 0; i < 256; ++i) scan(std::string(file_type_name(FileType::pack)) + "/" + hex[i >> 4] + hex[i & 15]);
  }
  void remove_leftover(const std::string& path) override {
    // Only what list_leftovers names: a .tmp- file one or two levels down.
    auto slash = path.rfind('/');
    if (slash == std::string::npos || path.compare(slash + 1, 5, ".tmp-") != 0 || path.find("..") != std::string::npos)
      throw Error(Errc::invalid_input, "'" + path + "' is not a temporary file of this repository");
    if (::unlink((root_ + "/" + path).c_str()) != 0 && errno != ENOENT) throw_errno("cannot remove", root_ + "/" + path, errno);
  }
};

}  // namespace

std::unique_ptr<Backend> make_fs_backend(const std::string& path) { return std::make_unique<FsBackend>(path); }

}  // namespace cairn::repo
