// Private, single-holder data directory (see data_dir.h).
#include "controller/data_dir.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include "common/util/error.h"

namespace cairn::controller {
namespace {

std::string os_error() { return std::strerror(errno); }

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// "pid 123 on host h since 2026-..." from the lock file's lines, or a
// neutral phrase when it cannot be read (the holder writes it after locking).
std::string describe_holder(int fd) {
  char buf[512];
  ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string text(buf, n > 0 ? size_t(n) : 0);
  std::string pid, host, since;
  size_t at = 0;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    std::string line = text.substr(at, nl == std::string::npos ? std::string::npos : nl - at);
    at = nl == std::string::npos ? text.size() : nl + 1;
    auto take = [&](const char* key, std::string& out) {
      std::string prefix = std::string(key) + " ";
      if (line.rfind(prefix, 0) == 0) out = line.substr(prefix.size(), 128);
    };
    take("pid", pid);
    take("host", host);
    take("since", since);
  }
  if (pid.empty()) return "another process (its details are not written yet)";
  return "cairn-controller pid " + pid + " on host " + (host.empty() ? "?" : host) + " since " + (since.empty() ? "?" : since);
}

}  // namespace

void tighten_dir(const std::string& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) throw Error(Errc::io, "cannot read the mode of data directory '" + dir + "': " + os_error());
  if ((st.st_mode & 077) == 0) return;
  if (::chmod(dir.c_str(), st.st_mode & 0700) != 0)
    throw Error(Errc::io, fmt::format("data directory '{}' is accessible to group or others (mode {:04o}) and cannot be "
                                      "made private: {}; run 'chmod 0700 {}' as its owner, then start again",
                                      dir, unsigned(st.st_mode & 07777), os_error(), dir));
  spdlog::warn("data directory '{}' was accessible to group or others (mode {:04o}); made it private (mode {:04o})", dir,
               unsigned(st.st_mode & 07777), unsigned(st.st_mode & 0700));
}

DataDir DataDir::take(const std::string& path) {
  mkdir_p(path, 0700);
  tighten_dir(path);
  std::string lock_path = path + "/" + kDataDirLockFile;
  Fd fd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) throw Error(Errc::io, "cannot open lock file '" + lock_path + "': " + os_error());
  if (::flock(fd.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) throw Error(Errc::io, "cannot lock data directory '" + path + "' ('" + lock_path + "'): " + os_error());
    throw Error(Errc::locked, "data directory '" + path + "' is in use by " + describe_holder(fd.get()) +
                                  "; stop it first (or give this controller another 'controller.data_dir')");
  }
  std::string holder = "pid " + std::to_string(::getpid()) + "\nhost " + hostname() + "\nsince " + utc_now() + "\n";
  if (::ftruncate(fd.get(), 0) != 0) throw Error(Errc::io, "cannot write lock file '" + lock_path + "': " + os_error());
  write_all(fd.get(), reinterpret_cast<const uint8_t*>(holder.data()), holder.size(), lock_path);
  return DataDir(path, std::move(fd));
}

}  // namespace cairn::controller
