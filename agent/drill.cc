// Restore drills: the sandbox, its network namespace and cgroup, and each
// drilled driver's start and checks (docs/drills.md).
#include "agent/drill.h"
#include "agent/drill_paths.h"

#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <grp.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>

#include "agent/drivers/etcd/etcd_driver.h"
#include "agent/drivers/etcd/snapshot_stream.h"
#include "agent/drivers/haproxy/cfg_parser.h"
#include "agent/drivers/haproxy/haproxy_driver.h"
#include "agent/drivers/haproxy/runtime.h"
#include "agent/drivers/kafka/broker.h"
#include "agent/drivers/kafka/log_dir.h"
#include "agent/drivers/postgresql/recovery.h"
#include "agent/drivers/postgresql/wal.h"
#include "agent/drivers/zookeeper/four_letter.h"
#include "agent/drivers/zookeeper/layout.h"
#include "agent/drivers/zookeeper/staging.h"
#include "agent/platform/http.h"
#include "agent/platform/process.h"
#include "agent/platform/socket_client.h"
#include "common/audit/kafka_conf.h"
#include "common/plan/recovery_target.h"
#include "common/repo/memory.h"
#include "common/repo/repository.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/repo/walk.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/encoding.h"

namespace cairn::agent {

namespace v1 = cairn::v1;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A named namespace, not an anonymous one: the sanitizer build is a unity
// build, where every file's anonymous namespace is one (haproxy's restore.cc
// has its own read_text and write_text).
namespace drill_internal {

constexpr const char* kSandboxPrefix = "drill-";
constexpr const char* kCgroupPrefix = "cairn-drill-";

// This drill root's cgroups: cairn-drill-<16 hex of the root's FNV-1a>-<task>.
// Cgroups are host-wide; another agent on the host (another drill root) has
// its own, and an agent's start-up cleanup removes only its own: it killed
// a neighbour's sandboxed server mid-drill before (SIGKILL at its start).
std::string drill_cgroup_prefix(const DrillDecl& d) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : d.root) h = (h ^ c) * 1099511628211ull;
  static const char* hex = "0123456789abcdef";
  std::string out = kCgroupPrefix;
  for (int i = 15; i >= 0; --i) out += hex[(h >> (4 * i)) & 0xf];
  return out + "-";
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

bool write_text(const std::string& path, const std::string& text) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return false;
  bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size());
  ::close(fd);
  return ok;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The file each sandbox holds from its first moment, naming it: what the
// agent's clean-up requires before it removes a directory of the root (the
// root may hold other things; a snapshot's tree lands below the marker's).
constexpr const char* kSandboxMarker = ".cairn-drill-sandbox";

std::string marker_text(const std::string& task_id) { return "cairn drill sandbox " + task_id + "\n"; }

