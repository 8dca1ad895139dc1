#pragma once
// A real etcd for the tests: its own data dir in a temp dir, client and peer
// ports free at run time (bound to 0 and released just before etcd takes them;
// a lost race is retried), stopped by its PID. Skipped tests say when the
// binary is missing.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/agent/agent_fixture.h"

extern char** environ;

namespace cairn::agent::etcd::test {

// The agent tests' temporary directory (removed with everything in it).
using cairn::agent::test::TempDir;

using cairn::agent::test::free_port;

struct RunResult {
  int status = -1;
  std::string out;
};

// Runs argv (no shell) with stdin_data; returns exit status and stdout+stderr.
inline RunResult run(const std::vector<std::string>& argv, const std::string& stdin_data = {},
                     const std::vector<std::string>& extra_env = {}) {
  int in[2], out[2];
  if (::pipe(in) != 0 || ::pipe(out) != 0) throw std::runtime_error("pipe");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  posix_spawn_file_actions_adddup2(&fa, out[1], 1);
  posix_spawn_file_actions_adddup2(&fa, out[1], 2);
  posix_spawn_file_actions_addclose(&fa, in[1]);
  posix_spawn_file_actions_addclose(&fa, out[0]);
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) envs.emplace_back(*e);
  for (const auto& e : extra_env) envs.push_back(e);
  std::vector<char*> av, ev;
  for (const auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
  av.push_back(nullptr);
  for (const auto& e : envs) ev.push_back(const_cast<char*>(e.c_str()));
  ev.push_back(nullptr);
  pid_t pid;
  int rc = posix_spawnp(&pid, av[0], &fa, nullptr, av.data(), ev.data());
  posix_spawn_file_actions_destroy(&fa);
  ::close(in[0]);
  ::close(out[1]);
  if (rc != 0) {
    ::close(in[1]);
    ::close(out[0]);
    throw std::runtime_error("cannot start " + argv[0]);
  }
  std::thread writer([&] {
    size_t off = 0;
    while (off < stdin_data.size()) {
      ssize_t n = ::write(in[1], stdin_data.data() + off, stdin_data.size() - off);
      if (n <= 0) break;
      off += size_t(n);
    }
    ::close(in[1]);
  });
  RunResult r;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) r.out.append(buf, size_t(n));
  ::close(out[0]);
  writer.join();
  int st = 0;
  ::waitpid(pid, &st, 0);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

struct EtcdOptions {
  std::vector<std::string> extra_args;  // e.g. TLS flags
  std::string scheme = "http";
  std::vector<std::string> ctl_flags;  // etcdctl's TLS and user flags for this server
};

class EtcdServer {
 public:
  using Options = EtcdOptions;

  explicit EtcdServer(const std::string& dir, Options opt = {}) : dir_(dir), opt_(std::move(opt)) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      client_port_ = free_port();
      peer_port_ = free_port();
      if (start_once()) return;
      stop();
    }
    throw std::runtime_error("etcd did not start; see " + dir_ + "/etcd.log");
  }
  ~EtcdServer() { stop(); }
  EtcdServer(const EtcdServer&) = delete;
  EtcdServer& operator=(const EtcdServer&) = delete;

  std::string endpoint() const { return opt_.scheme + "://127.0.0.1:" + std::to_string(client_port_); }
  pid_t pid() const { return pid_; }

  // etcdctl against this server (ETCDCTL_API=3), plus extra flags (TLS, user).
  RunResult ctl(std::vector<std::string> args, const std::string& stdin_data = {}, const std::vector<std::string>& flags = {}) const {
    std::vector<std::string> argv = {"etcdctl", "--endpoints=" + endpoint()};
    argv.insert(argv.end(), opt_.ctl_flags.begin(), opt_.ctl_flags.end());
    argv.insert(argv.end(), flags.begin(), flags.end());
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, stdin_data, {"ETCDCTL_API=3"});
  }

  void kill(int sig = SIGKILL) {
    if (pid_ > 0) ::kill(pid_, sig);
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  bool start_once() {
    std::string peer = "http://127.0.0.1:" + std::to_string(peer_port_);
    std::string client = endpoint();
    std::vector<std::string> argv = {"etcd",
                                     "--name=test",
                                     "--data-dir=" + dir_ + "/data",
                                     "--listen-client-urls=" + client,
                                     "--advertise-client-urls=" + client,
                                     "--listen-peer-urls=" + peer,
                                     "--initial-advertise-peer-urls=" + peer,
                                     "--initial-cluster=test=" + peer,
                                     "--max-request-bytes=4194304"};
    argv.insert(argv.end(), opt_.extra_args.begin(), opt_.extra_args.end());
    std::vector<char*> av;
    for (auto& a : argv) av.push_back(a.data());
    av.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    std::string log = dir_ + "/etcd.log";
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    int rc = posix_spawnp(&pid_, "etcd", &fa, nullptr, av.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) throw std::runtime_error("cannot start 'etcd' (is etcd-server installed?)");
    // Ready when it answers; gone when it lost a port race.
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      if (ctl({"endpoint", "status"}).status == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

 private:
  std::string dir_;
  Options opt_;
  int client_port_ = 0, peer_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace cairn::agent::etcd::test
