#pragma once
// The agent's link to the controller (docs/protocol.md): a DEALER with CURVE,
// Register after every connect, heartbeats both ways with liveness counting.
// A controller that cannot be reached is retried on the same socket about
// every second (link_state.h); one that is reached but silent gets a new
// socket after a jittered exponential backoff (1 s to 32 s); 2-3 s while the
// controller refuses our key, so an approval takes effect fast. Every incoming
// message is validated; nothing the network sends can stop this loop.
#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "agent/backoff.h"
#include "agent/config.h"
#include "agent/curve_identity.h"
#include "agent/link_state.h"
#include "agent/plan_gate.h"
#include "agent/systemd_notify.h"
#include "agent/task_runner.h"
#include "proto/cairn.pb.h"

namespace cairn::agent {

class Session {
 public:
  Session(const AgentConfig& config, const CurveIdentity& identity, PlanGate& gate, TaskRunner& runner,
          SystemdNotifier* notifier = nullptr);
  ~Session();

  // Runs until stop becomes true.
  void run(const std::atomic<bool>& stop);
  // Thread-safe: queues a message for the controller (task runner).
  void post(cairn::v1::AgentMessage m);

  // Handles one incoming multipart message (exposed for tests).
  void handle(const std::vector<std::string_view>& frames);
  bool registered() const { return registered_; }

 private:
  using Clock = std::chrono::steady_clock;
  void connect();
  void disconnect();
  bool send(const cairn::v1::AgentMessage& m);
  void send_register();
  void send_heartbeat();
  void drain_outbox();
  void on_plan(const std::string& bytes);
  void wait_backoff(const std::atomic<bool>& stop);
  // Socket monitor: tells a controller that refused our key (ZAP: pending
  // approval or revoked) from one that is down, and from one that takes the
  // TCP connection but never completes the CURVE handshake (the usual sign of
  // a wrong controller.public_key: the controller cannot read our HELLO).
  void on_monitor();
  void check_handshake(Clock::time_point now);

  const AgentConfig& config_;
  const CurveIdentity& identity_;
  PlanGate& gate_;
  TaskRunner& runner_;
  SystemdNotifier* notifier_;

  zmq::context_t ctx_{1};
  std::unique_ptr<zmq::socket_t> sock_;
  std::unique_ptr<zmq::socket_t> monitor_;
  int monitor_seq_ = 0;
  // The controller refused our key at the handshake; retry on a short fixed
  // delay (an approval should take effect within seconds) instead of waiting
  // out the liveness timeout and a growing backoff.
  bool refused_ = false;
  bool refusal_logged_ = false;
  // TCP connected on this socket (first time) without a CURVE handshake yet.
  std::optional<Clock::time_point> tcp_connected_at_;
  bool handshake_ok_ = false;
  // Silent past liveness with no TCP connection: the socket is kept (libzmq
  // retries) and nothing is sent until a connection is made (link_state.h).
  LinkState link_;
  bool handshake_warned_ = false;  // for this socket
  bool registered_ = false;
  std::chrono::milliseconds interval_;
  uint32_t liveness_;
  Clock::time_point last_recv_{}, last_send_{}, last_register_{};
  Backoff backoff_;
  Backoff refused_backoff_{std::chrono::seconds(2), std::chrono::seconds(2)};  // 2-3 s

  std::mutex out_mu_;
  std::deque<cairn::v1::AgentMessage> outbox_;
  // Task results sent but not acknowledged (ResultAck), oldest first: sent
  // again after every RegisterReply. Bounded by kMaxUnackedResults.
  std::deque<cairn::v1::AgentMessage> unacked_;
};

}  // namespace cairn::agent