// Whether `dir` (ROOT/drill-<task>) is a sandbox this agent made: a
// directory (not a link) of the agent's user, mode 0700, holding the marker
// that names it. Anything else under the root is never removed.
bool made_by_a_drill(const std::string& dir, const std::string& task_id) {
  struct stat st {};
  // 0700 as made; 0711 once handed to a server's user (Sandbox::hand_over).
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != ::geteuid() ||
      ((st.st_mode & 07777) != 0700 && (st.st_mode & 07777) != 0711))
    return false;
  const std::string marker = dir + "/" + kSandboxMarker;
  if (::lstat(marker.c_str(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > 4096) return false;
  return read_text(marker) == marker_text(task_id);
}

// The cgroup hierarchies a sandbox's processes go into: each is a directory
// whose cgroup.procs takes a PID. v1 (a memory and a cpu hierarchy) or v2.
struct CgroupLayout {
  std::vector<std::string> parents;  // where cairn-drill-<id> directories are made
  bool v2 = false;
};

CgroupLayout cgroup_layout() {
  CgroupLayout l;
  if (fs::exists("/sys/fs/cgroup/memory/memory.limit_in_bytes")) {
    l.parents.push_back("/sys/fs/cgroup/memory");
    if (fs::exists("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")) l.parents.push_back("/sys/fs/cgroup/cpu");
  } else if (fs::exists("/sys/fs/cgroup/cgroup.controllers")) {
    l.parents.push_back("/sys/fs/cgroup");
    l.v2 = true;
  }
  return l;
}

// Kills every process of a leftover cgroup and removes it.
void remove_cgroup(const std::string& dir) {
  for (int round = 0; round < 50; ++round) {
    std::istringstream procs(read_text(dir + "/cgroup.procs"));
    bool any = false;
    for (int pid; procs >> pid;) {
      any = true;
      ::kill(pid, SIGKILL);
    }
    if (::rmdir(dir.c_str()) == 0 || errno == ENOENT) return;
    if (!any && errno != EBUSY) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  spdlog::warn("drill: cgroup '{}' could not be removed", dir);
}

// A process confined to a directory of the sandbox as its whole filesystem
// (an HAProxy drill: the restored files at the paths its configuration
// names): a mount namespace of its own, the host's libraries and the
// server's binary mounted read-only at their paths, the root pivoted there
// and the old one detached, then only the capabilities a server needs to
// bind, drop to its user and chroot. Everything it writes (pid file, Unix
// sockets) lands in the sandbox; nothing else of the host is reachable.
struct Confinement {
  // A server that runs on the host's files (etcd, ZooKeeper, Prometheus,
  // Kafka): the host read-only, the drill root replaced by an empty one
  // holding only this sandbox, writable; root, binds and keep_caps unused.
  bool host_readonly = false;
  std::string root;                                       // the new root (a sandbox directory, prepared)
  std::vector<std::pair<std::string, std::string>> binds;  // host path -> mount point inside root (made already)
  std::vector<int> keep_caps;                             // the capability bounding set left
  // Run as this user (uid != 0), with no capability left: a server that
  // refuses to run as root (PostgreSQL).
  uid_t uid = 0;
  gid_t gid = 0;
};

// Gives a restored tree (not following links) to the server's user.
// The first path it could not give and why ("" when none); it goes on past
// one.
std::string give_tree(const std::string& path, uid_t uid, gid_t gid) {
  std::string failed;
  auto give = [&](const std::string& p) {
    if (::lchown(p.c_str(), uid, gid) != 0 && failed.empty()) failed = "'" + p + "': " + std::strerror(errno);
  };
  give(path);
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return failed;  // a link is given, never followed
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(path, fs::directory_options::none, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    give(it->path().string());
  return failed;
}

// One drill's sandbox: its directory, its cgroup and the processes started
// in it. The destructor kills them and removes everything.
class Sandbox {
 public:
  // The root exists (run_drill made it to measure its free space).
  Sandbox(const DrillDecl& d, const std::string& task_id) : decl_(d) {
    ::chmod(d.root.c_str(), 0700);
    dir_ = d.root + "/" + kSandboxPrefix + task_id;
    // The same task again (a plan delivered twice): its own sandbox only.
    if (made_by_a_drill(dir_, task_id)) remove_tree(dir_);
    if (::mkdir(dir_.c_str(), 0700) != 0)
      throw_errno("creating the drill sandbox (a directory of that name that no drill made is left alone)", dir_, errno);
    ::chmod(dir_.c_str(), 0700);
    {
      const std::string text = marker_text(task_id);
      Fd m(::open((dir_ + "/" + kSandboxMarker).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (!m) throw_errno("marking the drill sandbox as a drill's", dir_, errno);
      write_all(m.get(), reinterpret_cast<const uint8_t*>(text.data()), text.size(), dir_ + "/" + kSandboxMarker);
    }
    id_ = task_id;
  }
  ~Sandbox() { teardown(); }
  Sandbox(const Sandbox&) = delete;
  Sandbox& operator=(const Sandbox&) = delete;

  const std::string& dir() const { return dir_; }

  // The memory and CPU bound; the reason it cannot be set ("" when set or
  // when the operator declared the sandbox unbounded).
  std::string bound() {
    if (!decl_.memory_max) return {};
    CgroupLayout l = cgroup_layout();
    if (l.parents.empty()) return "this host has no cgroup hierarchy with a memory controller";
    for (const auto& parent : l.parents) {
      std::string dir = parent + "/" + drill_cgroup_prefix(decl_) + id_;
      if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
        return "cannot make cgroup '" + dir + "': " + std::strerror(errno);
      cgroups_.push_back(dir);
      bool ok = true;
      if (l.v2) {
        write_text(parent + "/cgroup.subtree_control", "+memory +cpu");
        ok = write_text(dir + "/memory.max", std::to_string(*decl_.memory_max));
        write_text(dir + "/memory.swap.max", "0");
        write_text(dir + "/cpu.max", std::to_string(100000ull * decl_.cpus) + " 100000");
      } else if (parent.ends_with("/memory")) {
        ok = write_text(dir + "/memory.limit_in_bytes", std::to_string(*decl_.memory_max));
      } else {
        write_text(dir + "/cpu.cfs_period_us", "100000");
        write_text(dir + "/cpu.cfs_quota_us", std::to_string(100000ull * decl_.cpus));
      }
      if (!ok) return "cannot set the memory limit of cgroup '" + dir + "': " + std::strerror(errno);
    }
    return {};
  }

  // Starts a long-running process of the sandbox (a server), in the calling
  // thread's network namespace, in the sandbox's cgroup, with its output in
  // log and a clean environment; it dies with the calling thread.
  pid_t spawn(const std::vector<std::string>& argv, const std::string& log, std::vector<std::string> extra_env = {},
              const std::string& err_log = {}, const Confinement* confine = nullptr) {
    const std::string exe = platform::program_path(argv.at(0));
    if (exe.empty()) throw Error(Errc::not_found, "'" + argv.at(0) + "' is not an executable on the agent's PATH");
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    std::string home = "HOME=" + (confine && !confine->host_readonly ? std::string("/") : dir_);
    std::vector<std::pair<std::string, std::string>> binds;  // host path, full mount point
    if (confine)
      for (const auto& [from, to] : confine->binds) binds.emplace_back(from, confine->root + to);
    std::vector<std::string> envs = {"PATH=/usr/local/bin:/usr/bin:/bin", home, "LANG=C"};
    for (auto& e : extra_env) envs.push_back(std::move(e));
    std::vector<char*> env;
    for (auto& e : envs) env.push_back(e.data());
    env.push_back(nullptr);
    // The server's user may not pass the drill root or a directory above it
    // (0700, as the agent's state directory is): in its namespace an empty
    // file system covers the first such directory, holding only the path
    // down to this sandbox (what it covered is out of the server's sight).
    std::string cover;
    std::vector<std::string> chain;  // below cover, down to the sandbox
    if (confine && confine->host_readonly) {
      std::vector<std::string> dirs;  // "/a", "/a/b", ..., dir_
      for (size_t i = 1; i <= dir_.size(); ++i)
        if (i == dir_.size() || dir_[i] == '/') dirs.push_back(dir_.substr(0, i));
      for (const auto& at : dirs) {
        struct stat st {};
        if (cover.empty() && (::stat(at.c_str(), &st) != 0 || !(st.st_mode & S_IXOTH) || at == decl_.root)) cover = at;
        else if (!cover.empty()) chain.push_back(at);
      }
      if (cover.empty() || cover == dir_) throw Error(Errc::invalid_input, "the drill sandbox '" + dir_ + "' lies at no path a drill can cover");
    }
    int gate[2];
    if (::pipe2(gate, O_CLOEXEC) != 0) throw_errno("pipe", "", errno);
    int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (out < 0) {
      ::close(gate[0]);
      ::close(gate[1]);
      throw_errno("opening", log, errno);
    }
    int err = err_log.empty() ? -1 : ::open(err_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (err < 0) err = out;
    pid_t parent = ::getpid();
    pid_t pid = ::fork();
    if (pid < 0) {
      int e = errno;
      for (int fd : {gate[0], gate[1], out}) ::close(fd);
      if (err != out) ::close(err);
      throw_errno("fork", "", e);
    }
    if (pid == 0) {
      // Only async-signal-safe calls from here on.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      ::setpgid(0, 0);
      char c;
      ::close(gate[1]);
      if (::read(gate[0], &c, 1) != 1) ::_exit(127);  // moved into the cgroup first
      int null = ::open("/dev/null", O_RDONLY);
      ::dup2(null, 0);
      ::dup2(out, 1);
      ::dup2(err, 2);
      auto die = [](const char* what) {
        const char* pre = "cairn drill sandbox: ";
        (void)!::write(2, pre, std::strlen(pre));
        (void)!::write(2, what, std::strlen(what));
        (void)!::write(2, " failed\n", 8);
        ::_exit(126);
      };
      // The capability bounding set down to keep_caps, the user (when not
      // root), no_new_privs.
      auto drop_privileges = [&] {
        for (int cap = 0; cap < 64; ++cap) {
          bool keep = false;
          for (int k : confine->keep_caps) keep = keep || k == cap;
          if (!keep && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) die("dropping a capability");
        }
        if (confine->uid != 0) {
          const gid_t g = confine->gid;
          if (::setgroups(1, &g) != 0) die("setgroups");
          if (::setgid(confine->gid) != 0) die("setgid");
          if (::setuid(confine->uid) != 0) die("setuid");
          // A change of user clears the parent-death signal: set again, so
          // the server still dies with the drill (and with a killed agent).
          if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) die("the parent-death signal");
        }
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs");
      };
      if (confine && confine->host_readonly) {
        // The host read-only; under the drill root only this sandbox, the
        // one writable tree (its other sandboxes out of sight).
        const char* box = dir_.c_str();
        if (::unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0) die("unshare(CLONE_NEWNS | CLONE_NEWIPC)");
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("making / private");
        // The sandbox, reached by a descriptor (opened in this namespace, so
        // that it can be bound) once the drill root is covered.
        int box_fd = ::open(box, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (box_fd < 0) die("opening the sandbox");
        char fd_path[40] = "/proc/self/fd/";
        {
          char digits[16];
          int n = 0;
          for (int v = box_fd; n == 0 || v > 0; v /= 10) digits[n++] = char('0' + v % 10);
          size_t at = std::strlen(fd_path);
          while (n > 0) fd_path[at++] = digits[--n];
          fd_path[at] = 0;
        }
        if (::mount("tmpfs", cover.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0711,size=64k") != 0)
          die("an empty file system over the drill root");
        for (const auto& at : chain)
          if (::mkdir(at.c_str(), 0711) != 0) die("the sandbox's mount point");
        if (::mount(fd_path, box, nullptr, MS_BIND | MS_REC, nullptr) != 0) die("binding the sandbox");
        ::close(box_fd);
        struct mount_attr ro {};
        ro.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID;
        if (::syscall(SYS_mount_setattr, AT_FDCWD, "/", AT_RECURSIVE, &ro, sizeof ro) != 0)
          die("making the host read-only (mount_setattr: Linux 5.12 or later)");
        struct mount_attr rw {};
        rw.attr_clr = MOUNT_ATTR_RDONLY;
        rw.attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if (::syscall(SYS_mount_setattr, AT_FDCWD, box, AT_RECURSIVE, &rw, sizeof rw) != 0) die("making the sandbox writable");
        drop_privileges();
        if (::chdir(box) != 0) die("chdir to the sandbox");
      } else if (confine) {
        const char* root = confine->root.c_str();
        // System V IPC of its own too: a server's shared memory never meets the host's.
        if (::unshare(CLONE_NEWNS | CLONE_NEWIPC) != 0) die("unshare(CLONE_NEWNS | CLONE_NEWIPC)");
        if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("making / private");
        if (::mount(root, root, nullptr, MS_BIND, nullptr) != 0) die("binding the root");
        if (::mount(nullptr, root, nullptr, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, nullptr) != 0) die("remounting the root");
        for (const auto& [from, to] : binds) {
          if (::mount(from.c_str(), to.c_str(), nullptr, MS_BIND, nullptr) != 0) die("a read-only bind");
          unsigned long flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID;
          if (::mount(nullptr, to.c_str(), nullptr, flags, nullptr) != 0) die("remounting a bind read-only");
        }
        if (::chdir(root) != 0) die("chdir to the root");
        if (::syscall(SYS_pivot_root, ".", ".") != 0) die("pivot_root");
        if (::umount2(".", MNT_DETACH) != 0) die("detaching the host's root");
        if (::chdir("/") != 0) die("chdir /");
        drop_privileges();
      } else if (::chdir(dir_.c_str()) != 0) {
        ::_exit(127);
      }
      ::execve(exe.c_str(), args.data(), env.data());
      ::_exit(127);
    }
    ::close(gate[0]);
    if (err != out) ::close(err);
    ::close(out);
    pids_.push_back(pid);
    for (const auto& cg : cgroups_) write_text(cg + "/cgroup.procs", std::to_string(pid));
    {
      std::ofstream rec(dir_ + "/pids", std::ios::app);
      rec << pid << " " << process_start_ticks(pid) << "\n";
    }
    (void)!::write(gate[1], "x", 1);
    ::close(gate[1]);
    return pid;
  }

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
          std::vector<std::string> env = {}, const Confinement* confine = nullptr) {
    const std::string log = dir_ + "/tool-" + std::to_string(++tools_) + ".out", err_log = log + ".err";
    pid_t pid = spawn(argv, log, std::move(env), err_log, confine);
    auto until = Clock::now() + timeout;
    int status = 0;
    Ran r;
    for (;;) {
      if (!running(pid, &status)) break;
      if (Clock::now() >= until || (cancel && cancel->load())) {
        ::kill(-pid, SIGKILL);
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
        r.why = Clock::now() >= until ? "killed after " + std::to_string(timeout.count() / 1000) + " s (timeout)" : "cancelled";
        return r;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    r.out = read_text(log);
    r.ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!r.ok) {
      r.err = read_text(err_log);
      std::string last = r.err;
      if (last.find_first_not_of(" \n") == std::string::npos) last = r.out;
      while (!last.empty() && (last.back() == '\n' || last.back() == ' ')) last.pop_back();
      if (auto nl = last.rfind('\n'); nl != std::string::npos) last = last.substr(nl + 1);
      r.why = (WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                 : "killed by signal " + std::to_string(WTERMSIG(status))) +
              (last.empty() ? "" : ": " + last);
    }
    return r;
  }

  // Whether the process still runs; its exit status otherwise.
  bool running(pid_t pid, int* status) {
    int st = 0;
    pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == 0) return true;
    if (status) *status = st;
    pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
    return false;
  }

  // How many processes the sandbox's memory limit has killed (0 when its
  // cgroup says nothing: none made, or a kernel that does not count them).
  uint64_t oom_kills() const {
    uint64_t n = 0;
    for (const auto& cg : cgroups_) {
      // v2: memory.events; v1: memory.oom_control (kernels from 4.13 count oom_kill there).
      std::istringstream in(read_text(cg + (fs::exists(cg + "/memory.events") ? "/memory.events" : "/memory.oom_control")));
      for (std::string key; in >> key;) {
        uint64_t v = 0;
        if (!(in >> v)) break;
        if (key == "oom_kill") n += v;
      }
    }
    return n;
  }

  // Starts a server that runs on the host's files (etcd, ZooKeeper,
  // Prometheus, Kafka) as [drill] user, never root: the host read-only to
  // it, and the sandbox, handed over to that user, its only writable tree.
  pid_t spawn_server(const std::vector<std::string>& argv, const std::string& log) {
    struct passwd pwd {};
    struct passwd* pw = nullptr;
    char buf[4096];
    if (::getpwnam_r(decl_.user.c_str(), &pwd, buf, sizeof buf, &pw) != 0 || !pw || pw->pw_uid == 0)
      throw Error(Errc::unsupported, "[drill] user '" + decl_.user +
                                         "' is not a user of this host other than root; a drill's servers run as it");
    Confinement c;
    c.host_readonly = true;
    c.uid = pw->pw_uid;
    c.gid = pw->pw_gid;
    hand_over(c.uid, c.gid);
    return spawn(argv, log, {}, {}, &c);
  }

  // A directory of the sandbox for a server's temporary files (the host's
  // /tmp is read-only to it).
  std::string tmp_dir() {
    const std::string tmp = dir_ + "/tmp";
    mkdir_p(tmp, 0700);
    return tmp;
  }

  // The sandbox's files to the server's user: all but the marker and the
  // record of PIDs (the agent's own: a server must not name what the
  // agent's clean-up kills). The sandbox's directory stays root's, 0711.
  void hand_over(uid_t uid, gid_t gid) {
    ::chmod(dir_.c_str(), 0711);
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(dir_, ec)) {
      const std::string name = e.path().filename().string();
      if (name == kSandboxMarker || name == "pids") continue;
      if (auto failed = give_tree(e.path().string(), uid, gid); !failed.empty())
        throw Error(Errc::io, "handing the drill's sandbox to [drill] user '" + decl_.user + "': " + failed);
    }
  }

  void kill_all() {
    for (pid_t p : pids_) ::kill(-p, SIGKILL), ::kill(p, SIGKILL);
    for (pid_t p : pids_) ::waitpid(p, nullptr, 0);
    pids_.clear();
    for (const auto& cg : cgroups_) remove_cgroup(cg);
    cgroups_.clear();
  }

  void teardown() {
    kill_all();
    if (!dir_.empty()) remove_tree(dir_);
  }

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
void in_own_network(const std::function<void()>& fn) {
  std::exception_ptr failed;
  std::thread t([&] {
    try {
      if (::unshare(CLONE_NEWNET) != 0)
        throw Error(Errc::denied, std::string("cannot make the drill's network namespace (unshare: ") + std::strerror(errno) +
                                      "); the agent needs CAP_SYS_ADMIN to run drills");
      int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (s < 0) throw_errno("socket in the drill's network namespace", "", errno);
      struct ifreq ifr {};
      std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
      bool up = ::ioctl(s, SIOCGIFFLAGS, &ifr) == 0;
      ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
      up = up && ::ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
      ::close(s);
      if (!up) throw Error(Errc::io, std::string("cannot bring up loopback in the drill's network namespace: ") + std::strerror(errno));
      fn();
    } catch (...) {
      failed = std::current_exception();
    }
  });
  t.join();
  if (failed) std::rethrow_exception(failed);
}

// What a drill found, as it goes.
// What a drill's reasons say about the backup (docs/drills.md § Outcomes):
// "proven" with none; "not_run" when one says the drill could not run here
// (the drill host's disk or deadline, a cancel, something this agent or
// its configuration cannot do): that proves nothing either way; else
// "failed": the backup did not restore or did not check out.
std::string drill_verdict(const std::vector<v1::Reason>& reasons) {
  if (reasons.empty()) return "proven";
  for (const auto& r : reasons)
    if (r.code() == v1::ERROR_CODE_NO_SPACE || r.code() == v1::ERROR_CODE_CANCELLED ||
        r.code() == v1::ERROR_CODE_UNSUPPORTED_TASK)
      return "not_run";
  return "failed";
}

struct Report {
  nlohmann::json phases = nlohmann::json::object();
  nlohmann::json checks = nlohmann::json::array();
  std::vector<v1::Reason> reasons;

  template <typename A, typename B>
  bool check(const std::string& name, const A& expected, const B& found, bool ok) {
    checks.push_back({{"name", name}, {"expected", expected}, {"found", found}, {"ok", ok}});
    if (!ok) {
      std::ostringstream why;
      why << "check '" << name << "' failed: expected " << nlohmann::json(expected).dump() << ", found "
          << nlohmann::json(found).dump();
      reasons.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, why.str()));
    }
    return ok;
  }
  void fail(v1::ErrorCode code, const std::string& detail, const std::string& item = {}) {
    reasons.push_back(make_reason(code, detail, item));
  }
};

// What the restore put in the sandbox.
struct Restored {
  uint64_t files = 0, bytes = 0;
};

bool restore_into(TaskContext& ctx, const std::string& snapshot_id, const std::string& target,
                  const std::atomic<bool>* cancel, Report& rep, Restored& out) {
  repo::RestoreOptions ro;
  ro.target = target;
  ro.memory_budget = ctx.memory_budget;
  ro.cancel = cancel;
  if (ctx.progress)
    ro.progress = [&ctx](const repo::Progress& p) {
      ctx.progress(WorkProgress{v1::PHASE_RESTORE, p.bytes_done, p.bytes_total, p.files_done, p.files_total, "drill: restore"});
    };
  repo::RestoreResult rr = repo::restore(*ctx.repo, snapshot_id, ro);
  out.files = rr.files_restored;
  out.bytes = rr.bytes_restored;
  for (size_t i = 0; i < rr.failures.size() && i < 20; ++i)
    rep.fail(v1::ERROR_CODE_REPOSITORY_CORRUPT,
             "the snapshot does not restore: " + rr.failures[i].path + ": " + rr.failures[i].reason, rr.failures[i].path);
  rep.check("restored without a failure", 0, rr.failures.size(), rr.failures.empty());
  return rr.failures.empty();
}

// files: every entry of the snapshot's tree, read back from the sandbox.
class ReadBack : public repo::TreeVisitor {
 public:
  ReadBack(repo::Repository& r, std::string root, const std::atomic<bool>* cancel) : repo_(r), root_(std::move(root)), cancel_(cancel) {}
  bool enter(const std::string& path, repo::Node& node, size_t) override {
    if (cancel_ && cancel_->load()) throw Error(Errc::interrupted, "the drill was stopped");
    const std::string real = root_ + path;
    struct stat st {};
    if (::lstat(real.c_str(), &st) != 0) {
      bad(path, "missing from the restored tree");
      return false;
    }
    switch (node.type) {
      case repo::NodeType::dir:
        ++dirs;
        if (!S_ISDIR(st.st_mode)) bad(path, "is not a directory");
        return S_ISDIR(st.st_mode);
      case repo::NodeType::symlink: {
        char buf[4096];
        ssize_t n = ::readlink(real.c_str(), buf, sizeof buf);
        if (n < 0 || std::string(buf, size_t(n)) != node.target) bad(path, "symlink target differs from the snapshot's");
        ++links;
        return true;
      }
      case repo::NodeType::file:
        break;
      default:
        return true;
    }
    ++files;
    if (!S_ISREG(st.st_mode)) return bad(path, "is not a regular file"), true;
    if (uint64_t(st.st_size) != node.size)
      return bad(path, "size " + std::to_string(st.st_size) + ", the snapshot says " + std::to_string(node.size)), true;
    if ((st.st_mode & 07777) != (node.mode & 07777)) bad(path, "mode differs from the snapshot's");
    int64_t mtime = int64_t(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
    if (mtime != node.mtime_ns) bad(path, "mtime differs from the snapshot's");
    if (node.sparse) {
      ++sparse;  // its holes are not chunks: size and metadata only
      return true;
    }
    int fd = ::open(real.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return bad(path, std::string("cannot be read: ") + std::strerror(errno)), true;
    Bytes buf;
    uint64_t off = 0;
    bool differs = false;  // already said why, for this file
    for (const auto& id : node.content) {
      auto loc = repo_.index().lookup(id);
      if (!loc) {
        bad(path, "blob " + to_hex(id).substr(0, 16) + " is not in the repository's index");
        differs = true;
        break;
      }
      buf.resize(loc->raw_length);
      try {
        pread_all(fd, buf.data(), buf.size(), off, real);
      } catch (const Error& e) {
        bad(path, e.what());
        differs = true;
        break;
      }
      if (repo_.blob_id(buf) != id) {
        bad(path, "bytes at offset " + std::to_string(off) + " do not hash to the snapshot's blob " + to_hex(id).substr(0, 16));
        differs = true;
        break;
      }
      off += buf.size();
      bytes += buf.size();
    }
    ::close(fd);
    if (!differs && off != node.size) bad(path, "its blobs cover " + std::to_string(off) + " of its bytes");
    return true;
  }
  bool bad(const std::string& path, const std::string& why) {
    ++mismatches;
    if (bad_paths.size() < 10) bad_paths.push_back(path + ": " + why);
    return false;
  }
  uint64_t files = 0, dirs = 0, links = 0, sparse = 0, bytes = 0, mismatches = 0;
  std::vector<std::string> bad_paths;

 private:
  repo::Repository& repo_;
  std::string root_;
  const std::atomic<bool>* cancel_;
};

void drill_files(TaskContext& ctx, const repo::Snapshot& snap, const std::string& restored, Report& rep,
                 const std::atomic<bool>* cancel) {
  auto t = Clock::now();
  ReadBack rb(*ctx.repo, restored, cancel);
  repo::walk_snapshot(*ctx.repo, snap, rb);
  rep.phases["check"] = seconds_since(t);
  uint64_t expected_files = snap.summary.value("files_new", uint64_t(0)) + snap.summary.value("files_changed", uint64_t(0)) +
                            snap.summary.value("files_unmodified", uint64_t(0));
  rep.check("files in the tree", expected_files, rb.files, expected_files == 0 || expected_files == rb.files);
  rep.check("bytes hashed back to the snapshot's blobs", snap.summary.value("bytes_total", uint64_t(0)), rb.bytes,
            true);  // informational: sparse files' data is not hashed
  rep.check("entries that differ from the snapshot", 0, rb.mismatches, rb.mismatches == 0);
  for (const auto& p : rb.bad_paths) rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "restored entry differs: " + p);
}

std::string find_file(const std::string& root, const std::string& name) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    if (it->is_regular_file() && it->path().filename() == name) return it->path().string();
  return {};
}

int64_t json_int(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return -1;
  const auto& v = j[key];
  if (v.is_number()) return v.get<int64_t>();
  if (v.is_string()) try {
      return std::stoll(v.get<std::string>());
    } catch (...) {
    }
  return -1;
}

// What a drill's server that exited while starting gets said about it: how
// it ended (its status, or the signal and whether the sandbox's memory limit
// sent it), the end of its log, and where the whole log was kept. The
// sandbox goes with the drill, so the log is copied beside it first:
// ROOT/failed-<what>-<sandbox>.log, the newest kKeptFailedLogs kept.
constexpr size_t kKeptFailedLogs = 8;

std::string drill_exit_account(const DrillDecl& d, const Sandbox& box, int status, const std::string& log,
                               const std::string& what) {
  std::string how;
  if (WIFEXITED(status)) {
    how = "exited with status " + std::to_string(WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    const int sig = WTERMSIG(status);
    const char* name = sigabbrev_np(sig);
    how = "was killed by signal " + std::to_string(sig) + (name ? std::string(" (SIG") + name + ")" : "");
    if (sig == SIGKILL && box.oom_kills() > 0)
      how += ": the sandbox's memory limit killed it (" +
             (d.memory_max ? std::to_string(*d.memory_max >> 20) + " MiB" : std::string("none set")) +
             "); raise [drill] memory_max";
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
bool wait_started(const DrillDecl& d, Sandbox& box, pid_t server, const std::string& log, const std::string& what,
                  const std::string& check, const std::string& ready_word, const std::atomic<bool>* cancel, Report& rep,
                  Clock::time_point started, const std::function<std::string()>& probe) {
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

void drill_etcd(const DrillDecl& d, Sandbox& box, const repo::Snapshot& snap, const std::string& restored, Report& rep,
                const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  const nlohmann::json& rec = snap.component;
  std::string file = find_file(restored, etcd::kSnapshotFileName);
  if (file.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, std::string("the snapshot holds no '") + etcd::kSnapshotFileName + "'");
    return;
  }
  // The stream's own check, as the backup made it (the database, then its
  // SHA-256: etcd::SnapshotStreamCheck), read back in pieces, never whole.
  {
    etcd::SnapshotStreamCheck sc;
    std::string problem;
    try {
      std::ifstream in(file, std::ios::binary);
      const uint64_t size = fs::file_size(file);
      const uint64_t db = size > etcd::kSnapshotHashSize ? size - etcd::kSnapshotHashSize : 0;
      std::string piece;
      for (uint64_t off = 0; off < size;) {
        // The database's pieces announce what of it is still to come; the hash comes alone.
        const uint64_t n = off < db ? std::min<uint64_t>(1 << 20, db - off) : size - off;
        piece.resize(size_t(n));
        if (!in.read(piece.data(), std::streamsize(n))) throw Error(Errc::io, "cannot read '" + file + "'");
        off += n;
        sc.feed(piece, off < db ? db - off : 0);
      }
      sc.finish();
    } catch (const Error& e) {
      problem = e.what();
    }
    std::string expected = rec.value("sha256", std::string());
    rep.check("etcd snapshot's trailing sha256 matches its database", "match", problem.empty() ? "match" : problem,
              problem.empty());
    if (!problem.empty()) return;
    if (!expected.empty()) rep.check("etcd snapshot sha256 as recorded", expected, sc.sha256_hex(), expected == sc.sha256_hex());
  }
  const std::string data = box.dir() + "/etcd";
  const std::string url = "http://127.0.0.1:2379", peer = "http://127.0.0.1:2380";
  // A backup keeps the cluster's users and `auth enable`: the restored
  // server answers reads only to a user of that cluster ([drill]
  // etcd_auth_file), given to etcdctl in its environment, never its argv.
  std::vector<std::string> ctl_env = {"ETCDCTL_API=3", "ETCDCTL_ENDPOINTS=" + url};
  if (!d.etcd_auth_file.empty()) {
    try {
      auto [user, password] = etcd::read_auth_file(d.etcd_auth_file);
      ctl_env.push_back("ETCDCTL_USER=" + user + ":" + password);
    } catch (const Error& e) {
      // (read_auth_file names the etcd component's setting: say which file this is.)
      std::string why = e.what();
      if (auto at = why.find("etcd 'auth_file'"); at != std::string::npos) why.replace(at, 16, "[drill] etcd_auth_file");
      throw Error(e.code(), why);
    }
  }
  auto auth_refused = [](const std::string& why) {
    return why.find("user name is empty") != std::string::npos || why.find("permission denied") != std::string::npos ||
           why.find("authentication failed") != std::string::npos || why.find("invalid auth token") != std::string::npos;
  };
  auto etcdctl = [&](std::vector<std::string> args, std::chrono::milliseconds timeout, bool must = true) {
    std::vector<std::string> argv = {d.etcdctl};
    argv.insert(argv.end(), args.begin(), args.end());
    auto r = box.run(argv, timeout, cancel, ctl_env);
    if (must && !r.ok) {
      std::string why = "'" + d.etcdctl + " " + args.at(0) + " " + (args.size() > 1 ? args[1] : "") + "' " + r.why;
      if (auth_refused(r.why))
        why += d.etcd_auth_file.empty()
                   ? ": the backed-up cluster has authentication on, so its keys answer only to one of its users; "
                     "give the drill agent one that may read every key ([drill] etcd_auth_file, a 0600 file "
                     "'user:password'). The server started on the restored data; its keys were not checked"
                   : ": the user in [drill] etcd_auth_file ('" + d.etcd_auth_file +
                         "') cannot read every key of the backed-up cluster (the backup holds that cluster's "
                         "users and roles, as they were when it was taken)";
      throw Error(Errc::io, why);
    }
    return r;
  };
  auto t = Clock::now();
  phase("start");
  {
    auto pr = box.run({d.etcdctl, "snapshot", "restore", file, "--data-dir", data, "--name", "drill", "--initial-cluster",
                       "drill=" + peer, "--initial-cluster-token", "cairn-drill", "--initial-advertise-peer-urls", peer},
                      std::chrono::minutes(30), cancel, {"ETCDCTL_API=3"});
    if (!pr.ok) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "etcd refused the snapshot: '" + d.etcdctl + " snapshot restore' " + pr.why);
      rep.check("etcdctl snapshot restore", "ok", "failed", false);
      return;
    }
  }
  pid_t server = box.spawn_server({d.etcd, "--name", "drill", "--data-dir", data, "--listen-client-urls", url,
                                   "--advertise-client-urls", url, "--listen-peer-urls", peer, "--initial-advertise-peer-urls",
                                   peer, "--initial-cluster", "drill=" + peer},
                                  box.dir() + "/etcd.log");
  if (!wait_started(d, box, server, box.dir() + "/etcd.log", "etcd", "etcd endpoint health", "healthy", cancel, rep, t, [&] {
        // A server that refuses the request for want of a user answers: it is up.
        // (-w json: the endpoint's own error is in the output, not only "unhealthy cluster".)
        auto pr = etcdctl({"endpoint", "health", "-w", "json"}, std::chrono::seconds(5), false);
        return pr.ok || auth_refused(pr.out) ? std::string() : pr.why;
      }))
    return;
  t = Clock::now();
  phase("check");
  const int64_t revision = json_int(rec, "revision");
  if (revision <= 0) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the backup recorded no etcd revision to check against");
    return;
  }
  const std::string rev = "--rev=" + std::to_string(revision);
  auto count = nlohmann::json::parse(etcdctl({"get", "", "--prefix", "--keys-only", "--limit=1", rev, "-w", "json"}, std::chrono::minutes(5)).out,
                                     nullptr, false);
  rep.check("keys at revision " + std::to_string(revision), json_int(rec, "key_count"), json_int(count, "count"),
            json_int(count, "count") == json_int(rec, "key_count"));
  auto hk = nlohmann::json::parse(etcdctl({"endpoint", "hashkv", rev, "-w", "json"}, std::chrono::minutes(5)).out, nullptr, false);
  int64_t hash = -1;
  if (hk.is_array() && !hk.empty() && hk[0].is_object()) hash = json_int(hk[0].value("HashKV", nlohmann::json::object()), "hash");
  rep.check("hashkv at revision " + std::to_string(revision), json_int(rec, "hash_kv"), hash, hash == json_int(rec, "hash_kv"));
  rep.phases["check"] = seconds_since(t);
}

// A standalone ZooKeeper server on a ZooKeeper backup's restored snapshot
// and transaction logs, at 127.0.0.1:2181 of the sandbox's namespace. Its
// status once it serves; nullopt when it did not (rep says why). `recorded`
// gets the zxid the backup recorded.
std::optional<zookeeper::ServerStatus> start_zookeeper(const DrillDecl& d, Sandbox& box, const nlohmann::json& rec,
                                                       const std::string& restored, Report& rep, const std::atomic<bool>* cancel,
                                                       Clock::time_point started, uint64_t* recorded) {
  const std::string data_dir = rec.value("data_dir", std::string()), log_dir = rec.value("data_log_dir", std::string());
  auto zxid = zookeeper::parse_zxid(rec.value("zxid", std::string()));
  if (data_dir.empty() || data_dir[0] != '/' || !zxid) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the backup recorded no ZooKeeper data_dir or zxid to check against");
    return std::nullopt;
  }
  *recorded = *zxid;
  // The driver stores a staged copy under <dataDir>/.cairn-zookeeper-data
  // (and <dataLogDir>/.cairn-zookeeper-log where the logs live apart).
  std::string why;
  auto data_at = sandboxed_path(restored, data_dir + "/" + zookeeper::kDataRootName, &why);
  auto log_at = log_dir.empty() || log_dir == data_dir ? data_at
                                                       : sandboxed_path(restored, log_dir + "/" + zookeeper::kLogRootName, &why);
  if (!data_at || !log_at) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot records ZooKeeper's data_dir '" + data_dir + "' and data_log_dir '" +
                                               log_dir + "', which the drill does not use: " + why + "; nothing was started");
    return std::nullopt;
  }
  const std::string dd = *data_at;
  std::string ld = dd;
  if (log_at != data_at && fs::exists(fs::symlink_status(*log_at))) ld = *log_at;
  if (!fs::is_directory(dd + "/version-2")) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot holds no ZooKeeper data directory (" + data_dir + "/" +
                                               zookeeper::kDataRootName + "/version-2)");
    return std::nullopt;
  }
  {
    std::ofstream cfg(box.dir() + "/zoo.cfg");
    cfg << "tickTime=2000\ndataDir=" << dd << "\ndataLogDir=" << ld
        << "\nclientPort=2181\nclientPortAddress=127.0.0.1\n4lw.commands.whitelist=srvr,mntr,dump\nadmin.enableServer=false\n"
        << "maxClientCnxns=0\n";
  }
  const std::string tmp = box.tmp_dir();
  pid_t server = box.spawn_server({d.java, "-Xmx" + std::to_string(d.java_heap_mb) + "m", "-XX:-UsePerfData",
                                   "-Djava.io.tmpdir=" + tmp, "-Dzookeeper.log.dir=" + tmp,
                                   "-cp", d.zookeeper_jar, "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                                   box.dir() + "/zoo.cfg"},
                                  box.dir() + "/zookeeper.log");
  std::optional<zookeeper::ServerStatus> st;
  if (!wait_started(d, box, server, box.dir() + "/zookeeper.log", "ZooKeeper", "ZooKeeper serving (standalone)", "serving",
                    cancel, rep, started, [&] {
                      auto s = zookeeper::parse_srvr(zookeeper::four_letter("127.0.0.1:2181", "srvr", std::chrono::seconds(2)));
                      if (s.mode != "standalone" || !s.has_zxid) return "mode " + s.mode;
                      st = s;
                      return std::string();
                    }))
    return std::nullopt;
  return st;
}

// ZooKeeper: a standalone server on the restored snapshot and transaction
// logs; it must replay them to the zxid the backup recorded.
void drill_zookeeper(const DrillDecl& d, Sandbox& box, const repo::Snapshot& snap, const std::string& restored, Report& rep,
                     const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  const nlohmann::json& rec = snap.component;
  auto t = Clock::now();
  phase("start");
  uint64_t recorded = 0;
  auto st = start_zookeeper(d, box, rec, restored, rep, cancel, t, &recorded);
  if (!st) return;
  t = Clock::now();
  phase("check");
  // The server replayed every transaction the backup held: its zxid is the
  // recorded one or later (a new epoch when it took over as standalone).
  rep.check("zxid reached", zookeeper::zxid_hex(recorded), zookeeper::zxid_hex(st->zxid), st->zxid >= recorded);
  try {
    auto m = zookeeper::parse_mntr(zookeeper::four_letter("127.0.0.1:2181", "mntr", std::chrono::seconds(5)));
    int64_t expected = rec.contains("znode_count") ? rec.value("znode_count", int64_t(-1)) : -1;
    int64_t found = m.has_node_count ? int64_t(m.node_count) : -1;
    rep.check("znodes", expected < 0 ? nlohmann::json("> 0") : nlohmann::json(expected), found,
              expected < 0 ? found > 0 : found == expected);
  } catch (const Error& e) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, std::string("ZooKeeper's mntr: ") + e.what());
  }
  rep.phases["check"] = seconds_since(t);
}

