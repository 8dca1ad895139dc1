#include "agent/session.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "agent/drill_task.h"
#include "agent/drivers/registry.h"
#include "agent/wire.h"
#include "cairn/version.h"
#include "common/util/encoding.h"
#include "proto/error_code.h"
#include "proto/protocol.h"

namespace cairn::agent {

namespace v1 = cairn::v1;

namespace {
// A controller that accepts the TCP connection but has not completed the CURVE
// handshake after this long will not: it could not read our HELLO.
constexpr auto kHandshakeWait = std::chrono::seconds(5);
int64_t unix_now() { return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }
// Queued progress beyond this is dropped (only the latest matters); results never are.
constexpr size_t kMaxQueuedProgress = 256;
constexpr size_t kMaxUnackedResults = 1024;
}  // namespace

Session::Session(const AgentConfig& config, const CurveIdentity& identity, PlanGate& gate, TaskRunner& runner, SystemdNotifier* notifier)
    : config_(config),
      identity_(identity),
      gate_(gate),
      runner_(runner),
      notifier_(notifier),
      interval_(config.heartbeat_interval_ms),
      liveness_(config.liveness) {}

Session::~Session() { disconnect(); }

void Session::post(v1::AgentMessage m) {
  std::lock_guard g(out_mu_);
  if (m.has_progress()) {
    size_t n = 0;
    for (const auto& q : outbox_) n += q.has_progress();
    if (n >= kMaxQueuedProgress) return;
  }
  outbox_.push_back(std::move(m));
}

void Session::connect() {
  sock_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
  void* s = sock_->handle();
  int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  int64_t maxmsg = int64_t(proto::kMaxMessageBytes);
  zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  set_reconnect_options(s);
  uint8_t server[32], pub[32], sec[32];
  zmq_z85_decode(server, config_.controller_public_key.c_str());
  zmq_z85_decode(pub, identity_.public_z85.c_str());
  zmq_z85_decode(sec, identity_.secret_z85.c_str());
  zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server, 32);
  zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 32);
  zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 32);
  ::explicit_bzero(sec, sizeof sec);
  std::string mon = "inproc://cairn-agent-monitor-" + std::to_string(++monitor_seq_);
  // Every event asked for here is read in run() (on_monitor): a monitor that
  // nobody drains stalls libzmq's I/O thread.
  if (zmq_socket_monitor(s, mon.c_str(),
                         ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | kLinkEvents |
                             ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) == 0) {
    monitor_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
    monitor_->set(zmq::sockopt::linger, 0);
    monitor_->connect(mon);
  }
  refused_ = false;
  link_.reset();
  tcp_connected_at_.reset();
  handshake_ok_ = false;
  handshake_warned_ = false;
  sock_->connect(config_.controller_endpoint);
  registered_ = false;
  last_recv_ = Clock::now();
  spdlog::info("connecting to controller at '{}'", config_.controller_endpoint);
  send_register();
}

void Session::disconnect() {
  if (sock_) {
    zmq_socket_monitor(sock_->handle(), nullptr, 0);
    sock_->close();
  }
  sock_.reset();
  monitor_.reset();
  registered_ = false;
}

