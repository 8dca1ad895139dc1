#include "bench/fleet/sim_agent.h"

#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "agent/wire.h"
#include "common/crypto/crypto.h"
#include "common/plan/verify_plan.h"
#include "common/util/encoding.h"
#include "proto/protocol.h"

namespace cairn::bench {

namespace v1 = cairn::v1;

namespace {

int64_t unix_now() { return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }
int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}
// As agent/session.cc: refused by ZAP, retry after 2-3 s.
constexpr auto kRefusedRetry = std::chrono::milliseconds(2000);
constexpr auto kBackoffCap = std::chrono::milliseconds(32000);
constexpr size_t kMaxUnackedResults = 1024;

}  // namespace

double mono_now() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) * 1e-9;
}

SimAgent::SimAgent(zmq::context_t& ctx, int index, const SimOptions& options, Counters& counters, uint64_t seed)
    : ctx_(ctx), index_(index), options_(options), counters_(counters), rng_(seed) {
  char name[64];
  std::snprintf(name, sizeof name, "%s%05d", options.name_prefix.c_str(), index);
  name_ = name;
  char pub[41] = {}, sec[41] = {};
  if (zmq_curve_keypair(pub, sec) != 0) throw std::runtime_error("cannot make a CURVE keypair (libzmq without CURVE?)");
  public_z85_ = pub;
  secret_z85_ = sec;
  ::explicit_bzero(sec, sizeof sec);
  zmq_z85_decode(public_key_.data(), public_z85_.c_str());
  int64_t now = unix_now();
  for (const auto& k : options.signing_keys) trust_.add(k, now, "config");
}

SimAgent::~SimAgent() {
  disconnect();
  ::explicit_bzero(secret_z85_.data(), secret_z85_.size());
}

void SimAgent::start() { connect(); }

void SimAgent::connect() {
  sock_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::dealer);
  void* s = sock_->handle();
  int linger = 0;
  zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger);
  int64_t maxmsg = int64_t(proto::kMaxMessageBytes);
  zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg);
  agent::set_reconnect_options(s);
  uint8_t server[32], pub[32], sec[32];
  zmq_z85_decode(server, options_.server_key_z85.c_str());
  zmq_z85_decode(pub, public_z85_.c_str());
  zmq_z85_decode(sec, secret_z85_.c_str());
  zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, server, 32);
  zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 32);
  zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 32);
  ::explicit_bzero(sec, sizeof sec);
  std::string mon = "inproc://fleet-sim-" + std::to_string(index_) + "-" + std::to_string(generation_ + 1);
  if (zmq_socket_monitor(s, mon.c_str(), ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | agent::kLinkEvents) == 0) {
    monitor_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::pair);
    monitor_->set(zmq::sockopt::linger, 0);
    monitor_->connect(mon);
  }
  ++generation_;
  refused_ = false;
  link_.reset();
  registered_ = approved_ = false;
  reconnect_at_.reset();
  sock_->connect(options_.endpoint);
  last_recv_ = Clock::now();
  send_register();
}

void SimAgent::disconnect() {
  if (sock_) {
    zmq_socket_monitor(sock_->handle(), nullptr, 0);
    sock_->close();
  }
  sock_.reset();
  monitor_.reset();
  registered_ = approved_ = false;
  ++generation_;
}