// The value of an unlabelled gauge in Prometheus's text exposition; -1 when absent.
double exposition_value(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + " ", 0) == 0) try {
        return std::stod(line.substr(name.size() + 1));
      } catch (...) {
      }
  return -1;
}

// Prometheus: a server on the restored TSDB, scraping nothing, keeping
// everything (no retention), its own answers checked against the blocks the
// backup recorded.
void drill_prometheus(const DrillDecl& d, Sandbox& box, const repo::Snapshot& snap, const std::string& restored, Report& rep,
                      const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  const nlohmann::json& rec = snap.component;
  const std::string data_dir = rec.value("data_dir", std::string());
  std::string why;
  auto at = sandboxed_path(restored, data_dir, &why);
  if (!at) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot records the Prometheus data directory '" + data_dir +
                                               "', which the drill does not use: " + why + "; nothing was started");
    return;
  }
  if (!fs::is_directory(fs::symlink_status(*at))) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot holds no Prometheus data directory ('" + data_dir + "')");
    return;
  }
  const std::string tsdb = *at;
  const int64_t blocks = rec.value("blocks", int64_t(0)), min_time = rec.value("min_time", int64_t(0)),
                max_time = rec.value("max_time", int64_t(0));
  auto t = Clock::now();
  phase("start");
  {
    std::ofstream cfg(box.dir() + "/prometheus.yml");
    cfg << "global:\n  scrape_interval: 1h\nscrape_configs: []\n";
  }
  const std::string url = "http://127.0.0.1:9090";
  pid_t server = box.spawn_server({d.prometheus, "--config.file=" + box.dir() + "/prometheus.yml", "--storage.tsdb.path=" + tsdb,
                            "--storage.tsdb.retention.time=200y",
                            "--web.listen-address=127.0.0.1:9090"},
                           box.dir() + "/prometheus.log");
  auto get = [&](const std::string& path, std::chrono::milliseconds timeout) {
    platform::HttpRequest q;
    q.url = url + path;
    q.timeout = timeout;
    q.cancel = cancel;
    q.max_body = 64 << 20;
    return platform::http_request(q);
  };
  if (!wait_started(d, box, server, box.dir() + "/prometheus.log", "Prometheus", "Prometheus ready", "ready", cancel, rep, t,
                    [&] {
                      auto r = get("/-/ready", std::chrono::seconds(2));
                      return r.status == 200 ? std::string() : "HTTP " + std::to_string(r.status);
                    }))
    return;
  t = Clock::now();
  phase("check");
  auto metrics = get("/metrics", std::chrono::seconds(30)).body;
  const double loaded = exposition_value(metrics, "prometheus_tsdb_blocks_loaded");
  rep.check("blocks loaded", blocks, int64_t(loaded), int64_t(loaded) == blocks);
  if (blocks > 0) {
    const double lowest = exposition_value(metrics, "prometheus_tsdb_lowest_timestamp");
    rep.check("oldest sample (ms)", min_time, int64_t(lowest), int64_t(lowest) == min_time);
    // Series with samples in the newest recorded hour, asked through PromQL.
    // last_over_time keeps each series' name (count_over_time drops it, and
    // two metrics with the same labels, as any self-scraping server has,
    // then collide into an error). An error is never a count: the check
    // fails naming it.
    char at[64];
    std::snprintf(at, sizeof at, "%.3f", double(max_time) / 1000.0);
    const std::string query = "count(last_over_time({__name__=~\".+\"}[1h]))";
    auto r = get("/api/v1/query?query=" + platform::url_encode(query) + "&time=" + at, std::chrono::minutes(2));
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    const std::string check = "series answering a query in the newest recorded hour";
    if (!j.is_object() || j.value("status", "") != "success") {
      std::string error = j.is_object() && j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>()
                                                                                        : "HTTP " + std::to_string(r.status);
      rep.check(check, "> 0", "no answer", false);
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "Prometheus could not answer the query '" + query + "' at " + at + ": " + error);
    } else {
      int64_t series = 0;
      const auto& result = j["data"]["result"];
      if (result.is_array() && !result.empty() && result[0]["value"].is_array() && result[0]["value"].size() == 2 &&
          result[0]["value"][1].is_string())
        series = std::atoll(result[0]["value"][1].get<std::string>().c_str());
      rep.check(check, "> 0", series, series > 0);
    }
  }
  rep.phases["check"] = seconds_since(t);
}

