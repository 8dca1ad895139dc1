// What the drivers' drills share (drill_support.h).
#include "agent/drill_support.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <fstream>
#include <thread>

#include "common/repo/snapshot.h"
#include "common/util/error.h"

namespace cairn::agent {

namespace v1 = cairn::v1;
namespace fs = std::filesystem;

// Twice the snapshots' size + 128 MiB: a server unpacks the snapshot into a
// data directory beside it (etcd) or writes a snapshot of its own at start
// (ZooKeeper).
uint64_t DriverDrill::disk_needed(const std::vector<repo::Snapshot>& snaps) const {
  uint64_t size = 0;
  for (const auto& s : snaps) size += s.summary.value("bytes_total", uint64_t(0));
  return 2 * size + (128ull << 20);
}

namespace drill_internal {

// The sandbox goes with the drill, so a failed server's log is copied
// beside it first: ROOT/failed-<what>-<sandbox>.log, the newest
// kKeptFailedLogs kept.
constexpr size_t kKeptFailedLogs = 8;

std::string drill_exit_account(const DrillDecl& d, const Sandbox& box, int status, const std::string& log, const std::string& what) {
  std::string how;
  if (WIFEXITED(status)) {
    how = "exited with status " + std::to_string(WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = sigabbrev_np(sig);
    how = "was killed by signal " + std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
    if (sig == SIGKILL && box.oom_kills() > 0)
      how += ": the sandbox's memory limit killed it (" +
             (d.memory_max ? std::to_string(*d.memory_max >> 20) + " MiB" : std::string("none set")) + "); raise [drill] memory_max";
  } else {
    how = "stopped (wait status " + std::to_string(status) + ")";
  }
  std::error_code ec;
  std::string tail;
  {  // the last 1,500 bytes only: a server that logged in a loop may have written gigabytes
    constexpr uint64_t kTail = 1500;
    const uint64_t n = fs::file_size(log, ec);
    std::ifstream in(log, std::ios::binary);
    if (!ec && in) {
      if (n > kTail) in.seekg(std::streamoff(n - kTail));
      tail.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (n > kTail) tail = "..." + tail;
    }
    ec.clear();
  }
  std::string kept;
  std::string lower = what;
  for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
  const std::string name = "failed-" + lower + "-" + fs::path(box.dir()).filename().string() + ".log";
  const std::string dest = d.root + "/" + name;
  // At most its last 64 MiB (a server that logs in a loop), 0600 like the sandbox's files.
  constexpr uint64_t kKeptLogMax = 64ull << 20;
  const uint64_t size = fs::file_size(log, ec);
  bool copied = false;
  if (!ec) {
    std::ifstream in(log, std::ios::binary);
    if (size > kKeptLogMax) in.seekg(std::streamoff(size - kKeptLogMax));
    int fd = ::open(dest.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd >= 0) {
      char buf[1 << 16];
      copied = true;
      while (in && copied) {
        in.read(buf, sizeof buf);
        if (in.gcount() > 0) copied = ::write(fd, buf, size_t(in.gcount())) == ssize_t(in.gcount());
      }
      copied = ::close(fd) == 0 && copied;
    }
  }
  if (copied) {
    kept = dest;
    std::vector<std::pair<fs::file_time_type, fs::path>> logs;
    for (const auto& e : fs::directory_iterator(d.root, ec)) {
      const std::string n = e.path().filename().string();
      if (n.starts_with("failed-") && n.ends_with(".log")) logs.emplace_back(e.last_write_time(ec), e.path());
    }
    std::sort(logs.begin(), logs.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
    for (size_t i = kKeptFailedLogs; i < logs.size(); ++i) fs::remove(logs[i].second, ec);
  }
  return how + " while starting on the restored data" + (kept.empty() ? "" : " (its whole log: '" + kept + "')") +
         "; its log ends: " + tail;
}

// Waits for a server the drill started: probe() returns "" once it answers
// as it should, else what it saw. Records the start phase and the check
// `check` ("found": `ready_word`, or what the last probe saw), and a reason
// with the tail of its log when it exited first. True when it answers.
bool wait_started(const DrillDecl& d, Sandbox& box, pid_t server, const std::string& log, const std::string& what, const std::string& check,
                  const std::string& ready_word, const std::atomic<bool>* cancel, DrillReport& rep, Clock::time_point started,
                  const std::function<std::string()>& probe) {
  auto until = Clock::now() + std::chrono::seconds(d.start_timeout_seconds);
  std::string last = "no answer";
  bool ready = false;
  while (Clock::now() < until && !(cancel && cancel->load())) {
    int status = 0;
    if (!box.running(server, &status)) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, what + " " + drill_exit_account(d, box, status, log, what));
      rep.check(what + " starts on the restored data", "running", "exited", false);
      return false;
    }
    try {
      last = probe();
    } catch (const Error& e) {
      last = e.what();
    }
    if (last.empty()) {
      ready = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  rep.phases["start"] = seconds_since(started);
  rep.check(check, ready_word, ready ? ready_word : "not " + ready_word + ": " + last, ready);
  return ready;
}

// A path inside the sandbox's root that the drill mounts a host path on (or
// makes a directory of): every component below root must be a directory the
// restore made or none at all (no symlink out of the sandbox), and a mount
// point must not hide restored files. "" when made; else why not.
std::string sandbox_mount_point(const std::string& root, const std::string& abs, bool dir, bool empty_dir_only) {
  std::string at = root;
  size_t i = 1;
  while (i <= abs.size()) {
    size_t j = abs.find('/', i);
    if (j == std::string::npos) j = abs.size();
    const std::string part = abs.substr(i, j - i);
    i = j + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") return "'" + abs + "' climbs out of the sandbox";
    at += "/" + part;
    const bool last = i > abs.size();
    struct stat st {};
    if (::lstat(at.c_str(), &st) != 0) {
      if (errno != ENOENT) return "cannot read '" + at + "': " + std::strerror(errno);
      if (!last || dir) {
        if (::mkdir(at.c_str(), 0755) != 0) return "cannot make '" + at + "': " + std::strerror(errno);
      } else {
        int fd = ::open(at.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd < 0) return "cannot make '" + at + "': " + std::strerror(errno);
        ::close(fd);
      }
      continue;
    }
    if (S_ISLNK(st.st_mode)) return "the snapshot holds a symbolic link at '" + abs.substr(0, j) + "', where the sandbox needs a directory";
    if (!last || dir) {
      if (!S_ISDIR(st.st_mode)) return "the snapshot holds a file at '" + abs.substr(0, j) + "', where the sandbox needs a directory";
      if (last && empty_dir_only && !fs::is_empty(at))
        return "the snapshot holds files under '" + abs + "', which the sandbox mounts from the host";
    } else if (!S_ISREG(st.st_mode) || st.st_size != 0) {
      return "the snapshot holds '" + abs + "', which the sandbox mounts from the host";
    }
  }
  return {};
}

std::string parent_of(const std::string& p) {
  auto k = p.rfind('/');
  return k == 0 || k == std::string::npos ? "/" : p.substr(0, k);
}

}  // namespace drill_internal

}  // namespace cairn::agent
