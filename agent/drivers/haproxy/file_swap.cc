#include "agent/drivers/haproxy/file_swap.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>

#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::haproxy {

namespace {

std::string dir_of(const std::string& p) {
  size_t s = p.rfind('/');
  return s == 0 ? "/" : p.substr(0, s);
}

std::string tmp_name(const std::string& dst) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return dir_of(dst) + "/." + dst.substr(dst.rfind('/') + 1) + ".cairn-new-" + std::to_string(rng() % 1000000000);
}

bool exists(const std::string& p, struct stat* st = nullptr) {
  struct stat s {};
  bool ok = ::lstat(p.c_str(), &s) == 0;
  if (st) *st = s;
  return ok;
}

std::string read_all(const std::string& p) {
  Bytes b = read_file(p, 256u << 20);
  return std::string(b.begin(), b.end());
}

std::string link_target(const std::string& p) {
  std::string buf(4096, '\0');
  ssize_t n = ::readlink(p.c_str(), buf.data(), buf.size());
  if (n < 0) throw_errno("readlink", p, errno);
  buf.resize(static_cast<size_t>(n));
  return buf;
}

// Writes data to a new file `tmp`, with mode/owner/times, fsynced.
void write_new(const std::string& tmp, const std::string& data, mode_t mode, uid_t uid, gid_t gid, const struct timespec* times) {
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd) throw_errno("create", tmp, errno);
  try {
    write_all(fd.get(), reinterpret_cast<const uint8_t*>(data.data()), data.size(), tmp);
    if (::fchown(fd.get(), uid, gid) != 0 && errno != EPERM) throw_errno("chown", tmp, errno);
    if (::fchmod(fd.get(), mode & 07777) != 0) throw_errno("chmod", tmp, errno);
    if (times && ::futimens(fd.get(), times) != 0) throw_errno("set the times of", tmp, errno);
    if (::fsync(fd.get()) != 0) throw_errno("fsync", tmp, errno);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace

std::string FileSwap::aside_name(const std::string& dst) const {
  std::string base = dst + ".cairn-old-" + stamp_;
  std::string n = base;
  for (int i = 1; exists(n); ++i) n = base + "-" + std::to_string(i);
  return n;
}

void FileSwap::commit_new(const std::string& tmp, const std::string& dst) {
  Step s{dst, ""};
  if (exists(dst)) s.old = aside_name(dst);
  if (before_) {
    try {
      before_(dst, s.old);
    } catch (...) {
      ::unlink(tmp.c_str());
      throw;
    }
  }
  if (!s.old.empty()) {
    if (::link(dst.c_str(), s.old.c_str()) != 0) {
      int e = errno;
      ::unlink(tmp.c_str());
      throw_errno("keep a copy of", dst, e);
    }
  }
  if (::rename(tmp.c_str(), dst.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    if (!s.old.empty()) ::unlink(s.old.c_str());
    throw_errno("rename into place", dst, e);
  }
  fsync_dir(dir_of(dst));
  steps_.push_back(s);
  changed_.push_back(dst);
  if (!s.old.empty()) kept_.push_back(s.old);
}

bool FileSwap::install(const std::string& src, const std::string& dst) {
  struct stat ss {
  }, ds{};
  if (::lstat(src.c_str(), &ss) != 0) throw_errno("stat", src, errno);
  bool had = exists(dst, &ds);
  mkdir_p(dir_of(dst));
  std::string tmp = tmp_name(dst);
  if (S_ISLNK(ss.st_mode)) {
    std::string target = link_target(src);
    if (had && S_ISLNK(ds.st_mode) && link_target(dst) == target) return false;
    if (::symlink(target.c_str(), tmp.c_str()) != 0) throw_errno("create the link", tmp, errno);
    commit_new(tmp, dst);
    return true;
  }
  if (!S_ISREG(ss.st_mode)) throw Error(Errc::invalid_input, "'" + dst + "' is neither a regular file nor a link in the snapshot");
  std::string data = read_all(src);
  if (had && S_ISREG(ds.st_mode) && (ds.st_mode & 07777) == (ss.st_mode & 07777) && ds.st_uid == ss.st_uid && ds.st_gid == ss.st_gid &&
      static_cast<size_t>(ds.st_size) == data.size() && read_all(dst) == data)
    return false;
  struct timespec times[2] = {ss.st_atim, ss.st_mtim};
  write_new(tmp, data, ss.st_mode, ss.st_uid, ss.st_gid, times);
  commit_new(tmp, dst);
  return true;
}

bool FileSwap::install_bytes(const std::string& data, const std::string& dst) {
  struct stat ds {};
  bool had = exists(dst, &ds) && S_ISREG(ds.st_mode);
  if (had && static_cast<size_t>(ds.st_size) == data.size() && read_all(dst) == data) return false;
  mkdir_p(dir_of(dst));
  std::string tmp = tmp_name(dst);
  write_new(tmp, data, had ? ds.st_mode : 0644, had ? ds.st_uid : ::geteuid(), had ? ds.st_gid : ::getegid(), nullptr);
  commit_new(tmp, dst);
  return true;
}

void FileSwap::set_aside(const std::string& dst) {
  Step s{dst, aside_name(dst), true};
  if (before_) before_(dst, s.old);
  if (::rename(dst.c_str(), s.old.c_str()) != 0) throw_errno("move aside", dst, errno);
  fsync_dir(dir_of(dst));
  steps_.push_back(s);
  changed_.push_back(dst);
  kept_.push_back(s.old);
}

std::vector<std::string> FileSwap::rollback() {
  std::vector<std::string> problems;
  for (auto it = steps_.rbegin(); it != steps_.rend(); ++it) {
    int rc = it->old.empty() ? ::unlink(it->dst.c_str()) : ::rename(it->old.c_str(), it->dst.c_str());
    if (rc != 0)
      problems.push_back("'" + it->dst + "' could not be put back" + (it->old.empty() ? "" : " from '" + it->old + "'") + ": " +
                         std::strerror(errno));
  }
  steps_.clear();
  changed_.clear();
  kept_.clear();
  return problems;
}

}  // namespace cairn::agent::haproxy
