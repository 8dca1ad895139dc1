#include "agent/drivers/files/mirror.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/repo/restorer.h"

namespace cairn::agent::files {
namespace {

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Fd& operator=(Fd&& o) noexcept {
    std::swap(fd_, o.fd_);
    return *this;
  }
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_;
};

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

// One directory being listed. `purge`: everything in it goes; `name` is its
// entry in the parent frame, removed once it is empty (purge frames only).
struct Frame {
  DIR* dir = nullptr;
  std::string path;
  bool purge = false;
  std::string name;
};

class Pruner {
 public:
  Pruner(const MirrorSpec& spec, MirrorResult& res) : spec_(spec), res_(res) {}

  void root(const std::string& target, const std::string& root) {
    Fd dir(::open(target.empty() ? "/" : target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (dir.get() < 0) return problem(root, "cannot open the restore target: " + err());
    // From the target down to the root, no component may be a link.
    size_t at = 1;
    while (at < root.size()) {
      size_t end = root.find('/', at);
      if (end == std::string::npos) end = root.size();
      std::string name = root.substr(at, end - at);
      at = end + 1;
      if (name.empty() || name == "." || name == "..") return problem(root, "not a normal path; not mirrored");
      Fd next(::openat(dir.get(), name.c_str(), kDirFlags));
      if (next.get() < 0) {
        int e = errno;
        // A link says ELOOP or ENOTDIR (O_DIRECTORY is checked first on some kernels).
        struct stat st {};
        if ((e == ELOOP || e == ENOTDIR) && ::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
          return problem(root, "'" + root.substr(0, end) + "' is a symbolic link; nothing below it was removed");
        // A root that is a file, or absent, has nothing below it to remove.
        if (e == ENOTDIR || e == ENOENT) return;
        return problem(root, "cannot open '" + root.substr(0, end) + "': " + std::strerror(e));
      }
      dir = std::move(next);
    }
    walk(dir.release(), root);
  }

 private:
  void walk(int fd, const std::string& root) {
    std::vector<Frame> stack;
    if (!push(stack, fd, root, false, "")) return;
    while (!stack.empty()) {
      if (spec_.cancel && spec_.cancel->load()) {
        for (auto& f : stack) ::closedir(f.dir);
        return problem(root, "cancelled; entries added since the backup may remain");
      }
      Frame& f = stack.back();
      errno = 0;
      dirent* e = ::readdir(f.dir);
      if (!e) {
        if (errno != 0) problem(f.path, "cannot list the directory: " + err());
        pop(stack);
        continue;
      }
      if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
      std::string name = e->d_name;
      std::string path = f.path + "/" + name;
      if (!f.purge && spec_.keep->count(path)) {
        descend_if_dir(stack, name, path, false);
        continue;
      }
      // Not in the snapshot. Entries the component excludes were never part of it.
      if (!f.purge && repo::restore_glob_matches(spec_.excludes, path)) continue;
      int dfd = ::dirfd(f.dir);
      if (::unlinkat(dfd, name.c_str(), 0) == 0) {
        ++res_.removed;
        continue;
      }
      int ue = errno;
      if (ue == EISDIR || ue == EPERM) {
        // A directory (Linux says EISDIR; some file systems EPERM): empty it first.
        if (descend_if_dir(stack, name, path, true)) continue;
      }
      if (ue != ENOENT) problem(path, std::string("cannot remove: ") + std::strerror(ue));
    }
  }

  // Opens name in the top frame as a directory, never through a link.
  bool descend_if_dir(std::vector<Frame>& stack, const std::string& name, const std::string& path, bool purge) {
    struct stat st {};
    int pfd = ::dirfd(stack.back().dir);
    if (::fstatat(pfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) return false;
    int fd = ::openat(pfd, name.c_str(), kDirFlags);
    if (fd < 0) {
      problem(path, "cannot open the directory: " + err());
      return true;
    }
    return push(stack, fd, path, purge, name) || true;
  }

  bool push(std::vector<Frame>& stack, int fd, const std::string& path, bool purge, const std::string& name) {
    if (stack.size() >= kMirrorMaxDepth) {
      ::close(fd);
      problem(path, "nested deeper than " + std::to_string(kMirrorMaxDepth) + " levels; nothing below was removed");
      return false;
    }
    DIR* d = ::fdopendir(fd);
    if (!d) {
      ::close(fd);
      problem(path, "cannot list the directory: " + err());
      return false;
    }
    stack.push_back({d, path, purge, name});
    return true;
  }

  void pop(std::vector<Frame>& stack) {
    Frame f = std::move(stack.back());
    stack.pop_back();
    ::closedir(f.dir);
    if (!f.purge || stack.empty()) return;
    if (::unlinkat(::dirfd(stack.back().dir), f.name.c_str(), AT_REMOVEDIR) == 0)
      ++res_.removed;
    else if (errno != ENOENT)
      problem(f.path, "cannot remove the directory: " + err());
  }

  void problem(const std::string& path, const std::string& reason) { res_.problems.push_back({path, reason}); }
  static std::string err() { return std::strerror(errno); }

  const MirrorSpec& spec_;
  MirrorResult& res_;
};

}  // namespace

MirrorResult mirror_prune(const MirrorSpec& spec) {
  MirrorResult res;
  if (!spec.keep) return res;
  std::string target = spec.target == "/" ? "" : spec.target;
  Pruner p(spec, res);
  for (const auto& r : spec.roots)
    if (!r.empty() && r[0] == '/' && r != "/") p.root(target, r);
  return res;
}

}  // namespace cairn::agent::files
