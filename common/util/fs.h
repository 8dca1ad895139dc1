#pragma once
// File helpers with RAII descriptors and errors that name the path.
#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/encoding.h"

namespace cairn {

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(o.release()) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = o.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() { reset(); }
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }
  void reset();

 private:
  int fd_ = -1;
};

// Reads a whole local file (configs, keys, journals). Files are checked
// against max_bytes before anything is allocated for them, and while reading
// (a device or FIFO has no size): a file over it is refused, naming the limit.
constexpr size_t kMaxLocalFile = 64u << 20;
constexpr size_t kMaxSecretFile = 64u << 10;
Bytes read_file(const std::string& path, size_t max_bytes = kMaxLocalFile);
// Reads a secret (passphrase or key file). Refuses files readable by group or
// others; strips one trailing newline.
std::string read_secret_file(const std::string& path);
// Writes via a temporary file in the same directory, fsyncs, renames, fsyncs the dir.
void write_file_atomic(const std::string& path, std::span<const uint8_t> data, int mode = 0644);
void write_all(int fd, const uint8_t* p, size_t n, std::string_view path);
void pread_all(int fd, uint8_t* p, size_t n, uint64_t off, std::string_view path);
void fsync_dir(const std::string& dir);
void mkdir_p(const std::string& dir, int mode = 0755);
std::string hostname();
// True for "/a/b": absolute and without a ".." component (what a configured
// path must be before a driver builds names from it).
bool is_clean_absolute_path(std::string_view p);
// True when p is dir or lies below it, as written ("/a/b" is within "/a"
// and "/", not within "/a/bc"): no link is followed, no ".." resolved.
bool path_within(std::string_view p, std::string_view dir);
// The current UTC time as "20261123T140500Z", for names of things kept aside
// (an old data directory, a replaced file).
std::string utc_stamp(std::time_t t = std::time(nullptr));
std::string username();
// Copies a regular file keeping its holes, mode, owner (when permitted) and
// modification time; dst must not exist. Copies at most the size src had
// when opened (a file appended to meanwhile). Returns the bytes of data copied.
uint64_t copy_file_sparse(const std::string& src, const std::string& dst);
// Removes a tree (a staging or restore directory); never follows links. No throw.
void remove_tree(const std::string& dir) noexcept;
// Removes the directories (never links) named <prefix>* directly in dir: what
// a crashed backup or restore left (one task runs per component at a time,
// so any other one is stale). Returns their paths; a dir that cannot be
// listed gives none.
std::vector<std::string> remove_leftovers(const std::string& dir, const std::string& prefix);
// Start time of a process in clock ticks since boot (from /proc), or 0 when it is gone.
unsigned long long process_start_ticks(int pid);

}  // namespace cairn
