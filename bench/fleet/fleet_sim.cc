// cairn-fleet-sim: N simulated agents in one process against a real
// cairn-controller (bench/fleet/README.md). Each has its own CURVE keypair and
// DEALER and speaks the real protocol; every plan goes through common/plan's
// accept_plan. One poll loop serves them all.
//
// stdout: a JSON line of counters every --status-ms (and on "status"), each
// count with the CLOCK_MONOTONIC times of its first and latest event, so the
// driver can tell when a phase's last message went or came.
// stdin, one command a line:
//   task RATE MS   tasks of plans accepted from now on send RATE progress
//                  events a second for MS milliseconds, then succeed
//   status         print the counters now
//   reset          zero the counters (a phase of the driver starts)
//   quit           stop
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "agent/plan_gate.h"
#include "bench/fleet/sim_agent.h"

using namespace cairn;
using namespace cairn::bench;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

std::string read_first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) throw std::runtime_error("cannot read '" + path + "'");
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r' || line.back() == ' ')) line.pop_back();
  return line;
}

void put(std::string& out, const char* name, const Mark& m) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "\"%s\":[%llu,%.6f,%.6f],", name, (unsigned long long)m.n, m.first, m.last);
  out += buf;
}

void print_status(const Counters& c, size_t agents, size_t registered) {
  std::string out = "{";
  char buf[160];
  std::snprintf(buf, sizeof buf, "\"t\":%.6f,\"agents\":%zu,\"registered\":%zu,\"progress_dropped\":%llu,", mono_now(), agents, registered,
                (unsigned long long)c.progress_dropped);
  out += buf;
  put(out, "connects", c.connects);
  put(out, "refusals", c.refusals);
  put(out, "first_refusals", c.first_refusals);
  put(out, "approved_replies", c.approved_replies);
  put(out, "pending_replies", c.pending_replies);
  put(out, "not_registered", c.not_registered);
  put(out, "plans", c.plans);
  put(out, "plans_rejected", c.plans_rejected);
  put(out, "progress", c.progress);
  put(out, "results", c.results);
  put(out, "result_acks", c.result_acks);
  put(out, "key_acks", c.key_acks);
  put(out, "errors", c.errors);
  out.back() = '}';
  std::printf("%s\n", out.c_str());
  std::fflush(stdout);
}

