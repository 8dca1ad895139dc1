#include "agent/platform/process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>

#include "common/util/error.h"

extern char** environ;

namespace cairn::agent::platform {

namespace {

using Clock = std::chrono::steady_clock;

// After the program itself exited, a background process it started (a service
// launched by a start command) may still hold its stdout/stderr: read them at
// most this long more, then close our ends.
constexpr std::chrono::milliseconds kDrainAfterExit{1'000};
constexpr int kPollSliceMs = 50;

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& o) noexcept : fd(o.fd) { o.fd = -1; }
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

struct Pipe {
  Fd r, w;
};

Pipe make_pipe() {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe2", "child process", errno);
  Pipe out;
  out.r.fd = p[0];
  out.w.fd = p[1];
  return out;
}

void set_nonblocking(int fd) {
  int fl = ::fcntl(fd, F_GETFL);
  if (fl >= 0) ::fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

std::vector<std::string> merged_env(const std::vector<std::string>& extra) {
  std::map<std::string, std::string> by_key;  // name -> "name=value", keeps one per name
  std::vector<std::string> order;
  auto put = [&](const std::string& kv) {
    auto eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    if (!by_key.count(key)) order.push_back(key);
    by_key[key] = kv;
  };
  for (char** e = environ; e && *e; ++e) put(*e);
  for (const auto& kv : extra) put(kv);
  std::vector<std::string> out;
  out.reserve(order.size());
  for (const auto& k : order) out.push_back(by_key[k]);
  return out;
}

// Appends what fits under the cap; the rest is counted as dropped.
void append_capped(std::string& dst, const char* data, size_t n, size_t cap, bool& truncated) {
  size_t room = dst.size() < cap ? cap - dst.size() : 0;
  if (n > room) truncated = true;
  dst.append(data, std::min(n, room));
}

std::string last_line(const std::string& s) {
  size_t end = s.find_last_not_of(" \t\r\n");
  if (end == std::string::npos) return {};
  size_t start = s.rfind('\n', end);
  start = start == std::string::npos ? 0 : start + 1;
  std::string line = s.substr(start, end - start + 1);
  if (line.size() > 300) line = line.substr(0, 300) + "...";
  return line;
}

std::string seconds_text(std::chrono::milliseconds d) {
  auto ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms) + " ms";
}

}  // namespace

std::string ProcessResult::describe() const {
  std::string s;
  if (timed_out) {
    s = "killed after " + seconds_text(timeout) + " (timeout)";
  } else if (cancelled) {
    s = "killed because the task was cancelled";
  } else if (signal != 0) {
    const char* name = ::sigabbrev_np(signal);
    s = "killed by signal " + std::to_string(signal) + (name ? std::string(" (SIG") + name + ")" : "");
  } else {
    s = "exited with status " + std::to_string(exit_code);
  }
  std::string line = last_line(err);
  if (line.empty() && !ok()) line = last_line(out);
  if (!line.empty()) s += ": " + line;
  return s;
}

ProcessResult run_process(const ProcessSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) throw Error(Errc::invalid_input, "run a program: no program given (an empty command)");
  const std::string& prog = spec.argv[0];

  Pipe in = make_pipe(), out = make_pipe(), err = make_pipe();

  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  struct Cleanup {
    posix_spawn_file_actions_t* fa;
    posix_spawnattr_t* attr;
    ~Cleanup() {
      posix_spawn_file_actions_destroy(fa);
      posix_spawnattr_destroy(attr);
    }
  } cleanup{&fa, &attr};

  posix_spawn_file_actions_adddup2(&fa, in.r.fd, 0);
  posix_spawn_file_actions_adddup2(&fa, out.w.fd, 1);
  posix_spawn_file_actions_adddup2(&fa, err.w.fd, 2);
  // The agent's sockets, repository files and locks are not the child's.
  posix_spawn_file_actions_addclosefrom_np(&fa, 3);
  if (!spec.cwd.empty()) posix_spawn_file_actions_addchdir_np(&fa, spec.cwd.c_str());

  // Its own process group (so a timeout reaches its children too), default
  // signal dispositions and an empty mask whatever the agent blocks.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<std::string> env_s = merged_env(spec.env);
  std::vector<char*> envp;
  for (const auto& e : env_s) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  pid_t pid = -1;
  // posix_spawnp searches the agent's PATH (not spec.env's) for a bare name.
  int rc = prog.find('/') == std::string::npos ? ::posix_spawnp(&pid, prog.c_str(), &fa, &attr, argv.data(), envp.data())
                                               : ::posix_spawn(&pid, prog.c_str(), &fa, &attr, argv.data(), envp.data());
  if (rc != 0) {
    std::string why = std::strerror(rc);
    if (rc == ENOENT && !spec.cwd.empty())
      why += " (or the working directory '" + spec.cwd + "' does not exist)";
    else if (rc == ENOENT && prog.find('/') == std::string::npos)
      why += " (not found in PATH; give the full path)";
    throw Error(rc == ENOENT ? Errc::not_found : Errc::io, "start '" + prog + "': " + why, rc);
  }

  in.r.reset();
  out.w.reset();
  err.w.reset();
  set_nonblocking(in.w.fd);
  set_nonblocking(out.r.fd);
  set_nonblocking(err.r.fd);
  if (spec.stdin_data.empty()) in.w.reset();