bool Session::send(const v1::AgentMessage& m) {
  if (!sock_) return false;
  auto frames = encode_agent_message(m);
  try {
    auto r = sock_->send(zmq::buffer(frames[0]), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (!r) return false;
    // Once the first frame is in, the rest of the message always goes in with it.
    sock_->send(zmq::buffer(frames[1]), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    spdlog::warn("cannot send to the controller: {}", e.what());
    return false;
  }
  last_send_ = Clock::now();
  return true;
}

void Session::send_register() {
  last_register_ = Clock::now();
  v1::AgentMessage m;
  auto* r = m.mutable_register_();
  r->set_agent_name(config_.name);
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  r->set_hostname(host);
  r->set_agent_version(CAIRN_VERSION);
  r->add_features("restore-steps/2");
  r->add_features("component-drill/1");
  if (config_.drill) {
    r->add_features("drill/1");
    for (const auto& d : drillable_drivers(*config_.drill)) r->add_features("drill:" + d);
  }
  for (const auto& c : config_.components) {
    auto* ci = r->add_components();
    ci->set_name(c.name);
    ci->set_driver(c.driver_name);
    auto caps = c.driver->capabilities();
    ci->set_can_restore(caps.restore);
    const DriverFactory* factory = find_driver(c.driver_name);
    ci->set_has_drill(factory && factory->drill);
    for (const auto& t : caps.restore_targets) ci->add_restore_targets(t);
    ci->set_scope(caps.scope);
    ci->set_cluster_id(caps.cluster_id);
    ci->set_member_id(caps.member_id);
    for (const auto& m : caps.modes) ci->add_modes(m);
    ci->set_restore_stops_service(caps.restore_stops_service);
    ci->set_repository(c.repository);
  }
  for (const auto& [k, v] : config_.labels) (*r->mutable_labels())[k] = v;
  r->set_highest_sequence(gate_.highest_sequence());
  for (const auto& k : gate_.trusted_key_ids()) r->add_trusted_key_ids(k);
  for (const auto& t : runner_.task_ids()) r->add_running_task_ids(t);
  send(m);
}

void Session::send_heartbeat() {
  v1::AgentMessage m;
  auto* h = m.mutable_heartbeat();
  h->set_sent_at(unix_now());
  for (const auto& t : runner_.task_ids()) h->add_running_task_ids(t);
  for (const auto& c : config_.components) c.driver->report_background(*h);
  runner_.report_set_aside(*h);
  send(m);
}

void Session::drain_outbox() {
  // Before the controller answered Register the link may not be up; results
  // wait in the outbox rather than in a socket that a reconnect throws away.
  if (!registered_) return;
  for (;;) {
    v1::AgentMessage m;
    {
      std::lock_guard g(out_mu_);
      if (outbox_.empty()) return;
      m = outbox_.front();
    }
    if (!send(m)) return;
    std::lock_guard g(out_mu_);
    outbox_.pop_front();
    if (m.has_task_result()) {
      std::erase_if(unacked_, [&](const v1::AgentMessage& u) { return u.task_result().task_id() == m.task_result().task_id(); });
      if (unacked_.size() >= kMaxUnackedResults) {
        spdlog::warn("task '{}': its result was never acknowledged and is no longer kept ({} newer ones are)",
                     unacked_.front().task_result().task_id(), unacked_.size());
        unacked_.pop_front();
      }
      unacked_.push_back(std::move(m));
    }
  }
}

void Session::on_plan(const std::string& bytes) {
  auto d = gate_.on_plan(as_bytes(bytes), unix_now());
  v1::AgentMessage ack;
  *ack.mutable_plan_ack() = d.ack;
  if (!d.plan) {
    spdlog::warn("plan refused: {} ({})", d.ack.detail(), proto::error_code_name(d.ack.reason()));
    send(ack);
    return;
  }
  spdlog::info("plan '{}' accepted (sequence {}, {} tasks)", d.plan->plan_id(), d.plan->sequence(), d.plan->tasks_size());
  send(ack);
  for (const auto& t : d.plan->tasks()) {
    Admission a = admit_task(config_, d.plan->plan_id(), t);
    if (a.task) {
      runner_.submit(std::move(*a.task));
      continue;
    }
    spdlog::warn("task '{}' refused: {}", t.task_id(), a.refusal.detail());
    v1::AgentMessage m;
    auto* r = m.mutable_task_result();
    r->set_plan_id(d.plan->plan_id());
    r->set_task_id(t.task_id());
    r->set_outcome(v1::TASK_OUTCOME_FAILED);
    *r->add_reasons() = a.refusal;
    r->set_started_at(unix_now());
    r->set_finished_at(unix_now());
    post(std::move(m));
  }
}

void Session::handle(const std::vector<std::string_view>& frames) {
  last_recv_ = Clock::now();  // anything that came through CURVE is a sign of life
  Decoded d = decode_controller_frames(frames);
  if (!d.message) {
    spdlog::warn("refused a message from the controller: {}", d.detail);
    v1::AgentMessage m;
    m.mutable_error()->set_code(d.error);
    m.mutable_error()->set_detail(d.detail);
    send(m);
    return;
  }
  const v1::ControllerMessage& msg = *d.message;
  switch (msg.body_case()) {
    case v1::ControllerMessage::kRegisterReply: {
      const auto& r = msg.register_reply();
      registered_ = true;
      backoff_.reset();
      // Bounded: a bad value from the controller must not stop the heartbeats.
      if (r.heartbeat_interval_ms() >= 100 && r.heartbeat_interval_ms() <= 60000)
        interval_ = std::chrono::milliseconds(r.heartbeat_interval_ms());
      if (r.liveness() >= 2 && r.liveness() <= 100) liveness_ = r.liveness();
      if (r.state() == v1::AGENT_STATE_PENDING)
        spdlog::warn("registered, waiting for an operator's approval (agent key {})", identity_.public_z85);
      else if (r.state() == v1::AGENT_STATE_REVOKED)
        spdlog::error("the controller reports this agent as revoked");
      else
        spdlog::info("registered as '{}' (agent id '{}')", config_.name, r.agent_id());
      if (r.server_time() > 0 && std::llabs(r.server_time() - unix_now()) > 30)
        spdlog::warn("clock differs from the controller's by {} s; plans may be refused as not yet valid or expired",
                     r.server_time() - unix_now());
      if (notifier_) notifier_->status("connected to " + config_.controller_endpoint);
      // Results the controller may not have (sent on a connection that died,
      // or refused before this Register) go again, ahead of newer messages.
      {
        std::lock_guard g(out_mu_);
        if (!unacked_.empty()) spdlog::info("sending {} task result(s) again that the controller did not acknowledge", unacked_.size());
        for (auto it = unacked_.rbegin(); it != unacked_.rend(); ++it) outbox_.push_front(std::move(*it));
        unacked_.clear();
      }
      break;
    }
    case v1::ControllerMessage::kResultAck: {
      std::lock_guard g(out_mu_);
      for (const auto& id : msg.result_ack().task_ids())
        std::erase_if(unacked_, [&](const v1::AgentMessage& u) { return u.task_result().task_id() == id; });
      break;
    }
    case v1::ControllerMessage::kHeartbeat:
      break;
    case v1::ControllerMessage::kPlan:
      on_plan(msg.plan());
      break;
    case v1::ControllerMessage::kKeyAnnouncement: {
      v1::AgentMessage m;
      *m.mutable_key_ack() = gate_.on_key_announcement(as_bytes(msg.key_announcement()), unix_now());
      if (m.key_ack().accepted())
        spdlog::info("controller key announcement '{}' applied", m.key_ack().announcement_id());
      else
        spdlog::warn("controller key announcement refused: {}", m.key_ack().detail());
      send(m);
      break;
    }
    case v1::ControllerMessage::kError:
      if (msg.error().code() == v1::ERROR_CODE_NOT_REGISTERED) {
        // The controller restarted under this connection: hold the outbox
        // until it answers Register (results refused meanwhile are kept and
        // go again after the reply), and register once, not once for every
        // message it refused.
        registered_ = false;
        if (Clock::now() - last_register_ >= interval_) send_register();
      } else {
        spdlog::warn("controller refused a message: {} ({})", msg.error().detail(), proto::error_code_name(msg.error().code()));
      }
      break;
    default:
      break;
  }
}

void Session::on_monitor() {
  for (int i = 0; i < 16 && monitor_; ++i) {
    zmq::message_t ev, addr;
    if (!monitor_->recv(ev, zmq::recv_flags::dontwait)) return;
    if (ev.more()) (void)monitor_->recv(addr, zmq::recv_flags::dontwait);
    if (ev.size() < 6) continue;
    uint16_t event = 0;
    uint32_t value = 0;
    std::memcpy(&event, ev.data(), 2);
    std::memcpy(&value, static_cast<const char*>(ev.data()) + 2, 4);
    bool back = link_.on_event(event, Clock::now());
    if (event == ZMQ_EVENT_CONNECTED) {
      if (!tcp_connected_at_) tcp_connected_at_ = Clock::now();
      if (back) {
        // The controller is reachable again: a fresh liveness window for
        // the handshake and the reply, and Register now rather than at the
        // next heartbeat.
        last_recv_ = Clock::now();
        spdlog::info("the controller at '{}' accepts connections again; registering", config_.controller_endpoint);
        send_register();
      }
    } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      if (refusal_logged_) spdlog::info("the controller admitted this agent's key");
      if (handshake_warned_) spdlog::info("the CURVE handshake with the controller succeeded");
      refusal_logged_ = false;
      handshake_ok_ = true;
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL || event == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) {
      if (!tcp_connected_at_) tcp_connected_at_ = Clock::now();
      spdlog::debug("CURVE handshake with the controller failed (event {}, status {})", event, value);
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      refused_ = true;
      if (!refusal_logged_)
        spdlog::warn(
            "the controller refused this agent's key (status {}): it waits for an operator's approval "
            "('cairnctl agent approve'), or it was revoked; key {}; retrying every few seconds",
            value, identity_.public_z85);
      refusal_logged_ = true;
    }
  }
}

void Session::check_handshake(Clock::time_point now) {
  if (handshake_ok_ || handshake_warned_ || !tcp_connected_at_ || now - *tcp_connected_at_ < kHandshakeWait) return;
  handshake_warned_ = true;
  spdlog::warn(
      "the controller at '{}' accepted the connection but the CURVE handshake got no answer within {} s: "
      "'controller.public_key' in this agent's configuration may be wrong (it must be the controller's "
      "'controller-curve.pub' from 'cairnctl keys init'), or something other than cairn-controller listens there",
      config_.controller_endpoint, std::chrono::duration_cast<std::chrono::seconds>(kHandshakeWait).count());
  if (notifier_) notifier_->status("no CURVE handshake with the controller; check controller.public_key");
}

void Session::wait_backoff(const std::atomic<bool>& stop) {
  // Refused by ZAP: the controller is up and answers fast; a short fixed delay
  // lets an approval take effect within seconds.
  auto delay = refused_ ? refused_backoff_.next() : backoff_.next();
  spdlog::info("reconnecting in {} ms", delay.count());
  auto until = Clock::now() + delay;
  while (!stop && Clock::now() < until) {
    if (notifier_) notifier_->watchdog();
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

void Session::run(const std::atomic<bool>& stop) {
  connect();
  while (!stop) {
    if (notifier_) notifier_->watchdog();
    zmq::pollitem_t items[2] = {{sock_->handle(), 0, ZMQ_POLLIN, 0}, {monitor_ ? monitor_->handle() : nullptr, 0, ZMQ_POLLIN, 0}};
    zmq::pollitem_t& item = items[0];
    try {
      zmq::poll(items, monitor_ ? 2 : 1, std::chrono::milliseconds(100));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) spdlog::warn("poll failed: {}", e.what());
    }
    if (monitor_ && (items[1].revents & ZMQ_POLLIN)) on_monitor();
    if (item.revents & ZMQ_POLLIN) {
      for (int i = 0; i < 100; ++i) {  // bounded, so heartbeats still go out under a flood
        std::vector<zmq::message_t> parts;
        std::optional<size_t> n;
        try {
          n = zmq::recv_multipart(*sock_, std::back_inserter(parts), zmq::recv_flags::dontwait);
        } catch (const zmq::error_t& e) {
          spdlog::warn("receive failed: {}", e.what());
          break;
        }
        if (!n) break;
        std::vector<std::string_view> frames;
        for (auto& p : parts) frames.emplace_back(static_cast<const char*>(p.data()), p.size());
        try {
          handle(frames);
        } catch (const std::exception& e) {
          // A bug must not take the agent down; the message is dropped.
          spdlog::error("error while handling a controller message: {}", e.what());
        }
      }
    }
    drain_outbox();
    auto now = Clock::now();
    check_handshake(now);
    // While the controller is unreachable nothing is sent: it would only
    // wait in the socket and reach the controller as a burst.
    if (now - last_send_ >= interval_ && !link_.awaiting()) {
      if (registered_)
        send_heartbeat();
      else
        send_register();  // Register doubles as the heartbeat until answered
    }
    bool silent = now - last_recv_ > interval_ * liveness_;
    if (silent && !refused_ && monitor_ && link_.await_if_unreachable(last_recv_)) {
      // No TCP connection since the controller was last heard from: it is
      // down or unreachable. libzmq retries on this socket (at most
      // kReconnectIvlMaxMs apart); a new socket after a backoff would only
      // leave the agent away for up to 48 s after the controller is back.
      spdlog::warn(
          "no word from the controller for {} ms and no connection to '{}'; retrying the connection "
          "every second until it accepts one",
          std::chrono::duration_cast<std::chrono::milliseconds>(now - last_recv_).count(), config_.controller_endpoint);
      if (notifier_) notifier_->status("controller unreachable; retrying the connection");
      registered_ = false;
    }
    if (refused_ || (silent && !link_.awaiting())) {
      if (refused_) {
        if (notifier_) notifier_->status("waiting for an operator's approval");
      } else {
        spdlog::warn(
            "no word from the controller for {} ms{}; reconnecting",
            std::chrono::duration_cast<std::chrono::milliseconds>(now - last_recv_).count(),
            handshake_ok_ || !tcp_connected_at_ ? "" : " (the CURVE handshake got no answer: 'controller.public_key' may be wrong)");
        if (notifier_) notifier_->status("controller unreachable; reconnecting");
      }
      disconnect();
      wait_backoff(stop);
      if (stop) break;
      connect();
    }
  }
  disconnect();
}

}  // namespace cairn::agent