// HAProxy's directives that run code of their own (Lua, external health
// checks, programs, an OpenSSL engine or provider): a drill starts no
// configuration that has one, since `haproxy -c` alone would run it.
bool haproxy_runs_code(const std::vector<haproxy::Word>& w, const std::string& section) {
  static const std::set<std::string> kCode = {"lua-load", "lua-load-per-thread", "lua-prepend-path", "external-check",
                                              "ssl-engine", "ssl-provider", "ssl-provider-path", "program", "insecure-fork-wanted"};
  if (w.empty()) return false;
  if (kCode.count(w[0].text)) return true;
  // HAProxy expands environment variables (which the configuration itself
  // can set: setenv, presetenv) before it reads a keyword: a keyword built
  // from one is read here as HAProxy will only once expanded, so it is
  // taken as code (a drill never runs what it cannot check).
  if (!w[0].env.empty() || (w[0].text == "option" && w.size() > 1 && !w[1].env.empty())) return true;
  if (w[0].text == "option" && w.size() > 1 && w[1].text == "external-check") return true;
  return section == "program";
}

// A path inside the sandbox's root that the drill mounts a host path on (or
// makes a directory of): every component below root must be a directory the
// restore made or none at all (no symlink out of the sandbox), and a mount
// point must not hide restored files. "" when made; else why not.
std::string sandbox_mount_point(const std::string& root, const std::string& abs, bool dir, bool empty_dir_only = true) {
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
      if (last && empty_dir_only && !fs::is_empty(at)) return "the snapshot holds files under '" + abs + "', which the sandbox mounts from the host";
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

// A Confinement rooted at the restored tree: host paths mounted read-only at
// their own paths inside it (mount points made with sandbox_mount_point's
// checks), the first problem kept. A merged /usr's links (/lib -> usr/lib)
// are made as the host has them.
struct ConfinedRoot {
  std::string restored;
  Confinement conf;
  std::string problem;

  explicit ConfinedRoot(std::string root) : restored(std::move(root)) { conf.root = restored; }

  void bind(const std::string& host, bool dir) {
    if (!problem.empty()) return;
    struct stat st {};
    if (::lstat(host.c_str(), &st) != 0) return;  // this host has none
    if (S_ISLNK(st.st_mode) && dir) {
      std::error_code ec;
      const std::string target = fs::read_symlink(host, ec).string();
      const std::string at = restored + host;
      if (ec) return;
      if (fs::is_symlink(fs::symlink_status(at, ec))) {
        if (fs::read_symlink(at, ec).string() != target) problem = "the snapshot holds a symbolic link at '" + host + "'";
        return;
      }
      if (fs::exists(fs::symlink_status(at, ec))) {
        problem = "the snapshot holds '" + host + "', which the sandbox links as the host does";
        return;
      }
      if (auto why = sandbox_mount_point(restored, parent_of(host), true, false); !why.empty()) {
        problem = why;
        return;
      }
      if (::symlink(target.c_str(), at.c_str()) != 0) problem = "cannot link '" + at + "': " + std::strerror(errno);
      return;
    }
    if (dir != S_ISDIR(::stat(host.c_str(), &st) == 0 ? st.st_mode : 0)) return;
    if (auto why = sandbox_mount_point(restored, host, dir); !why.empty()) {
      problem = why;
      return;
    }
    conf.binds.emplace_back(host, host);
  }

  // What any dynamically linked server needs: the libraries, the loader's
  // cache, the user and group names, the local time, and /dev's harmless
  // nodes. An /etc file the snapshot holds itself (backed up as a file the
  // configuration names) serves as well and is left.
  void host_basics() {
    for (const char* p : {"/lib", "/lib64", "/lib32", "/usr/lib", "/usr/lib64", "/usr/lib32"}) bind(p, true);
    for (const char* p : {"/etc/ld.so.cache", "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/localtime",
                          "/dev/null", "/dev/zero", "/dev/urandom", "/dev/random"}) {
      std::error_code ec;
      if (std::string_view(p).starts_with("/etc/") && fs::is_regular_file(fs::symlink_status(restored + p, ec))) continue;
      bind(p, false);
    }
  }
};

// Why `haproxy -c` refused a configuration: its [ALERT] lines that name a
// problem (the one naming the missing map, certificate or keyword), not
// only its last line, the summary ("Error(s) found in configuration file").
std::string haproxy_alerts(const Sandbox::Ran& r) {
  std::string out;
  int n = 0;
  std::istringstream in(r.err + "\n" + r.out);
  for (std::string line; std::getline(in, line);) {
    auto at = line.find("[ALERT]");
    if (at == std::string::npos) continue;
    // "[ALERT]    (1234) : config : parsing [f:9] : ..." -> "parsing [f:9] : ..."
    auto colon = line.find(" : ", at);
    std::string what = colon == std::string::npos ? line.substr(at) : line.substr(colon + 3);
    if (what.rfind("config : ", 0) == 0) what = what.substr(9);
    if (what.find("found in configuration file") != std::string::npos || what.find("Fatal errors found") != std::string::npos)
      continue;
    if (++n > 5) {
      out += "; ...";
      break;
    }
    out += (out.empty() ? "" : "; ") + what;
  }
  return out.empty() ? r.why : r.why.substr(0, r.why.find(':')) + ": " + out;
}

// HAProxy: the restored configuration checked (`haproxy -c`) and started with
// the sandbox as its whole filesystem (Confinement), so it reads the restored
// files at the paths it names and writes only into the sandbox, on the
// addresses it names (the drill's network namespace accepts any local
// address); the saved runtime state set back over a stats socket of the
// drill's own, as a restore would; then every frontend open, every recorded
// server's forced state and weight, every saved map and stick table, and
// every referenced certificate loaded.
void drill_haproxy(const DrillDecl& d, Sandbox& box, const repo::Snapshot& snap, const std::string& restored, Report& rep,
                   const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  const nlohmann::json& rec = snap.component;
  std::vector<std::string> config;
  if (rec.contains("config") && rec["config"].is_array())
    for (const auto& c : rec["config"])
      if (c.is_string() && c.get<std::string>().starts_with("/") && c.get<std::string>().find("/../") == std::string::npos)
        config.push_back(c.get<std::string>());
  if (config.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED,
             "the backup recorded no HAProxy configuration paths (backups taken before cairn recorded them); take a new backup to drill");
    return;
  }
  haproxy::ParseOptions po;
  po.read_root = restored;
  haproxy::ParseResult parsed = haproxy::parse_config(config, po);
  if (!parsed.errors.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the restored HAProxy configuration cannot be read: " + parsed.errors.front());
    return;
  }
  // Code of its own refused; the directories it writes in made.
  std::string code;
  std::vector<std::string> dirs = {"/tmp", "/run", "/var/run"};
  for (const auto& f : parsed.files) {
    if (f.crt_list) continue;
    std::istringstream in(read_text(restored + f.path));
    std::string section;
    uint32_t n = 0;
    for (std::string raw; std::getline(in, raw);) {
      ++n;
      auto l = haproxy::tokenize_line(raw);
      const auto& w = l.words;
      if (w.empty()) continue;
      static const std::set<std::string> kSections = {"global", "defaults", "frontend", "backend", "listen", "peers", "resolvers",
                                                      "userlist", "program", "mailers", "http-errors", "ring", "cache", "log-forward"};
      if (kSections.count(w[0].text)) section = w[0].text;
      if (code.empty() && haproxy_runs_code(w, section)) code = "'" + w[0].text + "' at " + f.path + ":" + std::to_string(n);
      auto unix_path = [](const std::string& a) -> std::string {
        if (a.starts_with("/")) return a;
        if (a.starts_with("unix@/")) return a.substr(5);
        return {};
      };
      if (w[0].text == "chroot" && w.size() > 1 && w[1].text.starts_with("/")) dirs.push_back(w[1].text);
      if (w[0].text == "pidfile" && w.size() > 1 && w[1].text.starts_with("/")) dirs.push_back(parent_of(w[1].text));
      if (w[0].text == "stats" && w.size() > 2 && w[1].text == "socket" && !unix_path(w[2].text).empty())
        dirs.push_back(parent_of(unix_path(w[2].text)));
      if (w[0].text == "bind" && w.size() > 1 && !unix_path(w[1].text).empty()) dirs.push_back(parent_of(unix_path(w[1].text)));
    }
  }
  if (!rep.check("runs no code of its own (Lua, external checks, programs, SSL engines)", "none", code.empty() ? "none" : code,
                 code.empty())) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "the restored HAProxy configuration runs code of its own (" + code +
                                                  "): a drill does not start it, since even `haproxy -c` would run that code");
    return;
  }

  // The root: the restored tree, with the host's libraries and haproxy's
  // binary mounted read-only at their paths.
  const std::string exe = platform::program_path(d.haproxy);
  if (exe.empty()) throw Error(Errc::not_found, "'" + d.haproxy + "' is not an executable on the agent's PATH");
  ConfinedRoot box_root(restored);
  Confinement& conf = box_root.conf;
  // CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_SETGID, CAP_SETUID,
  // CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_SYS_RESOURCE: bind, raise its
  // file limit, chroot and drop to its user; nothing that mounts, traces,
  // kills another user's process or reaches a device.
  conf.keep_caps = {CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_SETGID, CAP_SETUID, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_SYS_RESOURCE};
  box_root.host_basics();
  box_root.bind(exe, false);
  std::string& problem = box_root.problem;
  for (const auto& dir : dirs)
    if (problem.empty()) problem = sandbox_mount_point(restored, dir, true, false);
  const std::string own = "/.cairn-drill";
  if (problem.empty()) problem = sandbox_mount_point(restored, own, true);
  if (!problem.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the HAProxy drill's sandbox cannot be made: " + problem);
    return;
  }
  {
    std::ofstream extra(restored + own + "/stats.cfg");
    extra << "# added by the drill: a stats socket of its own (docs/drills.md)\nglobal\n    stats socket " << own
          << "/admin.sock mode 600 level admin\n";
  }
  // Any address the configuration binds, in this namespace only.
  for (const char* knob : {"/proc/sys/net/ipv4/ip_nonlocal_bind", "/proc/sys/net/ipv6/ip_nonlocal_bind"}) write_text(knob, "1");
  std::vector<std::string> args = {exe};
  for (const auto& c : config) args.insert(args.end(), {"-f", c});
  args.insert(args.end(), {"-f", own + "/stats.cfg"});

  auto t = Clock::now();
  phase("start");
  std::vector<std::string> check_args = args;
  check_args.insert(check_args.begin() + 1, "-c");
  auto checked = box.run(check_args, std::chrono::seconds(60), cancel, {}, &conf);
  if (!rep.check("haproxy -c", "valid", checked.ok ? std::string("valid") : haproxy_alerts(checked), checked.ok)) {
    rep.phases["start"] = seconds_since(t);
    return;
  }
  args.insert(args.begin() + 1, "-db");  // in the foreground whatever 'daemon' says: the drill holds its PID
  const std::string log = box.dir() + "/haproxy.log";
  pid_t server = box.spawn(args, log, {}, {}, &conf);
  // The socket's path can exceed a Unix socket's 107 bytes: reached through
  // a descriptor of its directory.
  int own_fd = ::open((restored + own).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (own_fd < 0) throw_errno("opening", restored + own, errno);
  struct CloseAtEnd {
    int fd;
    ~CloseAtEnd() { ::close(fd); }
  } close_own{own_fd};
  platform::SocketAddress sock;
  sock.unix_path = "/proc/self/fd/" + std::to_string(own_fd) + "/admin.sock";
  auto cli = [&](const std::string& command) { return platform::socket_exchange(sock, command + "\n", std::chrono::seconds(10)); };
  std::string version;
  if (!wait_started(d, box, server, log, "HAProxy", "HAProxy serving", "serving", cancel, rep, t, [&]() -> std::string {
        auto info = haproxy::parse_info(platform::socket_exchange(sock, "show info\n", std::chrono::seconds(2)));
        version = info["Version"];
        return version.empty() ? "the stats socket answers without a version" : "";
      }))
    return;

  t = Clock::now();
  phase("check");
  // The runtime state back, as a restore sets it.
  const std::string runtime_path = rec.value("runtime_path", std::string());
  haproxy::RuntimeState saved;
  bool have_runtime = false;
  if (!runtime_path.empty() && fs::exists(restored + runtime_path + "/runtime.json")) {
    saved = haproxy::runtime_from_json(nlohmann::json::parse(read_text(restored + runtime_path + "/runtime.json"), nullptr, false));
    have_runtime = true;
    auto applied = haproxy::apply_runtime(saved, cli);
    rep.check("runtime state set back (commands)", applied.commands, applied.commands - applied.problems.size(), applied.problems.empty());
    for (size_t i = 0; i < applied.problems.size() && i < 5; ++i)
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, applied.problems[i].first, applied.problems[i].second);
  } else if (rec.contains("server_state")) {
    rep.check("runtime state in the snapshot", runtime_path, "absent", false);
  }
  // Every frontend open: `show stat`'s FRONTEND rows.
  {
    std::istringstream in(cli("show stat"));
    std::string header;
    std::getline(in, header);
    std::vector<std::string> cols;
    {
      std::istringstream h(header.starts_with("# ") ? header.substr(2) : header);
      for (std::string c; std::getline(h, c, ',');) cols.push_back(c);
    }
    auto col = [&](const std::string& name) { return size_t(std::find(cols.begin(), cols.end(), name) - cols.begin()); };
    const size_t sv = col("svname"), st = col("status"), px = col("pxname");
    int64_t frontends = 0, open = 0;
    std::string closed;
    for (std::string row; std::getline(in, row);) {
      std::vector<std::string> f;
      std::istringstream r(row);
      for (std::string c; std::getline(r, c, ',');) f.push_back(c);
      if (f.size() <= std::max(sv, st) || f[sv] != "FRONTEND") continue;
      ++frontends;
      if (f[st] == "OPEN") ++open;
      else if (px < f.size()) closed += (closed.empty() ? "" : ", ") + f[px] + " " + f[st];
    }
    rep.check("frontends open", frontends, closed.empty() ? nlohmann::json(open) : nlohmann::json(closed), frontends > 0 && open == frontends);
  }
  // The servers' forced states and weights the backup recorded.
  if (rec.contains("server_state") && rec["server_state"].is_array()) {
    auto diffs = haproxy::compare_servers(rec, haproxy::parse_servers_state(cli("show servers state")));
    rep.check("servers' forced state and weight as recorded", rec["server_state"].size(), rec["server_state"].size() - diffs.size(),
              diffs.empty());
    for (size_t i = 0; i < diffs.size() && i < 5; ++i) rep.reasons.push_back(diffs[i]);
  }
  if (have_runtime) {
    size_t want = 0, found = 0;
    std::string extra;  // a map holding entries the backup did not record
    for (const auto& [file, entries] : saved.maps) {
      auto now = haproxy::parse_map_dump(cli("show map " + haproxy::cli_escape(file)));
      auto a = entries;
      std::sort(a.begin(), a.end());
      std::sort(now.begin(), now.end());
      want += a.size();
      for (const auto& e : a)
        if (std::binary_search(now.begin(), now.end(), e)) ++found;
      if (now.size() > a.size() && extra.empty()) extra = file;
    }
    rep.check("map entries as recorded", want, found, found == want && extra.empty());
    if (!extra.empty()) rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "map '" + extra + "' holds entries the backup did not record", extra);
    size_t keys = 0, present = 0;
    for (const auto& [table, entries] : saved.tables) {
      std::set<std::string> now;
      for (const auto& e : haproxy::parse_table_dump(cli("show table " + haproxy::cli_escape(table.name)))) now.insert(e.key);
      keys += entries.size();
      for (const auto& e : entries) present += now.count(e.key);
    }
    rep.check("stick-table entries as recorded", keys, present, present == keys);
  }
  // Every certificate the configuration names, loaded.
  {
    std::set<std::string> loaded;
    std::istringstream in(cli("show ssl cert"));
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && line[0] != '#') loaded.insert(line);
    std::set<std::string> want;
    for (const auto& r : parsed.refs) {
      if (r.kind != haproxy::RefKind::crt || r.path.empty()) continue;
      std::error_code ec;
      if (fs::is_directory(restored + r.path, ec)) {
        for (const auto& e : fs::directory_iterator(restored + r.path, ec)) {
          const std::string name = e.path().filename().string();
          if (!e.is_regular_file() || name.ends_with(".key") || name.ends_with(".ocsp") || name.ends_with(".issuer") ||
              name.ends_with(".sctl"))
            continue;
          want.insert(r.path + "/" + name);
        }
      } else {
        want.insert(r.path);
      }
    }
    std::string missing;
    size_t found = 0;
    for (const auto& w : want) {
      if (loaded.count(w)) ++found;
      else if (missing.size() < 300) missing += (missing.empty() ? "" : ", ") + w;
    }
    rep.check("certificates loaded", want.size(), found, found == want.size());
    if (!missing.empty()) rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "haproxy did not load the certificate(s) " + missing);
  }
  rep.checks.push_back({{"name", "haproxy version"}, {"expected", rec.value("haproxy_version", std::string())}, {"found", version}, {"ok", true}});
  rep.phases["check"] = seconds_since(t);
}