void raise_fd_limit(size_t agents) {
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  setrlimit(RLIMIT_NOFILE, &r);
  // Per agent: the TCP connection, the DEALER's and the monitor pair's mailboxes.
  if (r.rlim_cur < agents * 4 + 64)
    spdlog::warn("fleet-sim: RLIMIT_NOFILE {} is below the ~{} descriptors {} agents need; run more processes", r.rlim_cur, agents * 4 + 64,
                 agents);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cairn-fleet-sim: simulated agents against a real cairn-controller"};
  SimOptions options;
  std::string server_key_file, signing_keys_file;
  int agents = 100, first = 0, io_threads = 1, status_ms = 100;
  TaskBehaviour behaviour{0, 1000};
  app.add_option("--endpoint", options.endpoint, "the controller's fleet endpoint (tcp://host:port)")->required();
  app.add_option("--controller-key", server_key_file, "the controller's controller-curve.pub")->required();
  app.add_option("--signing-keys", signing_keys_file, "the controller's controller-signing.pub")->required();
  app.add_option("--agents", agents, "simulated agents in this process")->capture_default_str();
  app.add_option("--first", first, "index of the first agent (names are PREFIX%05d)")->capture_default_str();
  app.add_option("--prefix", options.name_prefix, "agent name prefix")->capture_default_str();
  app.add_option("--io-threads", io_threads)->capture_default_str();
  app.add_option("--status-ms", status_ms, "counters on stdout every this often")->capture_default_str();
  app.add_option("--progress-rate", behaviour.progress_per_second, "progress events a second per task")->capture_default_str();
  app.add_option("--task-ms", behaviour.duration_ms, "how long a task runs")->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  options.server_key_z85 = read_first_line(server_key_file);
  options.signing_keys = agent::load_signing_keys(signing_keys_file);
  raise_fd_limit(size_t(agents));
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  signal(SIGPIPE, SIG_IGN);

  zmq::context_t ctx(io_threads);
  // Three sockets per agent (DEALER, the monitor's two ends); libzmq's default is 1023.
  zmq_ctx_set(ctx.handle(), ZMQ_MAX_SOCKETS, agents * 3 + 64);
  Counters counters;
  std::vector<std::unique_ptr<SimAgent>> fleet;
  fleet.reserve(size_t(agents));
  for (int i = 0; i < agents; ++i)
    fleet.push_back(std::make_unique<SimAgent>(ctx, first + i, options, counters, uint64_t(first + i) * 7919 + 1));
  for (auto& a : fleet) a->start();

  // epoll over every socket's ZMQ_FD: a wake-up costs what is ready, not a
  // zmq_poll over 2,000 sockets (which made the simulator, not the
  // controller, the limit on 2 cores). ZMQ_FD only says the socket's state
  // may have changed: ZMQ_EVENTS says whether a message waits, and is read
  // again after every send (a send may consume the signal).
  int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) throw std::runtime_error(std::string("epoll_create1: ") + std::strerror(errno));
  constexpr uint64_t kStdin = ~uint64_t(0);
  auto add_fd = [&](int fd, uint64_t key) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = key;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0 && (errno != EEXIST || epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) != 0))
      throw std::runtime_error(std::string("epoll_ctl: ") + std::strerror(errno));
  };
  add_fd(0, kStdin);
  std::vector<uint64_t> generations(fleet.size(), ~uint64_t(0));
  // (Re)registers agent i's sockets after a connect or disconnect; a closed
  // socket's descriptor leaves the epoll set by itself.
  auto watch = [&](size_t i) {
    if (generations[i] == fleet[i]->generation()) return;
    generations[i] = fleet[i]->generation();
    if (auto* s = fleet[i]->socket()) add_fd(s->get(zmq::sockopt::fd), i);
    if (auto* m = fleet[i]->monitor()) add_fd(m->get(zmq::sockopt::fd), i);  // service(i) reads both
  };
  std::vector<size_t> again;  // agents with input left after a bounded round
  // Handles agent i's waiting input, a bounded number of rounds.
  auto service = [&](size_t i) {
    auto& a = *fleet[i];
    for (int round = 0; round < 8; ++round) {
      bool more = false;
      if (auto* m = a.monitor(); m && (m->get(zmq::sockopt::events) & ZMQ_POLLIN)) {
        a.on_monitor();
        more = true;
      }
      if (auto* s = a.socket(); s && (s->get(zmq::sockopt::events) & ZMQ_POLLIN)) {
        a.on_socket();
        more = true;
      }
      a.take_sent();
      watch(i);
      if (!more) return;
    }
    again.push_back(i);
  };
  for (size_t i = 0; i < fleet.size(); ++i) watch(i);
  auto last_tick = Clock::now(), last_idle_tick = Clock::now(), last_status = Clock::now();
  std::string input;
  std::vector<epoll_event> events(256);
  while (!g_stop) {
    int n = epoll_wait(ep, events.data(), int(events.size()), again.empty() ? 10 : 0);
    if (n < 0 && errno != EINTR) throw std::runtime_error(std::string("epoll_wait: ") + std::strerror(errno));
    std::vector<size_t> ready;
    ready.swap(again);
    for (int k = 0; k < n; ++k) {
      uint64_t key = events[size_t(k)].data.u64;
      if (key != kStdin) {
        ready.push_back(size_t(key));
        continue;
      }
      char buf[4096];
      ssize_t got = ::read(0, buf, sizeof buf);
      if (got <= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, 0, nullptr);
      } else {
        input.append(buf, size_t(got));
      }
      for (size_t nl; (nl = input.find('\n')) != std::string::npos; input.erase(0, nl + 1)) {
        std::istringstream cmd(input.substr(0, nl));
        std::string word;
        cmd >> word;
        if (word == "task") {
          cmd >> behaviour.progress_per_second >> behaviour.duration_ms;
        } else if (word == "status") {
          size_t reg = 0;
          for (auto& a : fleet) reg += a->registered_approved();
          print_status(counters, fleet.size(), reg);
        } else if (word == "reset") {
          counters = Counters{};
        } else if (word == "quit") {
          g_stop = true;
        }
      }
    }
    std::sort(ready.begin(), ready.end());
    ready.erase(std::unique(ready.begin(), ready.end()), ready.end());
    for (size_t i : ready) service(i);
    auto now = Clock::now();
    if (now - last_tick >= std::chrono::milliseconds(10)) {
      last_tick = now;
      // Idle agents every 100 ms: ticking 1,250 of them 100 times a second
      // was a third of an idle simulator's CPU, which on a shared machine is
      // the controller's.
      bool idle_too = now - last_idle_tick >= std::chrono::milliseconds(100);
      if (idle_too) last_idle_tick = now;
      for (size_t i = 0; i < fleet.size(); ++i) {
        if (!idle_too && !fleet[i]->busy()) continue;
        fleet[i]->tick(now, behaviour);
        watch(i);
        if (fleet[i]->take_sent()) service(i);  // its readiness signal may be gone with the send
      }
    }
    if (now - last_status >= std::chrono::milliseconds(status_ms)) {
      last_status = now;
      size_t reg = 0;
      for (auto& a : fleet) reg += a->registered_approved();
      print_status(counters, fleet.size(), reg);
    }
  }
  ::close(ep);
  size_t reg = 0;
  for (auto& a : fleet) reg += a->registered_approved();
  print_status(counters, fleet.size(), reg);
  fleet.clear();
  ctx.close();
  return 0;
}
