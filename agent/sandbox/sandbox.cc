// The drill sandbox (sandbox.h): its directory, cgroup, network namespace,
// confined processes, deadline, disk budget and teardown.
#include "agent/sandbox/sandbox.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <net/if.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "agent/platform/process.h"
#include "common/repo/memory.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent {

namespace fs = std::filesystem;

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

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

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
  for (auto it = fs::recursive_directory_iterator(path, fs::directory_options::none, ec); !ec && it != fs::recursive_directory_iterator();
       it.increment(ec))
    give(it->path().string());
  return failed;
}

}  // namespace drill_internal

using namespace drill_internal;

// The root exists (run_drill made it to measure its free space).
Sandbox::Sandbox(const DrillDecl& d, const std::string& task_id) : decl_(d) {
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

// The memory and CPU bound; the reason it cannot be set ("" when set or
// when the operator declared the sandbox unbounded).
std::string Sandbox::bound() {
  if (!decl_.memory_max) return {};
  CgroupLayout l = cgroup_layout();
  if (l.parents.empty()) return "this host has no cgroup hierarchy with a memory controller";
  for (const auto& parent : l.parents) {
    std::string dir = parent + "/" + drill_cgroup_prefix(decl_) + id_;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) return "cannot make cgroup '" + dir + "': " + std::strerror(errno);
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
pid_t Sandbox::spawn(const std::vector<std::string>& argv, const std::string& log, std::vector<std::string> extra_env,
                     const std::string& err_log, const Confinement* confine) {
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
      if (cover.empty() && (::stat(at.c_str(), &st) != 0 || !(st.st_mode & S_IXOTH) || at == decl_.root))
        cover = at;
      else if (!cover.empty())
        chain.push_back(at);
    }
    if (cover.empty() || cover == dir_)
      throw Error(Errc::invalid_input, "the drill sandbox '" + dir_ + "' lies at no path a drill can cover");
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
Sandbox::Ran Sandbox::run(const std::vector<std::string>& argv, std::chrono::milliseconds timeout, const std::atomic<bool>* cancel,
                          std::vector<std::string> env, const Confinement* confine) {
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
bool Sandbox::running(pid_t pid, int* status) {
  int st = 0;
  pid_t r = ::waitpid(pid, &st, WNOHANG);
  if (r == 0) return true;
  if (status) *status = st;
  pids_.erase(std::remove(pids_.begin(), pids_.end(), pid), pids_.end());
  return false;
}

// How many processes the sandbox's memory limit has killed (0 when its
// cgroup says nothing: none made, or a kernel that does not count them).
uint64_t Sandbox::oom_kills() const {
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
pid_t Sandbox::spawn_server(const std::vector<std::string>& argv, const std::string& log) {
  struct passwd pwd {};
  struct passwd* pw = nullptr;
  char buf[4096];
  if (::getpwnam_r(decl_.user.c_str(), &pwd, buf, sizeof buf, &pw) != 0 || !pw || pw->pw_uid == 0)
    throw Error(Errc::unsupported,
                "[drill] user '" + decl_.user + "' is not a user of this host other than root; a drill's servers run as it");
  Confinement c;
  c.host_readonly = true;
  c.uid = pw->pw_uid;
  c.gid = pw->pw_gid;
  hand_over(c.uid, c.gid);
  return spawn(argv, log, {}, {}, &c);
}

// A directory of the sandbox for a server's temporary files (the host's
// /tmp is read-only to it).
std::string Sandbox::tmp_dir() {
  const std::string tmp = dir_ + "/tmp";
  mkdir_p(tmp, 0700);
  return tmp;
}

// The sandbox's files to the server's user: all but the marker and the
// record of PIDs (the agent's own: a server must not name what the
// agent's clean-up kills). The sandbox's directory stays root's, 0711.
void Sandbox::hand_over(uid_t uid, gid_t gid) {
  ::chmod(dir_.c_str(), 0711);
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name == kSandboxMarker || name == "pids") continue;
    if (auto failed = give_tree(e.path().string(), uid, gid); !failed.empty())
      throw Error(Errc::io, "handing the drill's sandbox to [drill] user '" + decl_.user + "': " + failed);
  }
}

void Sandbox::kill_all() {
  for (pid_t p : pids_) ::kill(-p, SIGKILL), ::kill(p, SIGKILL);
  for (pid_t p : pids_) ::waitpid(p, nullptr, 0);
  pids_.clear();
  for (const auto& cg : cgroups_) remove_cgroup(cg);
  cgroups_.clear();
}

void Sandbox::teardown() {
  kill_all();
  if (!dir_.empty()) remove_tree(dir_);
}

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

std::string disk_refusal(const DrillDecl& d, uint64_t need, uint64_t free_bytes) {
  if (d.disk_budget && need > d.disk_budget)
    return "the drill needs about " + repo::byte_size_text(need, repo::ByteText::tenths) +
           " in its sandbox, over the [drill] disk_budget of " + repo::byte_size_text(d.disk_budget, repo::ByteText::tenths) +
           "; nothing was restored (raise disk_budget)";
  if (need > free_bytes)
    return "the drill needs about " + repo::byte_size_text(need, repo::ByteText::tenths) + " under '" + d.root + "', which has " +
           repo::byte_size_text(free_bytes, repo::ByteText::tenths) + " free; nothing was restored";
  return {};
}

uint64_t drill_root_free_bytes(const DrillDecl& d) {
  mkdir_p(d.root, 0700);
  struct statvfs sv {};
  return ::statvfs(d.root.c_str(), &sv) == 0 ? uint64_t(sv.f_bavail) * sv.f_frsize : 0;
}

Deadline::Deadline(std::chrono::milliseconds limit, const std::atomic<bool>* cancel) {
  watcher_ = std::thread([this, limit, cancel] {
    auto until = Clock::now() + limit;
    while (!done_.load()) {
      if (Clock::now() >= until) {
        passed_ = true;
        stop_ = true;
      }
      if (cancel && cancel->load()) stop_ = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  });
}

Deadline::~Deadline() {
  done_ = true;
  watcher_.join();
}

std::vector<std::string> clean_drill_root(const DrillDecl& d) {
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
    if (name.starts_with(kSandboxPrefix) && made_by_a_drill(e.path().string(), name.substr(std::string(kSandboxPrefix).size())))
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
      spdlog::warn("drill: '{}' under the drill root is not a sandbox a drill made (no marker naming it); left alone", e.path().string());
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

}  // namespace cairn::agent