// PostgreSQL: the digits of the first version number in a text ("15.8
// (Debian 15.8-1)", "postgres (PostgreSQL) 15.8") up to its first dot.
std::string pg_major(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && !std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  size_t j = i;
  while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
  return text.substr(i, j - i);
}

// Lets the server's user pass through every directory of the confined root
// above `abs` (the restore makes the parents it was not given 0700, root's).
void open_path(const std::string& root, const std::string& abs) {
  ::chmod(root.c_str(), 0755);
  std::string at = root;
  for (const auto& part : fs::path(abs).relative_path().parent_path()) {
    at += "/" + part.string();
    struct stat st {};
    if (::lstat(at.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) ::chmod(at.c_str(), (st.st_mode & 07777) | 0111);
  }
}

std::string without_suffix(std::string text, const std::string& suffix) {
  if (text.ends_with(suffix)) text.resize(text.size() - suffix.size());
  return text;
}

// PostgreSQL (docs/drills.md): the server started on the backup in the
// sandbox as its whole filesystem (Confinement, as the HAProxy drill), as
// [drill] postgresql_user with no capability left, never archiving, never
// reaching a primary. A base backup is recovered exactly as a restore does
// (backup_label, tablespace_map, the WAL from its start to its consistent
// point read out of the repository and checked) with recovery_target =
// 'immediate', and promoted; a cold copy starts with crash recovery; a
// logical backup is replayed (globals, then pg_restore of each dump) into a
// server initdb made in the sandbox. Then: the system identifier, the LSN
// reached, every recorded database, and pg_amcheck over every relation
// (heap and B-tree; page checksums verified on read where they are on).
void drill_postgresql(const DrillDecl& d, Sandbox& box, TaskContext& ctx, const repo::Snapshot& snap,
                      const std::string& restored, Report& rep, const std::atomic<bool>* cancel,
                      const std::function<void(const std::string&)>& phase) {
  namespace pg = postgresql;
  const nlohmann::json& meta = snap.component;
  const std::string mode = meta.is_object() ? meta.value("mode", "") : "";
  if (mode != "physical" && mode != "cold" && mode != "logical") {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot is not a PostgreSQL backup cairn recorded (mode '" + mode + "')");
    return;
  }
  struct passwd pwd {};
  struct passwd* pw = nullptr;
  char pwbuf[4096];
  if (::getpwnam_r(d.postgresql_user.c_str(), &pwd, pwbuf, sizeof pwbuf, &pw) != 0 || !pw || pw->pw_uid == 0) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "[drill] postgresql_user '" + d.postgresql_user +
                                                  "' is not a user of this host other than root; PostgreSQL's server runs as it");
    return;
  }
  const std::string bin = d.postgresql_bin_dir;
  // A data directory is one major version's.
  const std::string recorded_major = pg_major(meta.value("server_version", ""));
  auto ver = box.run({bin + "/postgres", "--version"}, std::chrono::seconds(30), cancel);
  const std::string drill_major = ver.ok ? pg_major(ver.out) : "";
  if (!recorded_major.empty() &&
      !rep.check("PostgreSQL major version of the drill's server", recorded_major, drill_major.empty() ? ver.why : drill_major,
                 recorded_major == drill_major)) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
             "the backup ran PostgreSQL " + recorded_major + " and '" + bin + "/postgres' is " +
                 (drill_major.empty() ? "not a PostgreSQL server" : "PostgreSQL " + drill_major) +
                 ": set [drill] postgresql_bin_dir to PostgreSQL " + recorded_major + "'s programs");
    return;
  }

  // The root: the restored tree, with the host's libraries, shell and
  // PostgreSQL's shared files read-only at their paths, and the drill's own
  // directory (/.cairn-drill: the fetched WAL, the socket, the settings).
  ConfinedRoot root(restored);
  Confinement& conf = root.conf;
  conf.uid = pw->pw_uid;  // every capability dropped with root
  conf.gid = pw->pw_gid;
  root.host_basics();
  // restore_command runs through /bin/sh; the time zones and PostgreSQL's
  // share directory (timezonesets, initdb's templates).
  for (const char* p : {"/bin", "/usr/bin", "/usr/share/postgresql", "/usr/share/zoneinfo"}) root.bind(p, true);
  const std::string own = "/.cairn-drill";
  if (root.problem.empty()) root.problem = sandbox_mount_point(restored, own, true);
  std::string data_dir = mode == "logical" ? own + "/data" : meta.value("data_dir", "");
  if (std::string why; root.problem.empty() && mode != "logical" && !sandboxed_path(restored, data_dir, &why))
    root.problem = "the snapshot records the data directory '" + data_dir + "', which the drill does not use: " + why;
  if (root.problem.empty() && mode != "logical" && !fs::is_directory(fs::symlink_status(restored + data_dir)))
    root.problem = "the snapshot holds no data directory at '" + data_dir + "'";
  if (!root.problem.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the PostgreSQL drill's sandbox cannot be made: " + root.problem);
    return;
  }
  for (const char* sub : {"/wal", "/run"}) mkdir_p(restored + own + sub, 0700);
  {
    std::ofstream(restored + own + "/postgresql.conf") << "# a restore drill's server: its settings are on its command line (docs/drills.md)\n";
    std::ofstream(restored + own + "/pg_hba.conf") << "# a restore drill's server: its socket is in the sandbox only\nlocal all all trust\n";
    std::ofstream(restored + own + "/pg_ident.conf") << "";
  }
  const std::string su = meta.value("superuser", std::string("postgres"));
  const uid_t uid = pw->pw_uid;
  const gid_t gid = pw->pw_gid;

  auto t = Clock::now();
  phase("start");
  const plan::ParsedTarget target = [] {
    plan::ParsedTarget x;
    x.kind = v1::RecoveryTarget::KIND_IMMEDIATE;
    return x;
  }();
  if (mode == "physical") {
    // The WAL from the backup's start to its consistent point, read out of
    // the repository and checked as a restore reads it.
    const std::string want = meta.value("start_wal", std::string("?")) + " .. " + meta.value("stop_wal", std::string("?"));
    std::string found;
    pg::WalCatalog cat;
    pg::WalPlan wal;
    try {
      auto [code, why] = pg::plan_recovery(ctx, snap, target, restored + own + "/wal/.histories", &cat, &wal);
      if (code == v1::ERROR_CODE_OK) {
        struct Swap {  // the WAL fetch stops with the drill (its deadline included)
          TaskContext& c;
          const std::atomic<bool>* saved;
          ~Swap() { c.cancel = saved; }
        } swap{ctx, ctx.cancel};
        ctx.cancel = cancel;
        std::tie(code, why) = pg::fetch_wal(ctx, cat, wal, snap, target, restored + own + "/wal", ctx.memory_budget, nullptr);
      }
      found = code == v1::ERROR_CODE_OK ? want : without_suffix(why, "; nothing was changed");
    } catch (const Error& e) {
      found = std::string("cannot read the archived WAL: ") + e.what();
    }
    if (!rep.check("WAL to the backup's consistent point in the repository, whole", want, found, found == want)) return;
    struct stat owner {};
    owner.st_uid = uid;
    owner.st_gid = gid;
    try {
      pg::write_recovery_files(restored + data_dir, meta, target, wal.timeline, own + "/wal", owner);
    } catch (const std::exception& e) {
      rep.fail(v1::ERROR_CODE_IO_ERROR, std::string("preparing the recovery in the sandbox failed: ") + e.what());
      return;
    }
  }
  if (mode != "logical") {
    std::error_code ec;
    for (const char* f : {"/postmaster.pid", "/standby.signal"}) fs::remove(restored + data_dir + f, ec);
    give_tree(restored + data_dir, uid, gid);
    ::chmod((restored + data_dir).c_str(), 0700);
    open_path(restored, data_dir);
    if (meta.contains("tablespaces") && meta["tablespaces"].is_array())
      for (const auto& ts : meta["tablespaces"]) {
        const std::string path = ts.is_object() ? ts.value("path", "") : "";
        if (!sandboxed_path(restored, path, nullptr)) continue;  // the server finds no tablespace there: its check says so
        give_tree(restored + path, uid, gid);
        open_path(restored, path);
      }
  }
  give_tree(restored + own, uid, gid);
  open_path(restored, own + "/x");
  if (mode == "logical") {
    auto init = box.run({bin + "/initdb", "-D", data_dir, "-U", su, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"},
                        std::chrono::seconds(300), cancel, {}, &conf);
    if (!rep.check("initdb of the server the dumps are restored into", "done", init.ok ? std::string("done") : init.why, init.ok))
      return;
  }
  // Everything that would reach outside the sandbox or run a command of the
  // backup's choosing is set on the command line, above any file's setting.
  std::vector<std::string> args = {bin + "/postgres", "-D", data_dir};
  for (const std::string& kv :
       {"config_file=" + own + "/postgresql.conf", "hba_file=" + own + "/pg_hba.conf", "ident_file=" + own + "/pg_ident.conf",
        std::string("listen_addresses="), std::string("port=5432"), "unix_socket_directories=" + own + "/run",
        std::string("unix_socket_permissions=0700"), std::string("archive_mode=off"), std::string("archive_command="),
        std::string("archive_cleanup_command="), std::string("recovery_end_command="),
        mode == "physical" ? "restore_command=cp \"" + own + "/wal/%f\" \"%p\"" : std::string("restore_command="),
        std::string("hot_standby=off"), std::string("primary_conninfo="), std::string("primary_slot_name="),
        std::string("synchronous_standby_names="), std::string("shared_preload_libraries="),
        std::string("session_preload_libraries="), std::string("local_preload_libraries="),
        std::string("dynamic_shared_memory_type=mmap"), std::string("huge_pages=off"), std::string("logging_collector=off"),
        std::string("log_destination=stderr"), std::string("ssl=off"), std::string("fsync=off"),
        std::string("restart_after_crash=off"), std::string("default_transaction_read_only=off"), std::string("jit=off"),
        std::string("cluster_name=cairn-drill")})
    args.insert(args.end(), {"-c", kv});
  const std::string log = box.dir() + "/postgresql.log";
  pid_t server = box.spawn(args, log, {}, {}, &conf);
  auto psql = [&](const std::string& db, const std::string& sql, std::chrono::milliseconds timeout) {
    return box.run({bin + "/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", own + "/run", "-p", "5432", "-U", su,
                    "-d", db, "-c", sql},
                   timeout, cancel, {}, &conf);
  };
  auto trimmed = [](std::string x) {
    while (!x.empty() && (x.back() == '\n' || x.back() == ' ')) x.pop_back();
    return x;
  };
  const std::string ready_check = mode == "physical" ? "PostgreSQL recovered to the backup's consistent point and promoted"
                                  : mode == "cold"   ? "PostgreSQL recovered the stopped server's files and serves"
                                                     : "PostgreSQL serving";
  const std::string ready_word = mode == "physical" ? "promoted" : "serving";
  if (!wait_started(d, box, server, log, "PostgreSQL", ready_check, ready_word, cancel, rep, t, [&]() -> std::string {
        auto r = psql("postgres", "SELECT pg_is_in_recovery()", std::chrono::seconds(10));
        if (!r.ok) return r.why;
        return trimmed(r.out) == "f" ? "" : "still in recovery";
      }))
    return;

  t = Clock::now();
  phase("check");
  if (mode == "logical") {
    const std::string dump_dir = meta.value("dump_dir", "");
    give_tree(restored + dump_dir, uid, gid);
    open_path(restored, dump_dir + "/x");
    // Roles and tablespaces; a role that exists already (the superuser
    // initdb made) is an error psql reports and goes past.
    auto g = box.run({bin + "/psql", "-X", "-q", "-h", own + "/run", "-p", "5432", "-U", su, "-d", "postgres", "-f",
                      dump_dir + "/globals.sql"},
                     std::chrono::seconds(d.deadline_seconds), cancel, {}, &conf);
    rep.check("roles and tablespaces (globals.sql) replayed", "done", g.ok ? std::string("done") : g.why, g.ok);
    if (meta.contains("dumps") && meta["dumps"].is_object())
      for (const auto& [file, name] : meta["dumps"].items()) {
        if (!name.is_string() || file.find('/') != std::string::npos) continue;
        // As a restore runs it (--clean: initdb made 'postgres' already).
        auto r = box.run({bin + "/pg_restore", "--clean", "--if-exists", "--create", "--exit-on-error", "-h", own + "/run", "-p", "5432", "-U", su, "-d",
                          "template1", dump_dir + "/" + file},
                         std::chrono::seconds(d.deadline_seconds), cancel, {}, &conf);
        rep.check("database '" + name.get<std::string>() + "' restored from its dump", "restored",
                  r.ok ? std::string("restored") : r.why, r.ok);
      }
  } else if (mode == "physical") {
    auto r = psql("postgres", "SELECT system_identifier::text || ' ' || pg_current_wal_lsn()::text FROM pg_control_system()",
                  std::chrono::seconds(30));
    std::istringstream in(trimmed(r.out));
    std::string sysid, lsn_text;
    in >> sysid >> lsn_text;
    rep.check("database system identifier", meta.value("system_identifier", ""), r.ok ? sysid : r.why,
              r.ok && sysid == meta.value("system_identifier", ""));
    uint64_t lsn = 0, stop_lsn = 0;
    bool parsed = plan::parse_lsn(lsn_text, &lsn) && plan::parse_lsn(meta.value("stop_lsn", ""), &stop_lsn);
    rep.check("WAL position reached, at least the backup's end", ">= " + meta.value("stop_lsn", std::string("?")),
              r.ok ? lsn_text : r.why, parsed && lsn >= stop_lsn);
  }
  // Every database the backup recorded is there (a cold copy records none).
  if (meta.contains("databases") && meta["databases"].is_array()) {
    auto r = psql("postgres", "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname", std::chrono::seconds(30));
    std::set<std::string> have;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) have.insert(line);
    std::vector<std::string> want, found;
    if (meta.contains("databases") && meta["databases"].is_array())
      for (const auto& db : meta["databases"])
        if (db.is_string()) {
          want.push_back(db.get<std::string>());
          if (have.count(db.get<std::string>())) found.push_back(db.get<std::string>());
        }
    rep.check("every database the backup recorded", want, r.ok ? nlohmann::json(found) : nlohmann::json(r.why), r.ok && want == found);
  }
  // pg_amcheck over every relation of every database (amcheck installed in
  // the sandbox's copy where missing).
  auto am = box.run({bin + "/pg_amcheck", "-h", own + "/run", "-p", "5432", "-U", su, "--all", "--install-missing"},
                    std::chrono::seconds(d.deadline_seconds), cancel, {}, &conf);
  std::string am_found = "no corruption";
  if (!am.ok) {
    std::string first;
    std::istringstream in(am.out);
    int n = 0;
    for (std::string line; std::getline(in, line) && n < 4; ++n) first += (first.empty() ? "" : " | ") + line;
    am_found = first.empty() ? am.why : first + " (pg_amcheck " + am.why + ")";
  }
  auto cs = psql("postgres", "SELECT current_setting('data_checksums')", std::chrono::seconds(30));
  rep.check(std::string("pg_amcheck --all (heap and B-tree indexes; page checksums ") +
                (cs.ok && trimmed(cs.out) == "on" ? "on, verified on read)" : "off)"),
            "no corruption", am_found, am.ok);
  rep.phases["check"] = seconds_since(t);
  box.run({bin + "/pg_ctl", "-D", data_dir, "-m", "immediate", "-w", "-t", "30", "stop"}, std::chrono::seconds(40), cancel, {}, &conf);
}

