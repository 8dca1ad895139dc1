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
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>

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
  std::snprintf(buf, sizeof buf, "\"t\":%.6f,\"agents\":%zu,\"registered\":%zu,\"progress_dropped\":%llu,", mono_now(),
                agents, registered, (unsigned long long)c.progress_dropped);
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
    spdlog::warn("fleet-sim: RLIMIT_NOFILE {} is below the ~{} descriptors {} agents need; run more processes",
                 r.rlim_cur, agents * 4 + 64, agents);
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
  app.add_option("--progress-rate", behaviour.progress_per_second, "progress events a second per task")
      ->capture_default_str();
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

  std::vector<zmq::pollitem_t> items;
  std::vector<std::pair<SimAgent*, bool>> owners;  // item -> (agent, is monitor)
  std::vector<uint64_t> generations(fleet.size(), ~uint64_t(0));
  auto last_tick = Clock::now(), last_status = Clock::now();
  std::string input;
  bool stdin_open = true;
  while (!g_stop) {
    bool changed = false;
    for (size_t i = 0; i < fleet.size() && !changed; ++i) changed = generations[i] != fleet[i]->generation();
    if (changed) {
      items.clear();
      owners.clear();
      items.push_back({nullptr, stdin_open ? 0 : -1, ZMQ_POLLIN, 0});
      owners.push_back({nullptr, false});
      for (size_t i = 0; i < fleet.size(); ++i) {
        generations[i] = fleet[i]->generation();
        if (auto* s = fleet[i]->socket()) {
          items.push_back({s->handle(), 0, ZMQ_POLLIN, 0});
          owners.push_back({fleet[i].get(), false});
        }
        if (auto* m = fleet[i]->monitor()) {
          items.push_back({m->handle(), 0, ZMQ_POLLIN, 0});
          owners.push_back({fleet[i].get(), true});
        }
      }
    }
    int n = 0;
    try {
      n = zmq::poll(items.data(), items.size(), std::chrono::milliseconds(10));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
    if (n > 0) {
      if (items[0].revents & ZMQ_POLLIN) {
        char buf[4096];
        ssize_t got = ::read(0, buf, sizeof buf);
        if (got <= 0) {
          stdin_open = false;
          items[0].fd = -1;
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
      // The items stay valid while handling: sockets change only in tick().
      for (size_t i = 1; i < items.size(); ++i) {
        if (!(items[i].revents & ZMQ_POLLIN)) continue;
        auto [agent, is_monitor] = owners[i];
        if (is_monitor) agent->on_monitor();
        else agent->on_socket();
      }
    }
    auto now = Clock::now();
    if (now - last_tick >= std::chrono::milliseconds(10)) {
      last_tick = now;
      for (auto& a : fleet) a->tick(now, behaviour);
    }
    if (now - last_status >= std::chrono::milliseconds(status_ms)) {
      last_status = now;
      size_t reg = 0;
      for (auto& a : fleet) reg += a->registered_approved();
      print_status(counters, fleet.size(), reg);
    }
  }
  size_t reg = 0;
  for (auto& a : fleet) reg += a->registered_approved();
  print_status(counters, fleet.size(), reg);
  fleet.clear();
  ctx.close();
  return 0;
}
