#pragma once
// A restore drill's sandbox (docs/drills.md § Safety): a directory of its own
// under the [drill] root (ROOT/drill-<task>, 0700, marked as a drill's), a
// cgroup bounding its processes' memory and CPU, a network namespace with
// only loopback, processes started in it confined (as a user, the host
// read-only, or a directory of the sandbox as their whole filesystem), a
// deadline, a disk budget checked before anything is written, and a teardown
// that kills every process and removes the directory and the cgroup.
// Nothing here knows a driver: a driver's drill (agent/driver.h,
// DriverDrill) runs its servers and tools through it.
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "agent/config.h"

namespace cairn::agent {

// How a process of the sandbox is confined beyond its cgroup and network
// namespace. A process confined to a directory of the sandbox as its whole
// filesystem (an HAProxy drill: the restored files at the paths its
// configuration names): a mount namespace of its own, the host's libraries
// and the server's binary mounted read-only at their paths, the root pivoted
// there and the old one detached, then only the capabilities a server needs
// to bind, drop to its user and chroot. Everything it writes (pid file, Unix
// sockets) lands in the sandbox; nothing else of the host is reachable.
struct Confinement {
  // A server that runs on the host's files (etcd, ZooKeeper, Prometheus,
  // Kafka): the host read-only, the drill root replaced by an empty one
  // holding only this sandbox, writable; root, binds and keep_caps unused.
  bool host_readonly = false;
  std::string root;                                        // the new root (a sandbox directory, prepared)
  std::vector<std::pair<std::string, std::string>> binds;  // host path -> mount point inside root (made already)
  std::vector<int> keep_caps;                              // the capability bounding set left
  // Run as this user (uid != 0), with no capability left: a server that
  // refuses to run as root (PostgreSQL).
  uid_t uid = 0;
  gid_t gid = 0;
};

// One drill's sandbox: its directory, its cgroup and the processes started
// in it. The destructor kills them and removes everything.
class Sandbox {
 public:
  // Makes ROOT/drill-<task_id> (0700) with its marker; the root exists
  // (run_drill made it to measure its free space). The same task again (a
  // plan delivered twice) replaces its own sandbox only; a directory of that
  // name no drill made is left alone (throws cairn::Error).
  Sandbox(const DrillDecl& d, const std::string& task_id);
  ~Sandbox() { teardown(); }
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  const std::string& dir() const { return dir_; }
  const DrillDecl& decl() const { return decl_; }

  // The memory and CPU bound (a cgroup); the reason it cannot be set ("" when
  // set or when the operator declared the sandbox unbounded).
  std::string bound();

  // Starts a long-running process of the sandbox (a server), in the calling
  // thread's network namespace, in the sandbox's cgroup, with its output in
  // log and a clean environment; it dies with the calling thread.
  pid_t spawn(const std::vector<std::string>& argv, const std::string& log, std::vector<std::string> extra_env = {},
              const std::string& err_log = {}, const Confinement* confine = nullptr);

  // Runs a short-lived tool of the sandbox the way spawn starts a server (so
  // it too dies with the drill and counts against its cgroup) and waits for
  // it: whether it exited 0, its stdout, and otherwise why (the exit status
  // and the last line of stderr, or of stdout when stderr is empty). Killed
  // at the timeout or when *cancel becomes true.
  struct Ran {
    bool ok = false;
    std::string out, why;
    std::string err;  // all of stderr, when it did not exit 0
  };
  Ran run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout, const std::atomic<bool>* cancel,
          std::vector<std::string> env = {}, const Confinement* confine = nullptr);

  // Whether the process still runs; its exit status otherwise.
  bool running(pid_t pid, int* status);

  // How many processes the sandbox's memory limit has killed (0 when its
  // cgroup says nothing: none made, or a kernel that does not count them).
  uint64_t oom_kills() const;

  // Starts a server that runs on the host's files (etcd, ZooKeeper,
  // Prometheus, Kafka) as [drill] user, never root: the host read-only to
  // it, and the sandbox, handed over to that user, its only writable tree.
  pid_t spawn_server(const std::vector<std::string>& argv, const std::string& log);

  // A directory of the sandbox for a server's temporary files (the host's
  // /tmp is read-only to it).
  std::string tmp_dir();

  // The sandbox's files to the server's user: all but the marker and the
  // record of PIDs (the agent's own: a server must not name what the
  // agent's clean-up kills). The sandbox's directory stays root's, 0711.
  void hand_over(uid_t uid, gid_t gid);

  // Kills every process started in it and removes its cgroup.
  void kill_all();
  // kill_all, then removes the sandbox's directory.
  void teardown();

 private:
  const DrillDecl& decl_;
  std::string dir_, id_;
  std::vector<std::string> cgroups_;
  std::vector<pid_t> pids_;
  int tools_ = 0;
};

// Runs fn on a thread of its own whose network namespace is new, with only
// loopback up: every process fn starts inherits it, and a socket fn opens
// lives in it. Throws what fn threw; never runs fn on the host's network.
void in_own_network(const std::function<void()>& fn);

// Why a drill needing `need` bytes in its sandbox may not run: over the
// [drill] disk_budget (when one is set), or over `free_bytes`, the free space
// under the root; "" when it fits. Checked before anything is restored.
std::string disk_refusal(const DrillDecl& d, uint64_t need, uint64_t free_bytes);
// The free space under the drill root (made 0700 when missing); 0 when it
// cannot be read.
uint64_t drill_root_free_bytes(const DrillDecl& d);

// A drill's deadline: from its construction, a watcher sets stop() once
// `limit` passed (passed() then true) or once *cancel becomes true; every
// wait of the drill watches stop(). The destructor ends the watcher.
class Deadline {
 public:
  Deadline(std::chrono::milliseconds limit, const std::atomic<bool>* cancel);
  ~Deadline();
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  const std::atomic<bool>& stop() const { return stop_; }
  bool passed() const { return passed_.load(); }
  bool stopped() const { return stop_.load(); }

 private:
  std::atomic<bool> stop_{false}, passed_{false}, done_{false};
  std::thread watcher_;
};

// Removes every sandbox a killed agent left under the root, first killing a
// process it recorded when that PID still runs the recorded process (same
// start time), and this root's leftover cgroups. What it removed, for the
// log. Called at the agent's start.
std::vector<std::string> clean_drill_root(const DrillDecl& d);

// Helpers of the drill code (a named namespace, not an anonymous one: the
// sanitizer build is a unity build, where every file's anonymous namespace
// is one).
namespace drill_internal {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t);
// Writes text to an existing file (a cgroup's); false when it could not.
bool write_text(const std::string& path, const std::string& text);
std::string read_text(const std::string& path);
// Gives a restored tree (not following links) to the server's user.
// The first path it could not give and why ("" when none); it goes on past
// one.
std::string give_tree(const std::string& path, uid_t uid, gid_t gid);
}  // namespace drill_internal

}  // namespace cairn::agent