// Kafka (KRaft): every broker's snapshot of the set, restored side by side,
// started as one cluster in the sandbox (docs/drills.md § Kafka). Each node
// keeps its node id, roles and log dirs; its listeners, quorum voters and
// every other setting are the drill's own, on loopback ports of the
// sandbox's namespace.
struct KafkaMember {
  std::string node_id;
  bool broker = true, controller = true;
  std::vector<std::string> log_dirs;  // restored, in the sandbox
  std::string metadata_dir;           // the restored log dir holding __cluster_metadata-0 ("": none)
  nlohmann::json partitions;          // recorded: {"topic-p": [log_start, log_end, high_watermark]}
  bool zookeeper_mode = false;        // metadata in ZooKeeper, not in a KRaft quorum
  std::string chroot;                 // ZooKeeper mode: zookeeper.connect's chroot ("": none or not recorded)
};

// The Kafka release of a libs dir, from its kafka_<scala>-<version>.jar
// ("3.9.1"); "" when it holds none.
std::string kafka_libs_version(const std::string& dir) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    std::string name = e.path().filename().string();
    if (!name.starts_with("kafka_") || !name.ends_with(".jar")) continue;
    name = name.substr(0, name.size() - 4);
    auto dash = name.find('-');
    if (dash == std::string::npos) continue;
    std::string version = name.substr(dash + 1);
    if (!version.empty() && std::isdigit(static_cast<unsigned char>(version[0])) && version.find('-') == std::string::npos)
      return version;
  }
  return {};
}

// The znode paths of ephemeral nodes a ZooKeeper server's `dump` lists.
std::vector<std::string> ephemeral_paths(const std::string& dump) {
  std::vector<std::string> out;
  std::istringstream in(dump);
  for (std::string line; std::getline(in, line);) {
    size_t b = line.find_first_not_of(" \t");
    if (b != std::string::npos && line[b] == '/') out.push_back(line.substr(b, line.find_last_not_of(" \t\r") + 1 - b));
  }
  return out;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : text + ",") {
    if (c == ',') {
      while (!cur.empty() && std::isspace(static_cast<unsigned char>(cur.back()))) cur.pop_back();
      size_t b = 0;
      while (b < cur.size() && std::isspace(static_cast<unsigned char>(cur[b]))) ++b;
      if (b < cur.size()) out.push_back(cur.substr(b));
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

// Reads every partition from its log start to `ends` (its high watermark)
// through the sandbox's brokers, batch CRCs checked by the client. Returns
// per partition the records read, or why it stopped short.
struct PartitionRead {
  int64_t records = 0, bytes = 0, reached = -1;
  std::string error;
};

std::map<std::string, PartitionRead> read_partitions(const std::string& bootstrap,
                                                     const std::map<std::string, std::pair<std::string, int32_t>>& names,
                                                     const std::map<std::string, int64_t>& ends, const std::atomic<bool>* cancel,
                                                     std::chrono::seconds timeout) {
  audit::KafkaClientSettings k;
  k.brokers = bootstrap;
  audit::KafkaConf conf(k, "cairn-drill");
  audit::ErrorTrail trail;
  conf.record_errors(&trail);
  conf.set("group.id", "cairn-drill");  // assigned, never joined or committed
  conf.set("enable.auto.commit", "false");
  conf.set("enable.partition.eof", "true");
  conf.set("check.crcs", "true");
  conf.set("isolation.level", "read_uncommitted");
  conf.set("log_level", "2");
  audit::Rk rk = conf.make(RD_KAFKA_CONSUMER);
  std::map<std::string, PartitionRead> out;
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(int(names.size()));
  size_t open = 0;
  for (const auto& [name, tp] : names) {
    out[name];
    if (ends.at(name) <= 0) continue;
    rd_kafka_topic_partition_list_add(parts, tp.first.c_str(), tp.second)->offset = RD_KAFKA_OFFSET_BEGINNING;
    ++open;
  }
  rd_kafka_assign(rk.get(), parts);
  rd_kafka_topic_partition_list_destroy(parts);
  std::set<std::string> done;
  auto deadline = Clock::now() + timeout;
  while (done.size() < open && Clock::now() < deadline && !(cancel && cancel->load())) {
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 200);
    if (!m) continue;
    std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> hold(m, rd_kafka_message_destroy);
    if (!m->rkt) continue;
    const std::string name = std::string(rd_kafka_topic_name(m->rkt)) + "-" + std::to_string(m->partition);
    auto it = out.find(name);
    if (it == out.end() || done.count(name)) continue;
    PartitionRead& r = it->second;
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      r.reached = std::max(r.reached, m->offset);
      if (r.reached >= ends.at(name)) done.insert(name);
      continue;
    }
    if (m->err) {
      r.error = rd_kafka_message_errstr(m);
      done.insert(name);
      continue;
    }
    ++r.records;
    r.bytes += int64_t(m->len + m->key_len);
    r.reached = std::max(r.reached, m->offset + 1);
    if (r.reached >= ends.at(name)) done.insert(name);
  }
  rd_kafka_assign(rk.get(), nullptr);
  return out;
}

// A Kafka cluster in ZooKeeper mode keeps its topics, partitions' leaders
// and ISR and its cluster id in ZooKeeper: the set's ZooKeeper snapshot is
// started first, on the sandbox's 127.0.0.1:2181, and the brokers wait until
// the backed-up brokers' registrations (ephemeral znodes of their old
// sessions, which the restored server expires after their timeout) are gone,
// as a restore waits (a broker finding its id registered exits). Picks the
// Kafka 3.x jars to run them (`libs`) and zookeeper.connect's chroot.
bool zookeeper_mode_ready(const DrillDecl& d, Sandbox& box, const std::vector<KafkaMember>& members, const repo::Snapshot* zk,
                          const std::string& zk_root, Report& rep, const std::atomic<bool>* cancel, Clock::time_point started,
                          std::string& libs, std::string& chroot) {
  if (!zk) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
             "the brokers are in ZooKeeper mode: their topics' metadata lives in ZooKeeper, and the drill was given no "
             "ZooKeeper snapshot of the set; back up the ensemble in the same set as the brokers");
    return false;
  }
  libs.clear();
  std::string found;
  for (const std::string& dir : {d.kafka_zookeeper_libs_dir, d.kafka_libs_dir}) {
    if (dir.empty()) continue;
    const std::string v = kafka_libs_version(dir);
    found += (found.empty() ? "" : ", ") + dir + (v.empty() ? " (no Kafka jar)" : " (Kafka " + v + ")");
    if (!v.empty() && std::isdigit(static_cast<unsigned char>(v[0])) && std::atoi(v.c_str()) < 4) {
      libs = dir;
      break;
    }
  }
  if (libs.empty()) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "brokers in ZooKeeper mode need Kafka 3.x's jars (Kafka 4 runs KRaft only); found " +
                                                  found + "; declare [drill] kafka_zookeeper_libs_dir");
    return false;
  }
  bool connect_recorded = false;
  for (const auto& m : members) {
    if (m.chroot.empty()) continue;
    if (connect_recorded && m.chroot != chroot) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the brokers name two ZooKeeper chroots ('" + chroot + "', '" + m.chroot + "')");
      return false;
    }
    chroot = m.chroot, connect_recorded = true;
  }
  uint64_t recorded = 0;
  auto st = start_zookeeper(d, box, zk->component, zk_root, rep, cancel, started, &recorded);
  if (!st) return false;
  rep.check("the set's ZooKeeper replayed to its recorded zxid", zookeeper::zxid_hex(recorded), zookeeper::zxid_hex(st->zxid),
            st->zxid >= recorded);
  if (st->zxid < recorded) return false;
  // The backed-up brokers' registrations: <chroot>/brokers/ids/<id> and
  // <chroot>/controller, ephemeral znodes of sessions that ended with them.
  std::set<std::string> member_ids;
  for (const auto& m : members) member_ids.insert(m.node_id);
  std::vector<std::string> held, at_start;
  std::string last_error;
  const auto waited_from = Clock::now();
  auto until = waited_from + std::chrono::seconds(d.start_timeout_seconds);
  for (bool first = true;;) {
    held.clear();
    try {
      std::string dump = zookeeper::four_letter("127.0.0.1:2181", "dump", std::chrono::seconds(5));
      // Only the "ephemeral nodes dump" section names znodes.
      if (auto b = dump.find("ephemeral nodes dump"); b != std::string::npos) dump = dump.substr(b);
      if (auto e = dump.find("Connections dump"); e != std::string::npos) dump = dump.substr(0, e);
      auto paths = ephemeral_paths(dump);
      // zookeeper.connect not recorded (no server.properties in the
      // snapshot): the chroot under which a member's id is registered.
      if (first && !connect_recorded)
        for (const auto& p : paths)
          if (auto k = p.rfind("/brokers/ids/"); k != std::string::npos && member_ids.count(p.substr(k + 13))) chroot = p.substr(0, k);
      for (const auto& p : paths)
        if (p == chroot + "/controller" || p.starts_with(chroot + "/brokers/ids/")) held.push_back(p);
      if (first) at_start = held;
      first = false;  // the first answer: what the restored server held at its start
      last_error.clear();
    } catch (const Error& e) {
      last_error = e.what();
    }
    if ((held.empty() && last_error.empty()) || Clock::now() >= until || (cancel && cancel->load())) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  const bool gone = held.empty() && last_error.empty();
  std::string expired;
  for (const auto& p : at_start) expired += (expired.empty() ? "" : ", ") + p;
  char waited[32];
  std::snprintf(waited, sizeof waited, "%.1f", seconds_since(waited_from));
  rep.check("the backed-up brokers' registrations expired in the restored ZooKeeper", "none left",
            gone ? "none left" + (expired.empty() ? std::string() : std::string(" (") + expired + " expired in " + waited + " s)")
            : last_error.empty() ? std::to_string(held.size()) + " still held after " + std::to_string(d.start_timeout_seconds) +
                                      " s, e.g. " + held.front()
                                : "ZooKeeper's dump: " + last_error,
            gone);
  return gone;
}