bool SimAgent::send(const v1::AgentMessage& m) {
  if (!sock_) return false;
  sent_ = true;
  auto frames = agent::encode_agent_message(m);
  try {
    if (!sock_->send(zmq::buffer(frames[0]), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
    sock_->send(zmq::buffer(frames[1]), zmq::send_flags::none);
  } catch (const zmq::error_t&) {
    return false;
  }
  last_send_ = Clock::now();
  return true;
}

void SimAgent::send_register() {
  last_register_ = Clock::now();
  v1::AgentMessage m;
  auto* r = m.mutable_register_();
  r->set_agent_name(name_);
  r->set_hostname(name_ + ".sim");
  r->set_agent_version("fleet-sim");
  auto* c = r->add_components();
  c->set_name("data");
  c->set_driver("files");
  c->set_can_restore(true);
  c->set_scope("node");
  c->set_repository("main");
  (*r->mutable_labels())["sim"] = "1";
  r->set_highest_sequence(journal_.highest_sequence_any());
  for (const auto& k : trust_.key_ids()) r->add_trusted_key_ids(k);
  for (const auto& t : tasks_) r->add_running_task_ids(t.task_id);
  send(m);
}

void SimAgent::on_socket() {
  for (int i = 0; i < 100 && sock_; ++i) {
    std::vector<zmq::message_t> parts;
    std::optional<size_t> n;
    try {
      n = zmq::recv_multipart(*sock_, std::back_inserter(parts), zmq::recv_flags::dontwait);
    } catch (const zmq::error_t&) {
      return;
    }
    if (!n) return;
    std::vector<std::string_view> frames;
    for (auto& p : parts) frames.emplace_back(static_cast<const char*>(p.data()), p.size());
    handle(frames);
  }
}

void SimAgent::handle(const std::vector<std::string_view>& frames) {
  last_recv_ = Clock::now();
  double t = mono_now();
  agent::Decoded d = agent::decode_controller_frames(frames);
  if (!d.message) {
    counters_.errors.hit(t);
    return;
  }
  const v1::ControllerMessage& msg = *d.message;
  switch (msg.body_case()) {
    case v1::ControllerMessage::kRegisterReply: {
      const auto& r = msg.register_reply();
      registered_ = true;
      approved_ = r.state() == v1::AGENT_STATE_APPROVED;
      (approved_ ? counters_.approved_replies : counters_.pending_replies).hit(t);
      backoff_ = std::chrono::milliseconds(1000);
      if (r.heartbeat_interval_ms() >= 100 && r.heartbeat_interval_ms() <= 60000)
        interval_ = std::chrono::milliseconds(r.heartbeat_interval_ms());
      if (r.liveness() >= 2 && r.liveness() <= 100) liveness_ = r.liveness();
      for (auto it = unacked_.rbegin(); it != unacked_.rend(); ++it) outbox_.push_front(std::move(*it));
      unacked_.clear();
      drain_outbox();
      break;
    }
    case v1::ControllerMessage::kResultAck:
      for (const auto& id : msg.result_ack().task_ids()) {
        auto before = unacked_.size();
        std::erase_if(unacked_, [&](const v1::AgentMessage& u) { return u.task_result().task_id() == id; });
        if (unacked_.size() < before) counters_.result_acks.hit(t);
      }
      break;
    case v1::ControllerMessage::kHeartbeat:
      break;
    case v1::ControllerMessage::kPlan:
      on_plan(msg.plan());
      break;
    case v1::ControllerMessage::kKeyAnnouncement: {
      v1::AgentMessage m;
      auto v = trust_.apply_announcement(as_bytes(msg.key_announcement()), unix_now());
      auto* a = m.mutable_key_ack();
      a->set_accepted(v.ok());
      a->set_reason(v.code());
      if (v.ok())
        a->set_announcement_id(v->announcement_id);
      else
        a->set_detail(v.message());
      send(m);
      counters_.key_acks.hit(t);
      break;
    }
    case v1::ControllerMessage::kError:
      if (msg.error().code() == v1::ERROR_CODE_NOT_REGISTERED) {
        counters_.not_registered.hit(t);
        registered_ = approved_ = false;
        if (Clock::now() - last_register_ >= interval_) send_register();
      } else {
        counters_.errors.hit(t);
      }
      break;
    default:
      break;
  }
}

void SimAgent::on_plan(const std::string& bytes) {
  // Exactly what agent/plan_gate.cc does: the envelope's digest, then
  // accept_plan (signature over PAE before parsing, target, window, replay).
  auto envelope = as_bytes(bytes);
  auto digest = crypto::sha256(envelope);
  v1::AgentMessage m;
  auto* ack = m.mutable_plan_ack();
  ack->set_envelope_digest(digest.data(), digest.size());
  auto v = plan::accept_plan(envelope, trust_, public_key_, unix_now(), journal_);
  double t = mono_now();
  if (!v.ok()) {
    ack->set_accepted(false);
    ack->set_reason(v.code());
    ack->set_detail(v.message());
    counters_.plans_rejected.hit(t);
    send(m);
    return;
  }
  ack->set_accepted(true);
  ack->set_reason(v1::ERROR_CODE_OK);
  ack->set_plan_id(v->plan.plan_id());
  ack->set_sequence(v->plan.sequence());
  counters_.plans.hit(t);
  send(m);
  auto now = Clock::now();
  for (const auto& task : v->plan.tasks()) {
    if (task.component() == "data" && task.kind() == v1::TASK_KIND_BACKUP) {
      tasks_.push_back({v->plan.plan_id(), task.task_id(), now, behaviour_, 0, false});
      continue;
    }
    v1::AgentMessage r;
    auto* tr = r.mutable_task_result();
    tr->set_plan_id(v->plan.plan_id());
    tr->set_task_id(task.task_id());
    tr->set_outcome(v1::TASK_OUTCOME_FAILED);
    auto* why = tr->add_reasons();
    why->set_code(v1::ERROR_CODE_UNSUPPORTED_TASK);
    why->set_detail("the fleet simulator runs backups of component 'data' only");
    tr->set_started_at(unix_now());
    tr->set_finished_at(unix_now());
    outbox_.push_back(std::move(r));
  }
}

void SimAgent::drain_outbox() {
  if (!registered_) return;
  while (!outbox_.empty()) {
    if (!send(outbox_.front())) return;
    auto m = std::move(outbox_.front());
    outbox_.pop_front();
    if (!m.has_task_result()) continue;
    counters_.results.hit(mono_now());
    std::erase_if(unacked_, [&](const v1::AgentMessage& u) { return u.task_result().task_id() == m.task_result().task_id(); });
    if (unacked_.size() >= kMaxUnackedResults) unacked_.pop_front();
    unacked_.push_back(std::move(m));
  }
}

void SimAgent::run_tasks(Clock::time_point now) {
  if (!registered_ || !approved_) return;
  for (auto it = tasks_.begin(); it != tasks_.end();) {
    Task& t = *it;
    auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(now - t.started);
    uint64_t total = uint64_t(t.behaviour.progress_per_second) * t.behaviour.duration_ms / 1000;
    uint64_t due = std::min<uint64_t>(total, uint64_t(t.behaviour.progress_per_second) * uint64_t(elapsed.count()) / 1000);
    for (; t.sent < due; ++t.sent) {
      v1::AgentMessage m;
      auto* p = m.mutable_progress();
      p->set_plan_id(t.plan_id);
      p->set_task_id(t.task_id);
      p->set_phase(v1::PHASE_STREAM);
      p->set_bytes_done(kFinalBytes / (total + 1) * t.sent);
      p->set_bytes_total(kFinalBytes);
      p->set_files_done(t.sent);
      p->set_files_total(kFinalFiles);
      p->set_current_item("file-" + std::to_string(t.sent));
      p->set_at(unix_ms());
      if (send(m))
        counters_.progress.hit(mono_now());
      else
        ++counters_.progress_dropped;
    }
    if (elapsed.count() < int64_t(t.behaviour.duration_ms)) {
      ++it;
      continue;
    }
    if (!t.final_sent) {
      // The last word on the task's progress: what `backup show` must say.
      v1::AgentMessage m;
      auto* p = m.mutable_progress();
      p->set_plan_id(t.plan_id);
      p->set_task_id(t.task_id);
      p->set_phase(v1::PHASE_CLEANUP);
      p->set_bytes_done(kFinalBytes);
      p->set_bytes_total(kFinalBytes);
      p->set_files_done(kFinalFiles);
      p->set_files_total(kFinalFiles);
      p->set_current_item("done");
      p->set_at(unix_ms());
      if (!send(m)) {
        ++it;
        continue;  // the queue is full: again at the next tick, before the result
      }
      counters_.progress.hit(mono_now());
      t.final_sent = true;
    }
    v1::AgentMessage r;
    auto* tr = r.mutable_task_result();
    tr->set_plan_id(t.plan_id);
    tr->set_task_id(t.task_id);
    tr->set_outcome(v1::TASK_OUTCOME_SUCCEEDED);
    auto digest = crypto::sha256(as_bytes(t.task_id));
    tr->set_snapshot_id(to_hex(digest));
    tr->set_manifest_digest(to_hex(digest));
    tr->set_started_at(unix_now() - int64_t(t.behaviour.duration_ms / 1000));
    tr->set_finished_at(unix_now());
    tr->set_bytes(kFinalBytes);
    tr->set_files(kFinalFiles);
    outbox_.push_back(std::move(r));
    it = tasks_.erase(it);
  }
}

void SimAgent::tick(Clock::time_point now, const TaskBehaviour& behaviour) {
  behaviour_ = behaviour;
  if (!sock_) {
    if (reconnect_at_ && now >= *reconnect_at_) connect();
    return;
  }
  run_tasks(now);
  drain_outbox();
  if (now - last_send_ >= interval_ && !link_.awaiting()) {
    if (registered_) {
      v1::AgentMessage m;
      m.mutable_heartbeat()->set_sent_at(unix_now());
      for (const auto& t : tasks_) m.mutable_heartbeat()->add_running_task_ids(t.task_id);
      send(m);
    } else {
      send_register();  // Register doubles as the heartbeat until answered
    }
  }
  // As agent/session.cc: silent with no TCP connection since last heard
  // from, keep the socket (libzmq retries) and register once one is made.
  bool silent = now - last_recv_ > interval_ * liveness_;
  if (silent && !refused_ && monitor_ && link_.await_if_unreachable(last_recv_)) registered_ = approved_ = false;
  if (refused_ || (silent && !link_.awaiting())) {
    std::chrono::milliseconds delay;
    if (refused_) {
      delay = kRefusedRetry + std::chrono::milliseconds(std::uniform_int_distribution<long>(0, 1000)(rng_));
    } else {
      delay = backoff_ + std::chrono::milliseconds(std::uniform_int_distribution<long>(0, backoff_.count() / 2)(rng_));
      backoff_ = std::min(kBackoffCap, backoff_ * 2);
    }
    disconnect();
    reconnect_at_ = now + delay;
  }
}

void SimAgent::on_monitor() {
  for (int i = 0; i < 16 && monitor_; ++i) {
    zmq::message_t ev, addr;
    if (!monitor_->recv(ev, zmq::recv_flags::dontwait)) return;
    if (ev.more()) (void)monitor_->recv(addr, zmq::recv_flags::dontwait);
    if (ev.size() < 6) continue;
    uint16_t event = 0;
    std::memcpy(&event, ev.data(), 2);
    if (link_.on_event(event, Clock::now())) {
      last_recv_ = Clock::now();
      send_register();
    } else if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      counters_.connects.hit(mono_now());
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      if (!refused_) counters_.refusals.hit(mono_now());
      if (!ever_refused_) counters_.first_refusals.hit(mono_now());
      ever_refused_ = true;
      refused_ = true;
    }
  }
}

}  // namespace cairn::bench
