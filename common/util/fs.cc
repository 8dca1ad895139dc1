#include "common/util/fs.h"

#include <fcntl.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

#include "common/util/error.h"

namespace cairn {

void Fd::reset() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

Bytes read_file(const std::string& path, size_t max_bytes) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) throw_errno("cannot open", path, errno);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) throw_errno("cannot stat", path, errno);
  auto too_big = [&] {
    return Error(Errc::invalid_input, "file '" + path + "' is larger than " + std::to_string(max_bytes) +
                                          " bytes, more than such a file can be; check that the path is right");
  };
  if (st.st_size > 0 && uint64_t(st.st_size) > max_bytes) throw too_big();
  Bytes out;
  out.reserve(size_t(st.st_size));
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot read", path, errno);
    }
    if (n == 0) break;
    if (out.size() + size_t(n) > max_bytes) throw too_big();
    out.insert(out.end(), buf, buf + n);
  }
  return out;
}

std::string read_secret_file(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno("cannot read secret file", path, errno);
  if (st.st_mode & 077)
    throw Error(
        Errc::invalid_input, "secret file '" + path + "' is readable by group or others (mode " +
                                 [&] {
                                   char b[8];
                                   snprintf(b, sizeof b, "%04o", st.st_mode & 07777);
                                   return std::string(b);
                                 }() +
                                 "); run 'chmod 600 " + path + "'");
  Bytes b = read_file(path, kMaxSecretFile);
  std::string s(b.begin(), b.end());
  if (!s.empty() && s.back() == '\n') s.pop_back();
  if (!s.empty() && s.back() == '\r') s.pop_back();
  if (s.empty()) throw Error(Errc::invalid_input, "secret file '" + path + "' is empty");
  return s;
}

void write_all(int fd, const uint8_t* p, size_t n, std::string_view path) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot write", path, errno);
    }
    p += w;
    n -= size_t(w);
  }
}

void pread_all(int fd, uint8_t* p, size_t n, uint64_t off, std::string_view path) {
  while (n > 0) {
    ssize_t r = ::pread(fd, p, n, off_t(off));
    if (r < 0) {
      if (errno == EINTR) continue;
      throw_errno("cannot read", path, errno);
    }
    if (r == 0) throw Error(Errc::corrupt, "unexpected end of file in '" + std::string(path) + "'");
    p += r;
    n -= size_t(r);
    off += uint64_t(r);
  }
}

void fsync_dir(const std::string& dir) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno("cannot open directory", dir, errno);
  if (::fsync(fd.get()) != 0 && errno != EINVAL) throw_errno("cannot sync directory", dir, errno);
}

void write_file_atomic(const std::string& path, std::span<const uint8_t> data, int mode) {
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash);
  std::string tmp = path + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(reinterpret_cast<uintptr_t>(&data) & 0xffffff);
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (!fd) throw_errno("cannot create", tmp, errno);
  try {
    write_all(fd.get(), data.data(), data.size(), tmp);
    if (::fsync(fd.get()) != 0) throw_errno("cannot sync", tmp, errno);
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw_errno("cannot rename into", path, errno);
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(dir);
}

void mkdir_p(const std::string& dir, int mode) {
  if (dir.empty()) return;
  std::string cur;
  size_t i = 0;
  while (i <= dir.size()) {
    size_t j = dir.find('/', i);
    if (j == std::string::npos) j = dir.size();
    cur = dir.substr(0, j);
    if (!cur.empty() && ::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) throw_errno("cannot create directory", cur, errno);
    i = j + 1;
  }
}

bool is_clean_absolute_path(std::string_view p) {
  if (p.empty() || p[0] != '/') return false;
  size_t i = 0;
  while (i < p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string_view::npos) j = p.size();
    if (j - i == 2 && p.compare(i, 2, "..") == 0) return false;
    i = j + 1;
  }
  return true;
}

bool path_within(std::string_view p, std::string_view dir) {
  return p == dir || (p.size() > dir.size() && p.compare(0, dir.size(), dir) == 0 && (dir == "/" || p[dir.size()] == '/'));
}

std::string utc_stamp(std::time_t t) {
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

std::string hostname() {
  char buf[256] = {0};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

std::string username() {
  struct passwd pwd {
  }, *pw = nullptr;
  char buf[4096];
  getpwuid_r(getuid(), &pwd, buf, sizeof buf, &pw);  // reentrant: the lock refresher runs beside the archiver
  return pw ? pw->pw_name : std::to_string(getuid());
}

unsigned long long process_start_ticks(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  if (!f) return 0;
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto rp = s.rfind(')');
  if (rp == std::string::npos) return 0;
  std::istringstream is(s.substr(rp + 2));
  std::string field;
  // fields after ')' start at field 3 (state); starttime is field 22
  for (int i = 3; i < 22; ++i) is >> field;
  unsigned long long v = 0;
  is >> v;
  return v;
}

void remove_tree(const std::string& dir) noexcept {
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

std::vector<std::string> remove_leftovers(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  std::error_code ec;
  std::filesystem::directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    std::error_code ec2;
    if (name.rfind(prefix, 0) == 0 && !it->is_symlink(ec2) && it->is_directory(ec2)) out.push_back(it->path().string());
  }
  for (const auto& p : out) remove_tree(p);  // after listing: never while the directory is read
  return out;
}

uint64_t copy_file_sparse(const std::string& src, const std::string& dst) {
  Fd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!in) throw_errno("open", src, errno);
  struct stat st {};
  if (::fstat(in.get(), &st) != 0) throw_errno("stat", src, errno);
  if (!S_ISREG(st.st_mode)) throw Error(Errc::invalid_input, "'" + src + "' is not a regular file");
  Fd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, st.st_mode & 07777));
  if (!out) throw_errno("create", dst, errno);
  const off_t size = st.st_size;
  std::vector<uint8_t> buf(1 << 20);
  uint64_t copied = 0;
  off_t off = 0;
  while (off < size) {
    off_t data = ::lseek(in.get(), off, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole remains
      data = off;                 // no SEEK_DATA here: copy everything
    }
    if (data >= size) break;
    off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
    if (hole < 0 || hole > size) hole = size;
    for (off_t p = data; p < hole;) {
      size_t want = static_cast<size_t>(std::min<off_t>(hole - p, static_cast<off_t>(buf.size())));
      ssize_t r = ::pread(in.get(), buf.data(), want, p);
      if (r < 0) {
        if (errno == EINTR) continue;
        throw_errno("read", src, errno);
      }
      if (r == 0) {
        hole = p;  // the file shrank: it ends here
        break;
      }
      for (ssize_t w = 0; w < r;) {
        ssize_t n = ::pwrite(out.get(), buf.data() + w, static_cast<size_t>(r - w), p + w);
        if (n < 0) {
          if (errno == EINTR) continue;
          throw_errno("write", dst, errno);
        }
        w += n;
      }
      p += r;
      copied += static_cast<uint64_t>(r);
    }
    off = hole;
  }
  if (::ftruncate(out.get(), size) != 0) throw_errno("set the size of", dst, errno);
  if (::geteuid() == 0) (void)::fchown(out.get(), st.st_uid, st.st_gid);
  (void)::fchmod(out.get(), st.st_mode & 07777);
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  (void)::futimens(out.get(), times);
  return copied;
}

}  // namespace cairn