void drill_kafka(const DrillDecl& d, Sandbox& box, const std::vector<repo::Snapshot>& snaps,
                 const std::vector<std::string>& roots, const repo::Snapshot* zk, const std::string& zk_root, Report& rep,
                 const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  auto t = Clock::now();
  phase("start");
  std::vector<KafkaMember> members;
  std::string cluster_id;
  std::set<std::string> voters;  // the quorum's node ids, as the brokers' configuration names them
  for (size_t i = 0; i < snaps.size(); ++i) {
    const nlohmann::json& rec = snaps[i].component;
    const std::string node = rec.is_object() ? rec.value("node_id", std::string()) : std::string();
    if (node.empty() || node.size() > 9 || !std::all_of(node.begin(), node.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "snapshot '" + snaps[i].id + "' recorded no Kafka node id ('" + node +
                                                 "'): it is not a broker's backup");
      return;
    }
    const std::string cid = rec.value("cluster_id", std::string());
    if (i == 0) cluster_id = cid;
    else if (cid != cluster_id) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the brokers' snapshots are of two clusters ('" + cluster_id + "', '" + cid + "')");
      return;
    }
    KafkaMember m;
    m.node_id = rec.value("node_id", std::string());
    m.zookeeper_mode = rec.value("metadata_mode", std::string()) == "zookeeper";
    if (i > 0 && m.zookeeper_mode != members.front().zookeeper_mode) {
      rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
               "the set's brokers are in two metadata modes (KRaft and ZooKeeper): a cluster migrating to KRaft is not "
               "drilled; drill a set taken before or after the migration");
      return;
    }
    if (m.zookeeper_mode) m.controller = false;
    m.partitions = rec.contains("partitions") && rec["partitions"].is_object() ? rec["partitions"] : nlohmann::json::object();
    if (rec.contains("log_dirs") && rec["log_dirs"].is_array())
      for (const auto& ld : rec["log_dirs"]) {
        const std::string p = ld.is_object() ? ld.value("path", std::string()) : std::string();
        std::string why;
        auto at = sandboxed_path(roots[i], p, &why);
        if (!at) {
          rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot of node " + m.node_id + " records log dir '" + p +
                                                     "', which the drill does not use: " + why + "; nothing was started");
          return;
        }
        if (!fs::is_directory(fs::symlink_status(*at))) {
          rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot of node " + m.node_id + " holds no log dir '" + p + "'");
          return;
        }
        m.log_dirs.push_back(*at);
        if (fs::is_directory(fs::symlink_status(*at + "/__cluster_metadata-0"))) m.metadata_dir = *at;
      }
    if (m.log_dirs.empty()) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot of node " + m.node_id + " recorded no log dir");
      return;
    }
    // Roles and voters from the configuration the snapshot holds; without
    // one, every node is taken as a combined broker and controller.
    const std::string cfg = rec.value("config_file", std::string());
    std::optional<std::string> cfg_at = cfg.empty() ? std::nullopt : sandboxed_path(roots[i], cfg, nullptr);
    if (cfg_at && fs::is_regular_file(fs::symlink_status(*cfg_at))) {
      auto props = kafka::parse_properties(read_text(*cfg_at));
      if (auto z = props.find("zookeeper.connect"); z != props.end() && z->second.find('/') != std::string::npos) {
        m.chroot = z->second.substr(z->second.find('/'));
        while (m.chroot.size() > 1 && m.chroot.back() == '/') m.chroot.pop_back();
        if (m.chroot == "/") m.chroot.clear();
      }
      if (m.zookeeper_mode) {
        // Its metadata is in ZooKeeper: no roles, no quorum.
      } else if (auto r = props.find("process.roles"); r != props.end()) {
        m.broker = r->second.find("broker") != std::string::npos;
        m.controller = r->second.find("controller") != std::string::npos;
      }
      if (m.zookeeper_mode) {
      } else if (auto v = props.find("controller.quorum.voters"); v != props.end()) {
        for (const auto& voter : split_list(v->second)) voters.insert(voter.substr(0, voter.find('@')));
      } else if (props.count("controller.quorum.bootstrap.servers")) {
        rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
                 "node " + m.node_id +
                     " uses a dynamic KRaft quorum (controller.quorum.bootstrap.servers): its voters and their addresses "
                     "are in the metadata log, which a drill cannot point at the sandbox; only static quorums "
                     "(controller.quorum.voters) are drilled");
        return;
      }
    }
    members.push_back(std::move(m));
  }
  std::set<std::string> ids;
  const bool voters_recorded = !voters.empty();
  for (const auto& m : members) {
    if (!ids.insert(m.node_id).second) {
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "two snapshots of node " + m.node_id + " in one drill");
      return;
    }
    if (!voters_recorded && m.controller) voters.insert(m.node_id);
  }
  const bool zk_mode = members.front().zookeeper_mode;
  std::string libs = d.kafka_libs_dir, chroot;
  if (zk_mode) {
    if (!zookeeper_mode_ready(d, box, members, zk, zk_root, rep, cancel, t, libs, chroot)) return;
  } else {
    size_t voters_here = 0;
    for (const auto& v : voters) voters_here += ids.count(v);
    rep.check("quorum voters among the set's brokers", "a majority of " + std::to_string(voters.size()), voters_here,
              voters_here * 2 > voters.size());
    if (voters_here * 2 <= voters.size()) return;
  }
  // Ports of the sandbox's own loopback: node i listens on 19092 + i
  // (clients) and 19500 + voter index (controllers). A voter the set lacks
  // gets a port nobody answers on.
  std::map<std::string, int> cport;
  int vi = 0;
  for (const auto& v : voters) cport[v] = 19500 + vi++;
  std::string quorum;
  for (const auto& [v, p] : cport) quorum += (quorum.empty() ? "" : ",") + v + "@127.0.0.1:" + std::to_string(p);
  {
    std::ofstream log4j2(box.dir() + "/log4j2.properties");
    log4j2 << "status = warn\nappender.out.type = Console\nappender.out.name = OUT\nappender.out.layout.type = PatternLayout\n"
              "appender.out.layout.pattern = [%d] %p %m (%c)%n\nrootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n";
    std::ofstream log4j(box.dir() + "/log4j.properties");
    log4j << "log4j.rootLogger=INFO, stdout\nlog4j.appender.stdout=org.apache.log4j.ConsoleAppender\n"
             "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout\n"
             "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n\n";
  }
  std::string bootstrap;
  std::vector<std::pair<pid_t, std::string>> servers;  // pid, log
  for (size_t i = 0; i < members.size(); ++i) {
    const KafkaMember& m = members[i];
    const std::string dir = box.dir() + "/node-" + m.node_id;
    mkdir_p(dir, 0700);
    const int port = 19092 + int(i);
    std::string listeners, dirs;
    if (m.broker) listeners = "PLAINTEXT://127.0.0.1:" + std::to_string(port);
    if (m.controller && cport.count(m.node_id))
      listeners += std::string(listeners.empty() ? "" : ",") + "CONTROLLER://127.0.0.1:" + std::to_string(cport[m.node_id]);
    for (const auto& ld : m.log_dirs) dirs += (dirs.empty() ? "" : ",") + ld;
    std::ofstream cfg(dir + "/server.properties");
    if (zk_mode)
      cfg << "broker.id=" << m.node_id << "\nzookeeper.connect=127.0.0.1:2181" << chroot
          << "\nzookeeper.connection.timeout.ms=30000\nlisteners=" << listeners << "\n";
    else
      cfg << "process.roles=" << (m.broker && m.controller ? "broker,controller" : m.broker ? "broker" : "controller") << "\n"
          << "node.id=" << m.node_id << "\ncontroller.quorum.voters=" << quorum << "\nlisteners=" << listeners
          << "\ncontroller.listener.names=CONTROLLER\nlistener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n";
    cfg << (m.broker ? "advertised.listeners=PLAINTEXT://127.0.0.1:" + std::to_string(port) + "\ninter.broker.listener.name=PLAINTEXT\n"
                     : std::string())
        << "log.dirs=" << dirs << "\n"
        << (m.metadata_dir.empty() ? std::string() : "metadata.log.dir=" + m.metadata_dir + "\n")
        // Nothing aged out or cleaned while the drill reads: the broker's
        // retention and cleaner never run in its time.
        << "log.retention.check.interval.ms=86400000\nlog.cleaner.enable=false\nauto.create.topics.enable=false\n"
        << "group.initial.rebalance.delay.ms=0\n";
    if (m.broker) bootstrap += (bootstrap.empty() ? "" : ",") + std::string("127.0.0.1:") + std::to_string(port);
    const std::string log = dir + "/server.log";
    servers.emplace_back(box.spawn_server({d.java, "-Xmx" + std::to_string(d.java_heap_mb) + "m", "-Xms64m", "-XX:-UsePerfData",
                                    "-Djava.io.tmpdir=" + box.tmp_dir(),
                                    "-Dlog4j2.configurationFile=" + box.dir() + "/log4j2.properties",
                                    "-Dlog4j.configuration=file:" + box.dir() + "/log4j.properties", "-Dkafka.logs.dir=" + dir,
                                    "-cp", libs + "/*", "kafka.Kafka", dir + "/server.properties"},
                                   log),
                         log);
  }
  if (bootstrap.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the set holds no broker's snapshot (controllers only): nothing serves the topics");
    return;
  }
  // Every partition the backups recorded (KRaft's own log aside), with the
  // highest high watermark any replica recorded for it: what a whole-cluster
  // restore's verify asks of each broker (agent/drivers/kafka).
  std::map<std::string, int64_t> recorded_hw;
  for (const auto& m : members)
    for (const auto& [name, pos] : m.partitions.items()) {
      if (name.rfind("__cluster_metadata", 0) == 0) continue;
      int64_t hw = pos.is_array() && pos.size() == 3 && pos[2].is_number_integer() ? pos[2].get<int64_t>() : -1;
      auto [it, fresh] = recorded_hw.emplace(name, hw);
      if (!fresh) it->second = std::max(it->second, hw);
    }
  kafka::Settings s;
  s.bootstrap = bootstrap;
  kafka::BrokerClient client(s);
  std::set<int32_t> want_brokers;
  for (const auto& m : members)
    if (m.broker) want_brokers.insert(int32_t(std::stoi(m.node_id)));
  std::optional<kafka::ClusterView> view;
  auto until = Clock::now() + std::chrono::seconds(d.start_timeout_seconds);
  std::string last = "no answer";
  bool ready = false;
  // Brokers register before they know every topic (in ZooKeeper mode the
  // controller sends them the partitions after it is elected): a recorded
  // partition the cluster does not know yet is waited for, up to 30 s once
  // every broker is registered; then the checks name what is missing.
  std::optional<Clock::time_point> all_registered;
  while (Clock::now() < until && !(cancel && cancel->load()) && !ready) {
    for (size_t i = 0; i < servers.size(); ++i) {
      int status = 0;
      if (!box.running(servers[i].first, &status)) {
        const std::string what = "Kafka node " + members[i].node_id;
        rep.fail(v1::ERROR_CODE_VERIFY_FAILED, what + " " + drill_exit_account(d, box, status, servers[i].second, what));
        rep.check("every node starts on the restored log dirs", "running", what + " exited", false);
        return;
      }
    }
    try {
      auto v = client.describe(std::chrono::seconds(5));
      std::set<int32_t> up(v.brokers.begin(), v.brokers.end());
      size_t leaderless = 0, known = 0;
      for (const auto& p : v.partitions)
        if (recorded_hw.count(p.topic + "-" + std::to_string(p.partition))) {
          ++known;
          if (p.leader < 0) ++leaderless;
        }
      const bool registered = std::includes(up.begin(), up.end(), want_brokers.begin(), want_brokers.end());
      if (registered && !all_registered) all_registered = Clock::now();
      if (!registered)
        last = std::to_string(up.size()) + " of " + std::to_string(want_brokers.size()) + " brokers registered";
      else if (leaderless)
        last = std::to_string(leaderless) + " partition(s) without a leader";
      else if (known < recorded_hw.size() && Clock::now() - *all_registered < std::chrono::seconds(30))
        last = std::to_string(recorded_hw.size() - known) + " recorded partition(s) not known to the brokers yet";
      else
        ready = true, view = std::move(v);
    } catch (const Error& e) {
      last = e.what();
    }
    if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  rep.phases["start"] = seconds_since(t);
  rep.check("every broker registered and every partition led", "serving", ready ? "serving" : "not serving: " + last, ready);
  if (!ready) return;
  t = Clock::now();
  phase("check");
  rep.check("cluster id", cluster_id, view->cluster_id, view->cluster_id == cluster_id);
  std::map<std::string, const kafka::PartitionView*> known;
  for (const auto& p : view->partitions) known[p.topic + "-" + std::to_string(p.partition)] = &p;
  std::map<std::string, std::pair<std::string, int32_t>> names;
  std::map<std::string, int64_t> ends;
  std::vector<std::string> unknown, behind;
  for (const auto& [name, hw] : recorded_hw) {
    auto it = known.find(name);
    if (it == known.end()) {
      unknown.push_back(name);
      continue;
    }
    auto [lo, hi] = client.watermarks(it->second->topic, it->second->partition, std::chrono::seconds(10));
    (void)lo;
    if (hi < hw) behind.push_back(name + " (high watermark " + std::to_string(hi) + ", recorded " + std::to_string(hw) + ")");
    names[name] = {it->second->topic, it->second->partition};
    ends[name] = hi;
  }
  rep.check("partitions the backup recorded, known to the cluster", recorded_hw.size(),
            std::to_string(recorded_hw.size() - unknown.size()) + (unknown.empty() ? std::string() : "; missing: " + unknown.front()),
            unknown.empty());
  rep.check("partitions served up to their recorded high watermark", recorded_hw.size() - unknown.size(),
            std::to_string(recorded_hw.size() - unknown.size() - behind.size()) +
                (behind.empty() ? std::string() : "; behind: " + behind.front()),
            behind.empty());
  // Every record up to the high watermark read back, CRCs checked.
  auto read = read_partitions(bootstrap, names, ends, cancel, std::chrono::seconds(std::max<int64_t>(60, d.start_timeout_seconds)));
  int64_t records = 0, bytes = 0;
  std::vector<std::string> short_reads;
  for (const auto& [name, r] : read) {
    records += r.records;
    bytes += r.bytes;
    if (ends[name] > 0 && (!r.error.empty() || r.reached < ends[name]))
      short_reads.push_back(name + (r.error.empty() ? " read to offset " + std::to_string(r.reached) + " of " + std::to_string(ends[name])
                                                    : ": " + r.error));
  }
  rep.check("every record read to the high watermark, CRCs checked", "every partition",
            short_reads.empty() ? std::to_string(records) + " records, " + std::to_string(bytes) + " bytes in " +
                                      std::to_string(read.size()) + " partitions"
                                : std::to_string(short_reads.size()) + " partition(s) short: " + short_reads.front(),
            short_reads.empty());
  rep.phases["check"] = seconds_since(t);
}

}  // namespace drill_internal

