#pragma once
// One simulated agent of the fleet simulator (bench/fleet/README.md): its own
// CURVE keypair and DEALER, the real protocol (agent/wire.h frames, the
// cairn.v1 messages) and the real plan gate (common/plan accept_plan with a
// trust store and a replay journal), with agent/session.cc's behaviour on the
// link: Register after each connect, heartbeats, liveness, reconnect backoff
// (or libzmq's own retries while the controller is unreachable),
// the 2-3 s retry while the controller's ZAP refuses the key, results kept
// until ResultAck. What it leaves out is the work: a task sends progress at a
// configured rate for a configured time, then reports success.
//
// The trust store and journal are in memory: persisting them (fsync per plan)
// is each real agent's own disk, not the controller's load this measures.
#include <array>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "agent/link_state.h"
#include "common/plan/replay_journal.h"
#include "common/plan/signing_key.h"
#include "common/plan/trust_store.h"
#include "proto/cairn.pb.h"

namespace cairn::bench {

using Clock = std::chrono::steady_clock;

// A count with the monotonic times of its first and latest event: the
// driver (run.py) reads when a phase's last message went or came.
struct Mark {
  uint64_t n = 0;
  double first = 0, last = 0;  // seconds, CLOCK_MONOTONIC (Python's time.monotonic())
  void hit(double t) {
    if (n == 0) first = t;
    ++n;
    last = t;
  }
};

struct Counters {
  // first_refusals: agents refused by ZAP at least once (the controller then lists them as pending).
  Mark connects, refusals, first_refusals, approved_replies, pending_replies, not_registered, plans, plans_rejected, progress, results,
      result_acks, key_acks, errors;
  uint64_t progress_dropped = 0;  // the DEALER's send queue was full (a real agent drops progress too)
};

// What a task does once its plan is accepted; read when the plan arrives.
struct TaskBehaviour {
  uint32_t progress_per_second = 0;
  uint32_t duration_ms = 0;
};

struct SimOptions {
  std::string endpoint;
  std::string server_key_z85;
  std::vector<plan::PublicKey> signing_keys;
  std::string name_prefix = "sim-";
};

// The latest progress of every task says this when the task ends; the
// driver checks that `backup show` says it too.
inline constexpr uint64_t kFinalBytes = 1u << 30;
inline constexpr uint64_t kFinalFiles = 4096;

double mono_now();

class SimAgent {
 public:
  SimAgent(zmq::context_t& ctx, int index, const SimOptions& options, Counters& counters, uint64_t seed);
  ~SimAgent();
  SimAgent(const SimAgent&) = delete;
  SimAgent& operator=(const SimAgent&) = delete;

  void start();
  // Sockets to poll (null while disconnected); generation() changes whenever they do.
  zmq::socket_t* socket() { return sock_.get(); }
  zmq::socket_t* monitor() { return monitor_.get(); }
  uint64_t generation() const { return generation_; }
  // Whether this agent sent since the last call: a send may consume the
  // socket's readiness signal (ZMQ_FD), so the loop checks ZMQ_EVENTS after one.
  bool take_sent() { return std::exchange(sent_, false); }
  // Running a task or holding results: ticked every 10 ms (progress is sent
  // at up to 120 a second); an idle agent's heartbeat, liveness and
  // reconnect need a tick every 100 ms at most.
  bool busy() const { return !tasks_.empty() || !outbox_.empty(); }

  void on_socket();
  void on_monitor();
  // Heartbeats, liveness, reconnects, task progress and results.
  void tick(Clock::time_point now, const TaskBehaviour& behaviour);
  bool registered_approved() const { return registered_ && approved_; }

 private:
  struct Task {
    std::string plan_id, task_id;
    Clock::time_point started;
    TaskBehaviour behaviour;
    uint64_t sent = 0;
    bool final_sent = false;
  };

  void connect();
  void disconnect();
  bool send(const cairn::v1::AgentMessage& m);
  void send_register();
  void handle(const std::vector<std::string_view>& frames);
  void on_plan(const std::string& bytes);
  void drain_outbox();
  void run_tasks(Clock::time_point now);

  zmq::context_t& ctx_;
  int index_;
  const SimOptions& options_;
  Counters& counters_;
  std::mt19937_64 rng_;
  std::string name_;
  std::string public_z85_, secret_z85_;
  std::array<uint8_t, 32> public_key_{};
  plan::TrustStore trust_;
  plan::ReplayJournal journal_;
  TaskBehaviour behaviour_;  // the latest given to tick()

  std::unique_ptr<zmq::socket_t> sock_, monitor_;
  uint64_t generation_ = 0;
  bool sent_ = false;
  bool registered_ = false, approved_ = false, refused_ = false, ever_refused_ = false;
  agent::LinkState link_;  // silent, no TCP connection: the socket is kept (agent/link_state.h)
  std::chrono::milliseconds interval_{2000};
  uint32_t liveness_ = 5;
  Clock::time_point last_recv_{}, last_send_{}, last_register_{};
  std::optional<Clock::time_point> reconnect_at_;
  std::chrono::milliseconds backoff_{1000};

  std::deque<cairn::v1::AgentMessage> outbox_;   // results waiting for a registered link
  std::deque<cairn::v1::AgentMessage> unacked_;  // results sent, no ResultAck yet
  std::vector<Task> tasks_;
};

}  // namespace cairn::bench