  ProcessResult res;
  res.timeout = spec.timeout;
  size_t stdin_off = 0;
  const auto start = Clock::now();
  const auto deadline = start + spec.timeout;
  Clock::time_point kill_at{};      // when SIGKILL follows the SIGTERM sent
  Clock::time_point drain_until{};  // set once the program has exited
  bool exited = false, term_sent = false, kill_sent = false, status_lost = false;
  int status = 0;

  auto signal_group = [&](int sig) { ::kill(-pid, sig); };
  auto stop_group = [&]() {
    if (!term_sent) {
      signal_group(SIGTERM);
      term_sent = true;
      kill_at = Clock::now() + spec.kill_grace;
    }
  };

  char buf[65536];
  while (true) {
    // Has the program ended? WNOWAIT keeps it a zombie, so its process group
    // id cannot be reused before we signal the rest of the group.
    if (!exited) {
      siginfo_t si{};
      int wr = ::waitid(P_PID, pid, &si, WEXITED | WNOHANG | WNOWAIT);
      if ((wr == 0 && si.si_pid == pid) || (wr < 0 && errno == ECHILD)) {
        exited = true;
        // Killed at the deadline or on cancel: nothing it started survives.
        if (term_sent) signal_group(SIGKILL);
        // ECHILD: reaped behind our back (SIGCHLD ignored); its status is lost.
        if (wr == 0) {
          ::waitpid(pid, &status, 0);
        } else {
          status_lost = true;
        }
        drain_until = Clock::now() + (term_sent ? std::chrono::milliseconds(200) : kDrainAfterExit);
      }
    }
    if (exited && out.r.fd < 0 && err.r.fd < 0) break;
    auto now = Clock::now();
    if (exited && now >= drain_until) break;
    if (!exited) {
      if (!term_sent && spec.cancel && spec.cancel->load()) {
        res.cancelled = true;
        stop_group();
      } else if (!term_sent && now >= deadline) {
        res.timed_out = true;
        stop_group();
      } else if (term_sent && !kill_sent && now >= kill_at) {
        signal_group(SIGKILL);
        kill_sent = true;
      }
    }

    pollfd pfd[3];
    int n = 0;
    int idx_in = -1, idx_out = -1, idx_err = -1;
    if (in.w.fd >= 0 && !exited) {
      idx_in = n;
      pfd[n++] = {in.w.fd, POLLOUT, 0};
    }
    if (out.r.fd >= 0) {
      idx_out = n;
      pfd[n++] = {out.r.fd, POLLIN, 0};
    }
    if (err.r.fd >= 0) {
      idx_err = n;
      pfd[n++] = {err.r.fd, POLLIN, 0};
    }
    int pr = ::poll(pfd, n, kPollSliceMs);
    if (pr < 0 && errno != EINTR) throw_errno("poll", "child '" + prog + "'", errno);
    if (pr <= 0) continue;

    if (idx_in >= 0 && (pfd[idx_in].revents & (POLLOUT | POLLERR | POLLHUP))) {
      // A child that exits without reading its input must not kill the agent
      // with SIGPIPE: block it on this thread and consume a pending one.
      sigset_t pipe_set, old;
      sigemptyset(&pipe_set);
      sigaddset(&pipe_set, SIGPIPE);
      pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
      ssize_t w = ::write(in.w.fd, spec.stdin_data.data() + stdin_off, spec.stdin_data.size() - stdin_off);
      int werr = errno;
      if (w < 0 && werr == EPIPE) {
        timespec zero{0, 0};
        ::sigtimedwait(&pipe_set, nullptr, &zero);
      }
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      if (w > 0) stdin_off += static_cast<size_t>(w);
      if ((w < 0 && werr != EAGAIN && werr != EINTR) || stdin_off == spec.stdin_data.size()) in.w.reset();
    }
    auto drain = [&](int idx, Fd& fd, std::string& dst) {
      if (idx < 0 || !(pfd[idx].revents & (POLLIN | POLLHUP | POLLERR))) return;
      ssize_t r = ::read(fd.fd, buf, sizeof buf);
      if (r > 0)
        append_capped(dst, buf, static_cast<size_t>(r), spec.max_output, res.truncated);
      else if (r == 0 || (errno != EAGAIN && errno != EINTR))
        fd.reset();
    };
    drain(idx_out, out.r, res.out);
    drain(idx_err, err.r, res.err);
  }

  if (status_lost) {
    res.exit_code = -1;
    res.err += "\n(the exit status was lost: the agent ignores SIGCHLD)";
  } else if (WIFEXITED(status)) {
    res.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    res.exit_code = -1;
    res.signal = WTERMSIG(status);
  }
  return res;
}

std::string program_path(const std::string& prog) {
  if (prog.empty()) return {};
  if (prog.find('/') != std::string::npos) return ::access(prog.c_str(), X_OK) == 0 ? prog : std::string();
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/bin:/bin";
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find(':', i);
    if (j == std::string::npos) j = p.size();
    std::string dir = p.substr(i, j - i);
    if (!dir.empty() && ::access((dir + "/" + prog).c_str(), X_OK) == 0) return dir + "/" + prog;
    i = j + 1;
  }
  return {};
}

bool find_program(const std::string& prog) { return !program_path(prog).empty(); }

}  // namespace cairn::agent::platform