std::vector<std::string> drillable_drivers(const DrillDecl& d) {
  std::vector<std::string> out = {"files"};
  if (platform::find_program(d.etcd) && platform::find_program(d.etcdctl)) out.push_back("etcd");
  if (platform::find_program(d.java) && ::access(d.zookeeper_jar.c_str(), R_OK) == 0) out.push_back("zookeeper");
  if (platform::find_program(d.prometheus)) out.push_back("prometheus");
  if (platform::find_program(d.haproxy)) out.push_back("haproxy");
  bool pg = ::getpwnam(d.postgresql_user.c_str()) != nullptr;
  for (const char* tool : {"/postgres", "/psql", "/pg_amcheck", "/pg_restore", "/initdb", "/pg_ctl"})
    pg = pg && ::access((d.postgresql_bin_dir + tool).c_str(), X_OK) == 0;
  if (pg) out.push_back("postgresql");
  bool kafka_jar = !drill_internal::kafka_libs_version(d.kafka_libs_dir).empty() ||
                   (!d.kafka_zookeeper_libs_dir.empty() && !drill_internal::kafka_libs_version(d.kafka_zookeeper_libs_dir).empty());
  if (kafka_jar && platform::find_program(d.java)) out.push_back("kafka");
  return out;
}

std::vector<std::string> clean_drill_root(const DrillDecl& d) {
  using namespace drill_internal;
  std::vector<std::string> removed;
  std::error_code ec;
  // The processes first (every one a drill started is in its cgroup), so
  // that none writes into a sandbox while it is removed.
  // Only this root's: its own prefix, and (from a build before the prefix
  // named the root) cairn-drill-<task> of a sandbox this root holds.
  const std::string mine = drill_cgroup_prefix(d);
  std::set<std::string> legacy;
  for (const auto& e : fs::directory_iterator(d.root, ec)) {
    std::string name = e.path().filename().string();
    if (name.starts_with(kSandboxPrefix) &&
        made_by_a_drill(e.path().string(), name.substr(std::string(kSandboxPrefix).size())))
      legacy.insert(kCgroupPrefix + name.substr(std::string(kSandboxPrefix).size()));
  }
  for (const auto& parent : cgroup_layout().parents)
    for (const auto& e : fs::directory_iterator(parent, ec)) {
      const std::string name = e.path().filename().string();
      if (name.starts_with(mine) || legacy.count(name)) {
        remove_cgroup(e.path().string());
        removed.push_back(e.path().string());
      }
    }
  for (const auto& e : fs::directory_iterator(d.root, ec)) {
    std::string name = e.path().filename().string();
    if (!name.starts_with(kSandboxPrefix)) continue;
    if (!made_by_a_drill(e.path().string(), name.substr(std::string(kSandboxPrefix).size()))) {
      spdlog::warn("drill: '{}' under the drill root is not a sandbox a drill made (no marker naming it); left alone",
                   e.path().string());
      continue;
    }
    std::istringstream pids(read_text(e.path().string() + "/pids"));
    for (unsigned long long pid, start; pids >> pid >> start;)
      if (pid > 1 && start != 0 && process_start_ticks(int(pid)) == start) ::kill(pid_t(pid), SIGKILL);
    remove_tree(e.path().string());
    removed.push_back(e.path().string());
  }
  return removed;
}

namespace {

// The results of the Kafka cluster drills this agent ran since it started,
// by drill and brokers, with the task that ran each.
std::mutex& shared_drills_mu() {
  static std::mutex mu;
  return mu;
}
std::map<std::string, std::pair<std::string, DriverResult>>& shared_drills() {
  static std::map<std::string, std::pair<std::string, DriverResult>> done;
  return done;
}

}  // namespace

DriverResult run_drill(const DrillDecl& d, TaskContext& ctx, const v1::Task& task) {
  using namespace drill_internal;
  DriverResult res;
  Report rep;
  const std::string driver = task.drill_driver();
  auto phase = [&](const std::string& name) {
    if (ctx.progress) ctx.progress(WorkProgress{name == "restore" ? v1::PHASE_RESTORE : v1::PHASE_VERIFY, 0, 0, 0, 0, "drill: " + name});
  };
  auto finish = [&](const std::string& sandbox) {
    res.metadata = {{"drill",
                     {{"driver", driver},
                      {"phases", rep.phases},
                      {"checks", rep.checks},
                      {"sandbox", sandbox},
                      {"verdict", drill_verdict(rep.reasons)}}}};
    res.reasons = std::move(rep.reasons);
    res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_FAILED;
    return res;
  };
  auto drivers = drillable_drivers(d);
  if (std::find(drivers.begin(), drivers.end(), driver) == drivers.end()) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "this agent cannot drill driver '" + driver + "' (it drills " +
                                                  [&] {
                                                    std::string s;
                                                    for (const auto& x : drivers) s += (s.empty() ? "" : ", ") + x;
                                                    return s;
                                                  }() + ")");
    return finish("");
  }
  // A Kafka cluster's brokers: each broker's task names them all; the first
  // runs the cluster, the others report its result (the key: the drill and
  // its brokers). Another agent start runs it again.
  std::vector<std::string> wanted = {task.snapshot().snapshot_id()};
  if (driver == "kafka" && !task.drill_members().empty()) {
    wanted.clear();
    for (const auto& m : task.drill_members()) wanted.push_back(m.snapshot_id());
  }
  // ZooKeeper mode: the set's ZooKeeper snapshot, restored last, beside them.
  const size_t brokers = wanted.size();
  if (driver == "kafka" && task.drill_zookeeper_size() > 1) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "the drill names " + std::to_string(task.drill_zookeeper_size()) +
                                                  " ZooKeeper snapshots for one Kafka cluster; it takes one");
    return finish("");
  }
  if (driver == "kafka" && task.drill_zookeeper_size() == 1) wanted.push_back(task.drill_zookeeper(0).snapshot_id());
  std::string shared_key;
  if (driver == "kafka" && wanted.size() > 1) {
    std::vector<std::string> sorted = wanted;
    std::sort(sorted.begin(), sorted.end());
    shared_key = task.restore_id();
    for (const auto& w : sorted) shared_key += "|" + w;
    std::lock_guard lk(shared_drills_mu());
    auto& done = shared_drills();
    if (auto it = done.find(shared_key); it != done.end()) {
      DriverResult copy = it->second.second;
      copy.metadata["drill"]["shared_with_task"] = it->second.first;
      return copy;
    }
  }
  std::vector<repo::Snapshot> snaps;
  for (const auto& want : wanted) {
    try {
      repo::Snapshot s;
      std::string id = repo::resolve_snapshot(*ctx.repo, want);
      s = repo::load_snapshot(*ctx.repo, id);
      s.id = id;
      snaps.push_back(std::move(s));
    } catch (const Error& e) {
      rep.fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "snapshot '" + want + "' cannot be read: " + e.what());
      return finish("");
    }
  }
  const repo::Snapshot& snap = snaps.front();
  const std::string& snapshot_id = snap.id;
  // The disk budget, before anything is written.
  uint64_t size = 0;
  for (const auto& s : snaps) size += s.summary.value("bytes_total", uint64_t(0));
  // etcd unpacks the snapshot into a data dir beside it; ZooKeeper may
  // write a snapshot of its own at start; Kafka's brokers run on the
  // restored files and write a little beside them.
  uint64_t need = driver == "files"   ? size + (16ull << 20)
                  : driver == "kafka" ? size + snaps.size() * (256ull << 20)
                                      : 2 * size + (128ull << 20);
  // A PostgreSQL base backup also fetches the WAL from its start to its end.
  if (uint64_t start = 0, stop = 0; driver == "postgresql" && snap.component.is_object() &&
                                    plan::parse_lsn(snap.component.value("start_lsn", ""), &start) &&
                                    plan::parse_lsn(snap.component.value("stop_lsn", ""), &stop) && stop >= start)
    need += (stop / postgresql::kWalSegmentSize - start / postgresql::kWalSegmentSize + 2) * postgresql::kWalSegmentSize;
  mkdir_p(d.root, 0700);
  struct statvfs sv {};
  uint64_t free_bytes = ::statvfs(d.root.c_str(), &sv) == 0 ? uint64_t(sv.f_bavail) * sv.f_frsize : 0;
  if (d.disk_budget && need > d.disk_budget) {
    rep.fail(v1::ERROR_CODE_NO_SPACE, "the drill needs about " + repo::byte_size_text(need, repo::ByteText::tenths) +
                                          " in its sandbox, over the [drill] disk_budget of " +
                                          repo::byte_size_text(d.disk_budget, repo::ByteText::tenths) +
                                          "; nothing was restored (raise disk_budget)");
    return finish("");
  }
  if (need > free_bytes) {
    rep.fail(v1::ERROR_CODE_NO_SPACE, "the drill needs about " + repo::byte_size_text(need, repo::ByteText::tenths) + " under '" +
                                          d.root + "', which has " + repo::byte_size_text(free_bytes, repo::ByteText::tenths) +
                                          " free; nothing was restored");
    return finish("");
  }

  // The deadline: everything the drill waits on watches this flag.
  std::atomic<bool> stop{false}, done{false};
  std::atomic<bool> deadline_passed{false};
  std::thread watchdog([&] {
    auto until = Clock::now() + std::chrono::seconds(d.deadline_seconds);
    while (!done.load()) {
      if (Clock::now() >= until) {
        deadline_passed = true;
        stop = true;
      }
      if (ctx.cancel && ctx.cancel->load()) stop = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
  struct JoinAtEnd {
    std::atomic<bool>& done;
    std::thread& t;
    ~JoinAtEnd() {
      done = true;
      t.join();
    }
  } join{done, watchdog};

  Sandbox box(d, task.task_id());
  try {
    if (auto why = box.bound(); !why.empty())
      throw Error(Errc::unsupported, "the drill's sandbox cannot be bounded: " + why +
                                         "; give the agent a writable cgroup hierarchy (systemd: Delegate=yes) or set "
                                         "[drill] memory_max = \"none\" to accept an unbounded sandbox");
    auto t = Clock::now();
    phase("restore");
    Restored restored;
    const std::string root = box.dir() + "/restored";
    std::vector<std::string> roots = {root};
    bool ok = true;
    if (snaps.size() == 1) {
      ok = restore_into(ctx, snapshot_id, root, &stop, rep, restored);
    } else {
      roots.clear();
      for (size_t i = 0; i < snaps.size() && ok; ++i) {
        roots.push_back(root + "/" + std::to_string(i));
        Restored one;
        ok = restore_into(ctx, snaps[i].id, roots.back(), &stop, rep, one);
        restored.files += one.files;
        restored.bytes += one.bytes;
      }
    }
    rep.phases["restore"] = seconds_since(t);
    res.bytes = restored.bytes;
    res.files = restored.files;
    // A server that runs on the host's file system (not confined to the
    // sandbox as root of a mount namespace, as the PostgreSQL and HAProxy
    // drills are) would follow the restored tree's links as root: none may
    // lead out of the sandbox. The files drill follows none.
    if (ok && driver != "files" && driver != "postgresql" && driver != "haproxy") {
      std::vector<std::string> out;
      for (const auto& r : roots)
        for (auto& l : links_out_of(r)) out.push_back(std::move(l));
      if (!out.empty()) {
        std::string list;
        for (size_t i = 0; i < out.size() && i < 5; ++i) list += (i ? ", " : "") + out[i];
        rep.fail(v1::ERROR_CODE_VERIFY_FAILED,
                 "the snapshot holds " + std::to_string(out.size()) + (out.size() >= 10 ? " or more" : "") +
                     " symbolic link(s) leading out of the drill's sandbox (" + list +
                     "); a drill never follows them, and nothing was started");
        ok = false;
      } else {
        rep.check("no symbolic link leads out of the sandbox", 0, 0, true);
      }
    }
    if (ok) {
      if (driver == "files") {
        phase("check");
        drill_files(ctx, snap, root, rep, &stop);
      } else {
        in_own_network([&] {
          try {
            if (driver == "etcd") drill_etcd(d, box, snap, root, rep, &stop, phase);
            else if (driver == "zookeeper") drill_zookeeper(d, box, snap, root, rep, &stop, phase);
            else if (driver == "haproxy") drill_haproxy(d, box, snap, root, rep, &stop, phase);
            else if (driver == "postgresql") drill_postgresql(d, box, ctx, snap, root, rep, &stop, phase);
            else if (driver == "kafka") {
              std::vector<repo::Snapshot> broker_snaps(snaps.begin(), snaps.begin() + long(brokers));
              std::vector<std::string> broker_roots(roots.begin(), roots.begin() + long(brokers));
              drill_kafka(d, box, broker_snaps, broker_roots, brokers < snaps.size() ? &snaps.back() : nullptr,
                          brokers < snaps.size() ? roots.back() : std::string(), rep, &stop, phase);
            }
            else drill_prometheus(d, box, snap, root, rep, &stop, phase);
          } catch (...) {
            box.kill_all();  // while this thread (their parent) still runs
            throw;
          }
          box.kill_all();
        });
      }
    }
  } catch (const Error& e) {
    rep.fail(e.code() == Errc::interrupted   ? v1::ERROR_CODE_CANCELLED
             : e.code() == Errc::unsupported ? v1::ERROR_CODE_UNSUPPORTED_TASK
                                             : v1::ERROR_CODE_VERIFY_FAILED,
             e.what());
  }
  // Stopped: that is the reason, named first; what failed after it (a
  // server asked while it was being stopped) follows.
  if (deadline_passed)
    rep.reasons.insert(rep.reasons.begin(),
                       make_reason(v1::ERROR_CODE_CANCELLED, "the drill ran past its deadline of " +
                                                                 std::to_string(d.deadline_seconds) +
                                                                 " s ([drill] deadline_seconds) and was stopped; it proved "
                                                                 "nothing either way (raise deadline_seconds)"));
  else if (stop)
    rep.reasons.insert(rep.reasons.begin(), make_reason(v1::ERROR_CODE_CANCELLED, "the drill was cancelled"));
  const std::string where = box.dir();
  box.teardown();
  DriverResult out = finish(where);
  if (!shared_key.empty() && !stop) {
    out.metadata["drill"]["brokers"] = brokers;
    std::lock_guard lk(shared_drills_mu());
    auto& done = shared_drills();
    if (done.size() >= 16) done.clear();
    done[shared_key] = {task.task_id(), out};
  }
  return out;
}

}  // namespace cairn::agent
