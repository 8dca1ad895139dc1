// Agent sessions on the fleet socket. Everything an agent sends is checked
// against the catalog (is this its task, its plan?) before it changes state.
#include "controller/fleet.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "common/crypto/crypto.h"
#include "common/util/error.h"
#include "controller/driver_metadata.h"
#include "controller/ownership.h"
#include "controller/wire.h"
#include "proto/error_code.h"

namespace cairn::controller {
namespace {

using cairn::v1::ErrorCode;
using catalog::TaskState;

int64_t unix_now() { return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }

// Whether the agent trusts (or will, once the announcements sent to it are
// applied) the key that signed a plan. An agent that reported no keys at all
// (an older agent) is not second-guessed.
template <class S>
bool will_trust(const S& s, const std::string& key_id) {
  return s.trusted.empty() || s.trusted.count(key_id) || s.expected.count(key_id);
}

constexpr size_t kMaxOwnedCached = 4096;

constexpr TaskState kInFlight[] = {TaskState::sent, TaskState::accepted, TaskState::running};
constexpr TaskState kOpen[] = {TaskState::pending, TaskState::sent, TaskState::accepted, TaskState::running};

catalog::TaskUpdate failed(ErrorCode code, std::string detail) {
  return catalog::TaskUpdate(TaskState::failed, {{code, std::move(detail), ""}});
}

// The restore targets a component declares, as the catalog keeps them: at
// most kMaxRestoreTargets names of at most kMaxTargetName bytes (docs/protocol.md);
// what lies beyond is dropped with a warning, never stored.
constexpr int kMaxRestoreTargets = 16;
constexpr size_t kMaxTargetName = 128;

std::vector<std::string> declared_targets(const cairn::v1::ComponentInfo& c) {
  std::vector<std::string> out;
  for (const auto& t : c.restore_targets()) {
    if (int(out.size()) == kMaxRestoreTargets || t.empty() || t.size() > kMaxTargetName) {
      spdlog::warn("fleet: component '{}' declares more than {} restore targets or a name of over {} bytes; ignored",
                   c.name().substr(0, kMaxTargetName), kMaxRestoreTargets, kMaxTargetName);
      break;
    }
    out.push_back(t);
  }
  return out;
}

// How a restore's safety task ends, from what the agent reported about the
// safety backup it took (or did not take) inside the restore task.
catalog::TaskUpdate safety_update(const catalog::Task& restore, const cairn::v1::TaskResult& r) {
  if (!r.safety_snapshot_id().empty()) {
    catalog::TaskUpdate su(TaskState::succeeded);
    su.snapshot_id = r.safety_snapshot_id();
    // Snapshot ids are the manifest's content address in the repository.
    su.manifest_digest = r.safety_snapshot_id();
    // What the safety snapshot is (a database's base backup: its timeline
    // and consistent point), as a backup task records it.
    if (!r.safety_component_metadata().empty()) su.component_metadata = r.safety_component_metadata();
    return su;
  }
  std::string detail = r.safety_detail();
  switch (r.safety_outcome()) {
    case cairn::v1::TASK_OUTCOME_SUCCEEDED:
      // Nothing existed to save: nothing was overwritten either. The reason
      // says so (a safety task without a snapshot must carry one).
      return catalog::TaskUpdate(
          TaskState::succeeded,
          {{cairn::v1::ERROR_CODE_OK, detail.empty() ? "nothing existed at the restore's destination to save" : detail, ""}});
    case cairn::v1::TASK_OUTCOME_FAILED:
    case cairn::v1::TASK_OUTCOME_PARTIAL:
      return failed(cairn::v1::ERROR_CODE_SNAPSHOT_FAILED, "the safety backup failed" + (detail.empty() ? std::string() : ": " + detail) +
                                                               "; restore task '" + restore.id + "' overwrote nothing");
    default:
      if (r.outcome() == cairn::v1::TASK_OUTCOME_FAILED)
        return failed(cairn::v1::ERROR_CODE_SNAPSHOT_FAILED,
                      "the safety backup did not run: restore task '" + restore.id + "' failed before it (see its reasons)");
      return failed(cairn::v1::ERROR_CODE_SNAPSHOT_FAILED, "agent reported no safety snapshot with restore task '" + restore.id + "'");
  }
}

}  // namespace

Fleet::Fleet(zmq::socket_t& socket, catalog::Catalog& catalog, const ControllerConfig& config, std::string active_key_id)
    : socket_(socket), catalog_(catalog), config_(config), active_key_id_(std::move(active_key_id)) {
  // After a restart nobody is connected: tasks in flight wait one liveness
  // timeout for their agent to come back and report, then fail.
  auto now = Clock::now();
  catalog_.read([&](const catalog::Tx& tx) {
    for (const auto& a : tx.agents())
      if (!tx.agent_tasks(a.id, kInFlight).empty()) gone_[a.id] = now;
  });
}

std::chrono::milliseconds Fleet::timeout() const {
  return std::chrono::milliseconds(int64_t(config_.heartbeat_interval_ms) * config_.liveness);
}

Fleet::Session* Fleet::session_of(const std::string& agent_id) {
  auto it = by_agent_.find(agent_id);
  if (it == by_agent_.end()) return nullptr;
  auto s = sessions_.find(it->second);
  return s == sessions_.end() ? nullptr : &s->second;
}

bool Fleet::connected(const std::string& agent_id) const {
  auto it = by_agent_.find(agent_id);
  return it != by_agent_.end() && sessions_.count(it->second);
}

bool Fleet::supports(const std::string& agent_id, const std::string& feature) const {
  auto it = by_agent_.find(agent_id);
  if (it == by_agent_.end()) return false;
  auto s = sessions_.find(it->second);
  return s != sessions_.end() && s->second.features.count(feature);
}

size_t Fleet::connected_count() const { return by_agent_.size(); }

bool Fleet::send(Session& s, const cairn::v1::ControllerMessage& m) {
  auto frames = fleet_frames(m);
  try {
    // ROUTER_MANDATORY is set: a vanished or congested peer fails here
    // instead of the message disappearing.
    if (!socket_.send(zmq::buffer(s.routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return false;
    socket_.send(zmq::buffer(frames[0]), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(frames[1]), zmq::send_flags::none);
  } catch (const zmq::error_t& e) {
    spdlog::debug("fleet: cannot send to agent '{}': {}", s.agent_id, e.what());
    return false;
  }
  s.last_send = Clock::now();
  return true;
}

void Fleet::send_error(const std::string& routing_id, ErrorCode code, const std::string& detail) {
  cairn::v1::ControllerMessage m;
  m.mutable_error()->set_code(code);
  m.mutable_error()->set_detail(detail);
  auto frames = fleet_frames(m);
  try {
    if (!socket_.send(zmq::buffer(routing_id), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) return;
    socket_.send(zmq::buffer(frames[0]), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(frames[1]), zmq::send_flags::none);
  } catch (const zmq::error_t&) {
  }
}

void Fleet::cut(Session& s) {
  // libzmq has no call to close one peer of a ROUTER; shutting the TCP
  // socket down makes its I/O thread tear the connection down. The fd was
  // seen on this session's latest message, so it is still that connection.
  if (s.fd >= 0) cutting_[s.routing_id] = {s.fd, Clock::now() + std::chrono::milliseconds(200)};
  if (!s.agent_id.empty()) by_agent_.erase(s.agent_id);
  std::string rid = s.routing_id;  // s lives in sessions_
  sessions_.erase(rid);
}

void Fleet::on_message(std::vector<zmq::message_t>& frames) {
  if (frames.empty()) return;
  std::string routing_id = frames[0].to_string();
  // The ZAP handler put "agent:<z85 key>" here; it cannot be forged by the peer.
  const char* uid = nullptr;
  try {
    uid = frames.size() > 1 ? frames[1].gets("User-Id") : nullptr;
  } catch (const zmq::error_t&) {
  }
  std::string user = uid ? uid : "";
  if (user.rfind("agent:", 0) != 0) return;
  auto key = z85_to_key(std::string_view(user).substr(6));
  if (!key) return;
  int fd = int(frames.size() > 1 ? frames[1].get(ZMQ_SRCFD) : -1);
  std::vector<std::string> body;
  for (size_t i = 1; i < frames.size(); ++i) body.push_back(frames[i].to_string());
  on_frames(routing_id, *key, fd, body);
}

void Fleet::on_frames(const std::string& routing_id, const CurveKey& key, int fd, const std::vector<std::string>& body) {
  if (cutting_.count(routing_id)) return;  // revoked: not one more message is read
  std::string user = "agent:" + key_to_z85(key);
  auto it = sessions_.find(routing_id);
  if (it != sessions_.end() && it->second.key != key) {
    cut(it->second);
    it = sessions_.end();
  }
  if (it == sessions_.end()) {
    Session s;
    s.routing_id = routing_id;
    s.key = key;
    s.last_send = s.last_touch = Clock::time_point{};
    it = sessions_.emplace(routing_id, s).first;
  }
  Session& s = it->second;
  s.last_recv = Clock::now();
  if (fd >= 0) s.fd = fd;

  auto parsed = parse_agent_message(body);
  if (!parsed.ok()) {
    spdlog::info("fleet: refused a message from '{}': {}", s.agent_id.empty() ? user : s.agent_id, parsed.detail);
    send_error(routing_id, parsed.code, parsed.detail);
    return;
  }
  std::string who = s.agent_id.empty() ? user : s.agent_id;  // s may be gone after handle()
  try {
    handle(s, parsed.message);
  } catch (const std::exception& e) {
    // A catalog failure must not take the fleet down; the agent retries.
    spdlog::error("fleet: message from agent '{}' failed: {}", who, e.what());
    send_error(routing_id, cairn::v1::ERROR_CODE_INTERNAL, "controller could not process the message");
  }
}

void Fleet::handle(Session& s, cairn::v1::AgentMessage& m) {
  using M = cairn::v1::AgentMessage;
  if (m.body_case() == M::kRegister) return on_register(s, m.register_());
  if (!s.registered) return send_error(s.routing_id, cairn::v1::ERROR_CODE_NOT_REGISTERED, "send 'register' first");
  if (!s.approved) return send_error(s.routing_id, cairn::v1::ERROR_CODE_AGENT_PENDING, "agent waits for an operator's approval");
  if (!admit(s, m)) return;
  // Liveness in the catalog is for `agent list`; coarse is enough, and
  // written for every agent at once (flush_touches): 10,000 agents would
  // otherwise be 1,000 commits a second.
  if (Clock::now() - s.last_touch > std::chrono::seconds(10)) {
    s.last_touch = Clock::now();
    touched_.push_back(s.agent_id);
  }
  switch (m.body_case()) {
    case M::kHeartbeat:
      for (const auto& w : m.heartbeat().wal_archives()) {
        wal_[{s.agent_id, w.component()}] = w;
        wal_at_[{s.agent_id, w.component()}] = ::time(nullptr);
      }
      if (m.heartbeat().set_aside_reported()) {
        // Text from an agent is data: bounded here, an entry over a bound dropped.
        auto& list = set_aside_[s.agent_id];
        list.clear();
        for (const auto& c : m.heartbeat().set_aside()) {
          if (list.size() >= 256) break;
          if (c.component().size() > 128 || c.path().size() > 4096 || c.data_path().size() > 4096 || c.kind().size() > 16 ||
              c.restore_id().size() > 128 || c.held_by().size() > 128 || c.keep().size() > 32)
            continue;
          list.push_back(c);
        }
      }
      for (const auto& id : m.heartbeat().running_task_ids()) {
        if (!unconfirmed_.erase(id)) continue;
        // A running restore vouches for its safety backup, which runs inside it.
        auto t = catalog_.read([&](const catalog::Tx& tx) { return tx.task(id); });
        if (t && t->safety_task_id) unconfirmed_.erase(*t->safety_task_id);
      }
      return;
    case M::kPlanAck:
      return on_plan_ack(s, m.plan_ack());
    case M::kProgress:
      unconfirmed_.erase(m.progress().task_id());
      progress_[m.progress().task_id()] = {s.agent_id, m.progress()};
      return;
    case M::kTaskResult:
      return on_task_result(s, m.task_result());
    case M::kError:
      spdlog::warn("fleet: agent '{}' refused a message: {} {}", s.agent_id, proto::error_code_name(m.error().code()), m.error().detail());
      return;
    case M::kKeyAck:
      return on_key_ack(s, m.key_ack());
    default:
      return send_error(s.routing_id, cairn::v1::ERROR_CODE_UNEXPECTED_MESSAGE, "unexpected message");
  }
}

void Fleet::on_register(Session& s, const cairn::v1::Register& r) {
  flush_task_results();  // reconcile compares the agent's running tasks with recorded ones
  std::vector<catalog::Component> components;
  for (const auto& c : r.components()) {
    catalog::Component k{c.name(), c.driver(), c.can_restore(), declared_targets(c)};
    k.scope = c.scope() == "cluster" || c.scope() == "member" ? c.scope() : "node";
    k.cluster_id = c.cluster_id();
    k.member_id = c.member_id();
    k.modes.assign(c.modes().begin(), c.modes().end());
    k.restore_stops_service = c.restore_stops_service();
    k.repository = c.repository();
    // An agent that does not say (before "component-drill/1") is taken at
    // its word later: its drill task refuses what it cannot drill.
    k.has_drill = c.has_drill() || std::find(r.features().begin(), r.features().end(), "component-drill/1") == r.features().end();
    components.push_back(std::move(k));
  }
  std::string refusal;
  ErrorCode refusal_code = cairn::v1::ERROR_CODE_OK;
  auto agent = catalog_.transaction("agent:" + r.agent_name(), [&](catalog::Tx& tx) -> std::optional<catalog::Agent> {
    auto a = tx.agent_by_key(s.key);
    if (!a) {
      // Only reachable with enrolment open: ZAP refuses unknown keys otherwise.
      if (!config_.enrolment_open) {
        refusal_code = cairn::v1::ERROR_CODE_AGENT_PENDING;
        refusal = "enrolment is closed";
        return std::nullopt;
      }
      if (tx.agent(r.agent_name())) {
        refusal_code = cairn::v1::ERROR_CODE_UNEXPECTED_MESSAGE;
        refusal = "the name '" + r.agent_name() + "' belongs to another agent's key";
        return std::nullopt;
      }
      tx.enrol_agent(r.agent_name(), s.key, r.hostname(), r.agent_version());
      tx.drop_oldest_pending_agents(config_.max_pending_agents);
      a = tx.agent_by_key(s.key);
    }
    if (a->state == catalog::AgentState::revoked) {
      refusal_code = cairn::v1::ERROR_CODE_AGENT_REVOKED;
      refusal = "agent '" + a->name + "' is revoked";
      return a;
    }
    auto other = tx.agent(r.agent_name());
    if (other && other->id != a->id && a->state == catalog::AgentState::approved && other->state == catalog::AgentState::pending &&
        !other->last_seen_at) {
      // A pending identity that never connected to this controller (made by
      // a catalog rebuild or an import from what its snapshots say: its key
      // may be lost with its host) holds no trust: its name passes to the
      // agent the operator approved, which restores what it backed up
      // (docs/operations.md § Disaster recovery).
      tx.set_agent_state(other->id, catalog::AgentState::revoked);
      tx.audit({"agent.name_reassigned",
                "agent:" + a->id,
                "ok",
                "the name of an identity that never connected passes to an approved agent",
                {{"name", r.agent_name()}, {"from_agent", other->id}}});
      other.reset();
    }
    if (other && other->id != a->id) {
      refusal_code = cairn::v1::ERROR_CODE_UNEXPECTED_MESSAGE;
      refusal = "the name '" + r.agent_name() + "' belongs to another agent's key (agent " + other->id + ", " +
                std::string(catalog::to_string(other->state)) + "); if that host is gone for good, 'cairnctl agent revoke " + other->id +
                "' releases the name and this agent takes it, with what that one backed up";
      return std::nullopt;
    }
    tx.update_agent_identity(a->id, r.agent_name(), r.hostname(), r.agent_version());
    tx.set_agent_components(a->id, components);
    tx.set_agent_labels(a->id, {r.labels().begin(), r.labels().end()});
    tx.set_agent_trusted_keys(a->id, {r.trusted_key_ids().begin(), r.trusted_key_ids().end()});
    if (a->state == catalog::AgentState::approved) tx.raise_plan_sequence(a->id, r.highest_sequence());
    return tx.agent(a->id);
  });
  if (refusal_code != cairn::v1::ERROR_CODE_OK) {
    spdlog::warn("fleet: register of '{}' refused: {}", r.agent_name(), refusal);
    send_error(s.routing_id, refusal_code, refusal);
    if (refusal_code == cairn::v1::ERROR_CODE_AGENT_REVOKED) cut(s);
    return;
  }
  // A second connection of the same agent replaces the first.
  if (auto* old = session_of(agent->id); old && old != &s) {
    by_agent_.erase(agent->id);
    sessions_.erase(old->routing_id);
  }
  s.agent_id = agent->id;
  s.registered = true;
  s.features = std::set<std::string>(r.features().begin(), r.features().end());
  s.approved = agent->state == catalog::AgentState::approved;
  // last_seen_at with the others, within a second (flush_touches): an agent
  // that registers as it was leaves its transaction without a write, so a
  // restarted controller's 10,000 registrations are not 10,000 fsyncs.
  s.last_touch = Clock::now();
  touched_.push_back(agent->id);
  s.trusted = {r.trusted_key_ids().begin(), r.trusted_key_ids().end()};
  by_agent_[agent->id] = s.routing_id;

  cairn::v1::ControllerMessage reply;
  auto* rr = reply.mutable_register_reply();
  rr->set_agent_id(agent->id);
  rr->set_state(s.approved ? cairn::v1::AGENT_STATE_APPROVED : cairn::v1::AGENT_STATE_PENDING);
  rr->set_heartbeat_interval_ms(config_.heartbeat_interval_ms);
  rr->set_liveness(config_.liveness);
  rr->add_controller_key_ids(active_key_id_);
  rr->set_server_time(unix_now());
  send(s, reply);
  spdlog::info("fleet: agent '{}' ({}) registered, {}", agent->name, agent->id, s.approved ? "approved" : "pending");
  if (!s.approved) return;
  gone_.erase(agent->id);
  // Announcements first: plans are signed by the active key, and the agent
  // handles messages in order.
  send_announcements(s);
  cairn::v1::AgentMessage claimed;  // its running tasks pass the same gate as every message
  *claimed.mutable_register_() = r;
  admit(s, claimed);
  reconcile(s, claimed.register_());
  if (on_registered_) {
    try {
      on_registered_(agent->id);
    } catch (const std::exception& e) {  // the agent is served as it was; the next registration tries again
      spdlog::error("fleet: after '{}' registered: {}", agent->name, e.what());
    }
  }
  deliver(agent->id);
}

bool Fleet::admit(Session& s, cairn::v1::AgentMessage& m) {
  using M = cairn::v1::AgentMessage;
  auto claims = claims_of(m);
  if (claims.empty()) return true;
  auto known = [](const std::vector<std::string>& ids, const std::set<std::string>& owned) {
    return std::all_of(ids.begin(), ids.end(), [&](const std::string& id) { return owned.count(id) != 0; });
  };
  if (known(claims.tasks, s.owned_tasks) && known(claims.plans, s.owned_plans)) return true;
  auto o = catalog_.read([&](const catalog::Tx& tx) { return check_ownership(tx, s.agent_id, claims); });
  auto remember = [&](const std::vector<std::string>& ids, std::set<std::string>& owned) {
    for (const auto& id : ids) {
      if (!o.owned(id)) continue;
      if (owned.size() >= kMaxOwnedCached) owned.clear();  // bounded; it only saves reads
      owned.insert(id);
    }
  };
  remember(claims.tasks, s.owned_tasks);
  remember(claims.plans, s.owned_plans);
  if (o.all_owned()) return true;
  if (!o.foreign.empty()) note_foreign(s, m, o.foreign);
  auto keep_owned = [&](google::protobuf::RepeatedPtrField<std::string>* ids) {
    std::vector<std::string> all(ids->begin(), ids->end());
    ids->Clear();
    for (auto& id : all)
      if (o.owned(id)) ids->Add(std::move(id));
  };
  switch (m.body_case()) {
    case M::kHeartbeat:
      // Still a sign of life; only the ids it has no right to name go.
      keep_owned(m.mutable_heartbeat()->mutable_running_task_ids());
      return true;
    case M::kRegister:
      keep_owned(m.mutable_register_()->mutable_running_task_ids());
      return true;
    case M::kPlanAck:
      // An unknown plan id goes on: the envelope digest may still name one
      // of this agent's own plans (on_plan_ack looks only among those).
      return o.foreign.empty();
    case M::kTaskResult: {
      std::string problem = "no task '" + m.task_result().task_id() + "' of this agent";
      if (!m.task_result().plan_id().empty() && !o.owned(m.task_result().plan_id()) && o.owned(m.task_result().task_id()))
        problem = "no plan '" + m.task_result().plan_id() + "' of this agent";
      spdlog::warn("fleet: task result from agent '{}' ignored: {}", s.agent_id, problem);
      send_error(s.routing_id, cairn::v1::ERROR_CODE_UNEXPECTED_MESSAGE, problem);
      return false;
    }
    default:
      // Progress for a task that is not this agent's: dropped.
      spdlog::debug("fleet: progress from agent '{}' for a task it does not own ignored", s.agent_id);
      return false;
  }
}

void Fleet::note_foreign(const Session& s, const cairn::v1::AgentMessage& m, const std::set<std::string>& ids) {
  auto now = Clock::now();
  auto& n = foreign_noted_[s.agent_id];
  if (n.at != Clock::time_point{} && now - n.at < std::chrono::minutes(1)) {
    ++n.suppressed;
    return;
  }
  const auto* field = cairn::v1::AgentMessage::descriptor()->FindFieldByNumber(int(m.body_case()));
  std::string kind = field ? field->name() : "message";
  std::vector<std::string> shown(ids.begin(), ids.end());
  if (shown.size() > 8) shown.resize(8);
  std::string list;
  for (const auto& id : shown) list += (list.empty() ? "'" : ", '") + id + "'";
  spdlog::warn("fleet: agent '{}' sent a '{}' naming {} id(s) of other agents ({}{}); ignored{}", s.agent_id, kind, ids.size(), list,
               ids.size() > shown.size() ? ", ..." : "",
               n.suppressed ? " (" + std::to_string(n.suppressed) + " more such messages in the last minute)" : "");
  try {
    catalog_.transaction("agent:" + s.agent_id, [&](catalog::Tx& tx) {
      tx.audit({"agent.foreign_ids",
                "agent:" + s.agent_id,
                "refused",
                "not_owner",
                {{"message", kind}, {"ids", shown}, {"count", ids.size()}, {"suppressed_before", n.suppressed}}});
    });
  } catch (const std::exception& e) {
    spdlog::error("fleet: cannot audit agent '{}': {}", s.agent_id, e.what());
  }
  n = {now, 0};
}

size_t Fleet::send_announcements(Session& s) {
  s.expected = s.trusted;
  if (s.trusted.count(active_key_id_)) return 0;
  auto anns = catalog_.read([](const catalog::Tx& tx) { return tx.key_announcements(); });
  // Walk the chain the way the agent will: each announcement it can verify
  // makes the next one verifiable. One already sent on this connection is not
  // sent again (the agent retires its signer when it applies it, so a second
  // copy would only be refused), but counts for the walk.
  std::set<std::string>& trusted = s.expected;
  size_t sent = 0;
  int64_t now = unix_now();
  for (const auto& a : anns) {
    if (trusted.count(a.new_key_id) || !trusted.count(a.signed_by)) continue;
    if (s.announced.count(a.id)) {
      trusted.insert(a.new_key_id);
      for (const auto& r : a.retires) trusted.erase(r);
      continue;
    }
    if (a.expires_at <= now) {
      spdlog::error(
          "fleet: agent '{}' trusts only key(s) retired by announcement '{}', which expired; it will refuse every "
          "plan until its signing_keys_file lists the active key '{}'",
          s.agent_id, a.id, active_key_id_);
      break;
    }
    cairn::v1::ControllerMessage m;
    m.set_key_announcement(std::string(a.envelope.begin(), a.envelope.end()));
    if (!send(s, m)) break;  // retried from tick()
    ++sent;
    s.announced.insert(a.id);
    trusted.insert(a.new_key_id);
    for (const auto& r : a.retires) trusted.erase(r);
    spdlog::info("fleet: key announcement '{}' (key '{}') sent to agent '{}'", a.id, a.new_key_id, s.agent_id);
  }
  if (!trusted.count(active_key_id_) && sent > 0)
    spdlog::warn("fleet: agent '{}' trusts none of the keys that lead to the active key '{}'; its plans are held back", s.agent_id,
                 active_key_id_);
  return sent;
}

size_t Fleet::rotated(const std::string& new_key_id) {
  active_key_id_ = new_key_id;
  size_t n = 0;
  for (auto& [rid, s] : sessions_)
    if (s.registered && s.approved && send_announcements(s) > 0) ++n;
  return n;
}

void Fleet::on_key_ack(Session& s, const cairn::v1::KeyAnnouncementAck& a) {
  auto anns = catalog_.read([](const catalog::Tx& tx) { return tx.key_announcements(); });
  const catalog::KeyAnnouncementRecord* ann = nullptr;
  for (const auto& x : anns)
    if (x.id == a.announcement_id()) ann = &x;
  std::set<std::string> trusted = s.trusted;
  if (a.accepted() && ann) {
    trusted.insert(ann->new_key_id);
    for (const auto& r : ann->retires) trusted.erase(r);
  }
  std::string agent_id = s.agent_id;
  catalog_.transaction("agent:" + agent_id, [&](catalog::Tx& tx) {
    if (trusted != s.trusted) tx.set_agent_trusted_keys(agent_id, {trusted.begin(), trusted.end()});
    tx.audit({"agent.key_announcement",
              "agent:" + s.agent_id,
              a.accepted() ? "accepted" : "refused",
              a.accepted() ? "" : proto::error_code_name(a.reason()),
              {{"announcement_id", a.announcement_id()}, {"detail", a.detail()}}});
  });
  s.trusted = std::move(trusted);
  if (a.accepted()) {
    spdlog::info("fleet: agent '{}' accepted key announcement '{}'", s.agent_id, a.announcement_id());
    deliver(agent_id);  // plans held back for this key
  } else
    spdlog::warn("fleet: agent '{}' refused key announcement '{}': {} {}", agent_id, a.announcement_id(),
                 proto::error_code_name(a.reason()), a.detail());
}

void Fleet::reconcile(Session& s, const cairn::v1::Register& r) {
  std::set<std::string> running(r.running_task_ids().begin(), r.running_task_ids().end());
  std::vector<std::string> resend;
  catalog_.transaction("agent:" + s.agent_id, [&](catalog::Tx& tx) {
    auto in_flight = tx.agent_tasks(s.agent_id, kInFlight);
    // A restore's safety backup runs inside the restore task: it is running
    // while its restore is (the agent never names it).
    for (const auto& t : in_flight)
      if (running.count(t.id) && t.safety_task_id) running.insert(*t.safety_task_id);
    for (const auto& t : in_flight) {
      if (running.count(t.id)) {
        // The agent runs it: a lost PlanAck or a controller restart left it behind.
        if (t.state == TaskState::sent) tx.update_task(t.id, catalog::TaskUpdate(TaskState::accepted));
        continue;
      }
      auto plan = t.plan_id ? tx.plan(*t.plan_id) : std::nullopt;
      if (t.state == TaskState::sent && plan && plan->state == "issued" && plan->sequence > r.highest_sequence() &&
          plan->expires_at > tx.now() && !plan->envelope.empty() && will_trust(s, plan->key_id)) {
        // Never accepted by the agent (its journal is below this sequence): send again.
        resend.push_back(plan->id);
        continue;
      }
      // Finished or forgotten while we were apart: wait one timeout for a result.
      unconfirmed_.emplace(t.id, Clock::now() + timeout());
    }
  });
  std::sort(resend.begin(), resend.end());
  resend.erase(std::unique(resend.begin(), resend.end()), resend.end());
  for (const auto& id : resend) {
    auto plan = catalog_.read([&](const catalog::Tx& tx) { return tx.plan(id); });
    cairn::v1::ControllerMessage m;
    m.set_plan(std::string(plan->envelope.begin(), plan->envelope.end()));
    send(s, m);
  }
}

void Fleet::deliver(std::vector<std::string> agent_ids) {
  std::sort(agent_ids.begin(), agent_ids.end());
  agent_ids.erase(std::unique(agent_ids.begin(), agent_ids.end()), agent_ids.end());
  std::vector<Session*> ready;
  for (const auto& id : agent_ids)
    if (Session* s = session_of(id); s && s->registered && s->approved) ready.push_back(s);
  if (ready.empty()) return;
  auto plans = catalog_.read([&](const catalog::Tx& tx) {
    std::vector<std::vector<catalog::PlanRecord>> out;
    for (const Session* s : ready) out.push_back(tx.undelivered_plans(s->agent_id));
    return out;
  });
  std::vector<std::string> sent;
  for (size_t i = 0; i < ready.size(); ++i) {
    Session& s = *ready[i];
    for (const auto& p : plans[i]) {
      // Signed by a key the agent does not trust yet: it waits for the
      // announcement's acknowledgement (on_key_ack delivers again).
      if (!will_trust(s, p.key_id)) continue;
      cairn::v1::ControllerMessage m;
      m.set_plan(std::string(p.envelope.begin(), p.envelope.end()));
      if (!send(s, m)) continue;  // stays pending; retried at the next Register
      sent.push_back(p.id);
      spdlog::info("fleet: plan '{}' (sequence {}) sent to agent '{}'", p.id, p.sequence, s.agent_id);
    }
  }
  if (sent.empty()) return;
  // One commit for every plan sent: a set over 1,000 agents is one fsync, not 1,000.
  catalog_.transaction("controller", [&](catalog::Tx& tx) {
    for (const auto& id : sent) tx.move_plan_tasks(id, TaskState::pending, TaskState::sent);
  });
}

void Fleet::on_plan_ack(Session& s, const cairn::v1::PlanAck& a) {
  // Recorded with the other acks of this batch of messages, in one commit
  // (flush_plan_acks): a set over every agent is acknowledged by all at once.
  plan_acks_.emplace_back(s.agent_id, a);
}

void Fleet::flush_plan_acks() {
  if (plan_acks_.empty()) return;
  auto batch = std::move(plan_acks_);
  plan_acks_.clear();
  std::vector<std::string> problems(batch.size());
  try {
    catalog_.transaction("controller", [&](catalog::Tx& tx) {
      for (size_t i = 0; i < batch.size(); ++i) {
        tx.set_actor("agent:" + batch[i].first);
        problems[i] = record_plan_ack(tx, batch[i].first, batch[i].second);
      }
    });
  } catch (const std::exception& e) {
    // One ack the catalog refuses must not lose the others: each in its own
    // transaction. One that fails there too is as a failed message: its plan
    // stays issued (sent again at the agent's next Register, or missed at expiry).
    spdlog::warn("fleet: cannot record {} plan acknowledgement(s) together ({}); recording them one by one", batch.size(), e.what());
    for (size_t i = 0; i < batch.size(); ++i) {
      try {
        catalog_.transaction("agent:" + batch[i].first,
                             [&](catalog::Tx& tx) { problems[i] = record_plan_ack(tx, batch[i].first, batch[i].second); });
      } catch (const std::exception& e1) {
        problems[i] = std::string("cannot record it: ") + e1.what();
      }
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    const auto& [agent_id, a] = batch[i];
    if (!problems[i].empty()) {
      spdlog::warn("fleet: plan ack from agent '{}' ignored: {}", agent_id, problems[i]);
      continue;
    }
    spdlog::info("fleet: agent '{}' {} plan '{}'{}", agent_id, a.accepted() ? "accepted" : "rejected", a.plan_id(),
                 a.accepted() ? "" : ": " + proto::error_code_name(a.reason()) + " " + a.detail());
  }
}

std::string Fleet::record_plan_ack(catalog::Tx& tx, const std::string& agent_id, const cairn::v1::PlanAck& a) {
  std::optional<catalog::PlanRecord> plan;
  // The digest of the exact bytes delivered identifies the plan even when
  // the agent refused it before (or without) trusting its payload: a bad
  // signature, an unknown key, a replay of an old plan's bytes.
  if (a.envelope_digest().size() == 32)
    for (auto& p : tx.issued_plans(agent_id)) {
      auto d = crypto::sha256(p.envelope);
      if (std::memcmp(d.data(), a.envelope_digest().data(), d.size()) == 0) {
        plan = std::move(p);
        break;
      }
    }
  if (!plan && !a.plan_id().empty()) plan = tx.plan(a.plan_id());
  if (!plan && a.sequence() > 0) {
    // A rejection before the payload parsed carries no plan id; the
    // sequence is unique per agent when it comes with one.
    for (const auto& t : tx.agent_tasks(agent_id, kInFlight))
      if (t.plan_id)
        if (auto p = tx.plan(*t.plan_id); p && p->sequence == a.sequence()) plan = p;
  }
  if (!plan || plan->agent_id != agent_id) {
    // Audited once a minute per agent, as foreign ids are: an agent must not
    // be able to push older events out of the bounded audit trail.
    auto& n = foreign_noted_[agent_id + "\x1fplan.ack_unmatched"];
    auto now = Clock::now();
    if (n.at != Clock::time_point{} && now - n.at < std::chrono::minutes(1)) {
      ++n.suppressed;
    } else {
      tx.audit({"plan.ack_unmatched",
                "agent:" + agent_id,
                "refused",
                proto::error_code_name(a.reason()),
                {{"plan_id", a.plan_id()}, {"accepted", a.accepted()}, {"detail", a.detail()}, {"suppressed_before", n.suppressed}}});
      n = {now, 0};
    }
    return "no plan '" + a.plan_id() + "' was issued to this agent";
  }
  if (plan->state != "issued") return "plan '" + plan->id + "' was already answered or expired";
  tx.move_plan_tasks(plan->id, TaskState::pending, TaskState::sent);  // the ack came before the sent mark
  tx.record_plan_ack(plan->id, a.accepted(), a.reason(), a.detail());
  return {};
}

void Fleet::on_task_result(Session& s, const cairn::v1::TaskResult& r) {
  // Recorded with the other results of this batch of messages, in one commit
  // (flush_task_results), and acknowledged once committed: a set over every
  // agent ends with a few fsyncs, not one per agent.
  unconfirmed_.erase(r.task_id());
  results_.push_back({s.agent_id, s.routing_id, r});
}

void Fleet::hold_restore_results() {
  // After a restart the agents come back one by one, within a liveness
  // timeout. A member's result that ends a restore step makes the next step
  // at once, and a member not connected then takes no part in it (a stop is
  // refused as a whole, a data step fails and rolls every member back): a
  // restart of the controller alone would fail a restore that was going
  // well. Such results wait (unacknowledged: an agent that reconnects sends
  // them again anyway) until every member of their restore is connected, or
  // this process's first liveness timeout has passed.
  if (results_.empty() && held_.empty()) return;
  bool grace = Clock::now() - started_ < timeout();
  std::vector<PendingResult> all = std::move(held_);
  held_.clear();
  size_t before = all.size();  // held already (logged when first held)
  for (auto& r : results_) all.push_back(std::move(r));
  results_.clear();
  if (!grace) {
    results_ = std::move(all);
    return;
  }
  size_t newly = 0;
  catalog_.read([&](const catalog::Tx& tx) {
    for (size_t i = 0; i < all.size(); ++i) {
      auto t = tx.task(all[i].result.task_id());
      bool wait = false;
      if (t && t->restore_id && t->restore_step != cairn::v1::RESTORE_STEP_ALL) {
        auto members = tx.tasks_of_restore(*t->restore_id);
        wait = std::any_of(members.begin(), members.end(), [&](const catalog::Task& m) { return !connected(m.agent_id); });
      }
      if (wait && i >= before) ++newly;
      (wait ? held_ : results_).push_back(std::move(all[i]));
    }
  });
  if (newly)
    spdlog::info(
        "fleet: {} restore step result(s) held until every member of their restore is back "
        "(the controller started less than {} ms ago)",
        newly, timeout().count());
}

void Fleet::flush_task_results() {
  flush_plan_acks();  // a result after its plan's ack finds the ack recorded
  hold_restore_results();
  if (results_.empty()) return;
  flush_progress();  // and after its task's last progress (otherwise coalesced for 250 ms, tick())
  auto batch = std::move(results_);
  results_.clear();
  std::vector<std::string> problems(batch.size());
  std::vector<bool> done(batch.size(), false);
  try {
    catalog_.transaction("controller", [&](catalog::Tx& tx) {
      for (size_t i = 0; i < batch.size(); ++i) {
        tx.set_actor("agent:" + batch[i].agent_id);
        problems[i] = record_task_result(tx, batch[i].agent_id, batch[i].result);
      }
    });
    done.assign(batch.size(), true);
  } catch (const std::exception& e) {
    // One result the catalog refuses must not lose the others: each in its own
    // transaction. One that fails there too is not acknowledged: the agent
    // sends it again.
    spdlog::warn("fleet: cannot record {} task result(s) together ({}); recording them one by one", batch.size(), e.what());
    for (size_t i = 0; i < batch.size(); ++i) {
      try {
        catalog_.transaction("agent:" + batch[i].agent_id,
                             [&](catalog::Tx& tx) { problems[i] = record_task_result(tx, batch[i].agent_id, batch[i].result); });
        done[i] = true;
      } catch (const std::exception& e1) {
        spdlog::error("fleet: cannot record the result of task '{}' of agent '{}': {}", batch[i].result.task_id(), batch[i].agent_id,
                      e1.what());
      }
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (!done[i]) continue;
    const auto& [agent_id, routing_id, r] = batch[i];
    // Acknowledged either way: a result recorded, or one that can never be
    // (its task ended or is unknown), is not to be sent again.
    if (Session* s = session_of(agent_id)) {
      cairn::v1::ControllerMessage ack;
      ack.mutable_result_ack()->add_task_ids(r.task_id());
      send(*s, ack);
    }
    if (!problems[i].empty()) {
      spdlog::warn("fleet: task result from agent '{}' ignored: {}", agent_id, problems[i]);
      send_error(routing_id, cairn::v1::ERROR_CODE_UNEXPECTED_MESSAGE, problems[i]);
      continue;
    }
    spdlog::info("fleet: task '{}' of agent '{}' ended {}", r.task_id(), agent_id, cairn::v1::TaskOutcome_Name(r.outcome()));
  }
}

std::map<std::string, Fleet::StorageCount> Fleet::storage_counts() const {
  std::lock_guard g(storage_mu_);
  return storage_;
}

std::string Fleet::record_task_result(catalog::Tx& tx, const std::string& agent_id, const cairn::v1::TaskResult& r) {
  {
    auto t = tx.task(r.task_id());
    if (!t || t->agent_id != agent_id) return "no task '" + r.task_id() + "' of this agent";
    if (catalog::is_terminal(t->state)) {
      // A whole restore (no cluster step) that ended here as lost while its
      // agent went on: what the agent did is added to the task, so `restore
      // show` tells the operator where the data is. Either the agent was
      // killed and put the previous data back at its next start (its result
      // is marked interrupted_restore: restore_journal.h), or it was cut off
      // (a frozen process, a partitioned host) and finished the restore.
      const bool lost =
          t->kind == catalog::TaskKind::restore && t->state == TaskState::failed && t->restore_step == cairn::v1::RESTORE_STEP_ALL &&
          std::any_of(t->reasons.begin(), t->reasons.end(), [](const auto& why) { return why.code == cairn::v1::ERROR_CODE_AGENT_LOST; });
      if (lost && !t->reasons.empty() && t->reasons.size() < 16) {
        std::vector<catalog::Reason> add;
        if (driver_metadata::interrupted_restore(driver_metadata::parse(r.component_metadata()))) {
          for (const auto& why : r.reasons()) add.push_back({why.code(), why.detail(), why.item()});
        } else {
          std::string first = r.reasons_size() ? ": " + r.reasons(0).detail() : std::string();
          add.push_back({cairn::v1::ERROR_CODE_AGENT_LOST,
                         "after the controller had lost it, the agent finished this restore (" +
                             std::string(r.outcome() == cairn::v1::TASK_OUTCOME_SUCCEEDED ? "succeeded"
                                         : r.outcome() == cairn::v1::TASK_OUTCOME_PARTIAL ? "partial"
                                                                                          : "failed") +
                             first + ")" +
                             (r.outcome() == cairn::v1::TASK_OUTCOME_FAILED
                                  ? ""
                                  : ": the component runs on the snapshot's data, not on what it had before this "
                                    "restore"),
                         ""});
        }
        if (!add.empty() &&
            std::none_of(t->reasons.begin(), t->reasons.end(), [&](const auto& why) { return why.detail == add.front().detail; })) {
          tx.amend_task_reasons(t->id, add);
          return {};
        }
      }
      return "task '" + t->id + "' already ended '" + std::string(to_string(t->state)) + "'";
    }
    if (t->state == TaskState::pending || t->state == TaskState::sent) {
      // A result proves the plan was accepted even if its ack was lost.
      if (t->state == TaskState::pending) tx.update_task(t->id, catalog::TaskUpdate(TaskState::sent));
      tx.update_task(t->id, catalog::TaskUpdate(TaskState::accepted));
    }
    catalog::TaskUpdate u;
    for (const auto& why : r.reasons()) u.reasons.push_back({why.code(), why.detail(), why.item()});
    if (!r.snapshot_id().empty()) u.snapshot_id = r.snapshot_id();
    if (!r.manifest_digest().empty()) u.manifest_digest = r.manifest_digest();
    if (!r.component_metadata().empty()) u.component_metadata = r.component_metadata();  // an object (wire.cc)
    u.bytes = r.bytes();
    u.files = r.files();
    u.storage_requests = r.storage_requests();
    u.storage_retries = r.storage_retries();
    // Per repository by its name (every task records the one it reads or
    // writes, orders.cc); a row from before that has none and is not counted:
    // a repository label is never empty.
    if (r.storage_requests() && !t->repository.empty()) {
      std::lock_guard g(storage_mu_);
      auto& c = storage_[t->repository];
      c.requests += r.storage_requests();
      c.retries += r.storage_retries();
    }
    switch (r.outcome()) {
      case cairn::v1::TASK_OUTCOME_SUCCEEDED:
        u.to = TaskState::succeeded;
        if (t->kind == catalog::TaskKind::backup && (!u.snapshot_id || !u.manifest_digest)) {
          u.to = TaskState::failed;
          u.reasons.push_back(
              {cairn::v1::ERROR_CODE_MALFORMED_MESSAGE, "agent reported success without a snapshot id and manifest digest", ""});
        }
        break;
      case cairn::v1::TASK_OUTCOME_PARTIAL:
        u.to = TaskState::partial;
        break;
      default:
        u.to = TaskState::failed;
        break;
    }
    if (catalog::needs_reason(u.to) && u.reasons.empty())
      u.reasons.push_back({cairn::v1::ERROR_CODE_INTERNAL, "agent reported '" + std::string(to_string(u.to)) + "' without a reason", ""});
    // The safety backup runs inside the restore task; what happened to it
    // comes back on the restore's result and ends that restore's own safety
    // task (named in the catalog), never another component's.
    std::optional<catalog::Task> safety;
    if (t->kind == catalog::TaskKind::restore && t->safety_task_id) safety = tx.task(*t->safety_task_id);
    if (safety && !catalog::is_terminal(safety->state)) {
      catalog::TaskUpdate su = safety_update(*t, r);
      // A restore that overwrote without the safety backup it was asked to
      // take must not read complete.
      if (u.to == TaskState::succeeded && su.to != TaskState::succeeded) {
        u.to = TaskState::partial;
        u.reasons.push_back({cairn::v1::ERROR_CODE_SNAPSHOT_FAILED,
                             "restored without the safety backup that was asked for: " + su.reasons.front().detail, ""});
      }
      tx.update_task(t->id, u);
      if (safety->state == TaskState::pending) tx.update_task(safety->id, catalog::TaskUpdate(TaskState::sent));
      if (safety->state == TaskState::pending || safety->state == TaskState::sent)
        tx.update_task(safety->id, catalog::TaskUpdate(TaskState::accepted));
      tx.update_task(safety->id, su);
    } else {
      // Its safety task already ended without a snapshot (cancelled, or failed
      // as lost while the agent was away) and none came back now: a restore
      // that overwrote without its safety backup never reads complete.
      if (safety && safety->state != TaskState::succeeded && r.safety_snapshot_id().empty() && u.to == TaskState::succeeded) {
        u.to = TaskState::partial;
        u.reasons.push_back({cairn::v1::ERROR_CODE_SNAPSHOT_FAILED,
                             "restored, but its safety backup task '" + safety->id + "' ended '" + std::string(to_string(safety->state)) +
                                 "' without a snapshot",
                             ""});
      }
      tx.update_task(t->id, u);
    }
  }
  return {};
}

void Fleet::flush_progress() {
  if (progress_.empty()) return;
  auto batch = std::move(progress_);
  progress_.clear();
  try {
    catalog_.transaction("controller", [&](catalog::Tx& tx) {
      for (const auto& [task_id, entry] : batch) {
        const auto& [agent_id, p] = entry;
        auto t = tx.task(task_id);
        if (!t || t->agent_id != agent_id || catalog::is_terminal(t->state)) continue;
        if (t->state == TaskState::sent) tx.update_task(t->id, catalog::TaskUpdate(TaskState::accepted));
        if (t->state == TaskState::sent || t->state == TaskState::accepted) tx.update_task(t->id, catalog::TaskUpdate(TaskState::running));
        if (t->state == TaskState::pending) continue;
        catalog::TaskProgress tp;
        tp.phase = p.phase();
        tp.bytes_done = p.bytes_done();
        tp.bytes_total = p.bytes_total();
        tp.files_done = p.files_done();
        tp.files_total = p.files_total();
        tp.current_item = p.current_item();
        if (p.at() > 0) tp.at = p.at();
        tp.storage_requests = p.storage_requests();
        tp.storage_retries = p.storage_retries();
        tx.set_task_progress(t->id, tp);
      }
    });
  } catch (const std::exception& e) {
    spdlog::error("fleet: cannot record progress: {}", e.what());
  }
}

void Fleet::lose(const std::string& agent_id, ErrorCode code, const std::string& detail, bool include_pending) {
  catalog_.transaction("controller", [&](catalog::Tx& tx) {
    auto tasks = tx.agent_tasks(agent_id, kOpen);
    for (const auto& t : tasks) {
      // A step of a cluster restore is a barrier for every member: one whose
      // agent is gone fails now, queued or not, so the others are rolled
      // back instead of waiting for it stopped. Its rollback waits for the
      // agent (what the restore set aside there is put back on its return),
      // and so does a halt (the others stay stopped until it is stopped).
      bool barrier = t.restore_step != cairn::v1::RESTORE_STEP_ALL && t.restore_step != cairn::v1::RESTORE_STEP_ROLLBACK &&
                     t.restore_step != cairn::v1::RESTORE_STEP_HALT;
      if (!include_pending && t.state == TaskState::pending && !barrier) continue;
      if (auto cur = tx.task(t.id); !cur || catalog::is_terminal(cur->state)) continue;  // ended with a sibling
      tx.update_task(t.id, failed(code, detail));
      unconfirmed_.erase(t.id);
    }
  });
}

void Fleet::revoke(const std::string& agent_id) {
  if (Session* s = session_of(agent_id)) {
    send_error(s->routing_id, cairn::v1::ERROR_CODE_AGENT_REVOKED, "agent key revoked by an operator");
    cut(*s);
  }
  gone_.erase(agent_id);
  lose(agent_id, cairn::v1::ERROR_CODE_AGENT_REVOKED, "agent revoked by an operator", /*include_pending=*/true);
}

void Fleet::reconnect(const std::string& agent_id) {
  if (Session* s = session_of(agent_id)) cut(*s);
}

void Fleet::flush_touches() {
  if (touched_.empty()) return;
  auto batch = std::move(touched_);
  touched_.clear();
  catalog_.transaction("controller", [&](catalog::Tx& tx) {
    for (const auto& id : batch) tx.touch_agent(id);
  });
}

void Fleet::sweep() {
  auto now = Clock::now();
  // Agents without a word for `liveness` intervals are lost, counted up to
  // the last time the loop had read every message waiting (caught_up).
  const auto heard_until = std::min(now, caught_up_at_);
  std::vector<std::string> dead;
  for (auto& [rid, s] : sessions_)
    if (heard_until - s.last_recv > timeout()) dead.push_back(rid);
  for (const auto& rid : dead) {
    Session s = sessions_[rid];
    sessions_.erase(rid);
    if (s.agent_id.empty()) continue;
    by_agent_.erase(s.agent_id);
    if (!s.approved) continue;
    spdlog::warn("fleet: agent '{}' lost (no message for {} ms)", s.agent_id, timeout().count());
    lose(s.agent_id, cairn::v1::ERROR_CODE_AGENT_LOST, "no word from the agent for " + std::to_string(timeout().count()) + " ms", false);
  }
  // Agents that did not come back after a controller restart.
  for (auto it = gone_.begin(); it != gone_.end();) {
    if (heard_until - it->second > timeout() && !connected(it->first)) {
      spdlog::warn("fleet: agent '{}' did not return; failing its tasks in flight", it->first);
      lose(it->first, cairn::v1::ERROR_CODE_AGENT_LOST, "agent did not reconnect within the liveness timeout after a controller restart",
           false);
      it = gone_.erase(it);
    } else {
      ++it;
    }
  }
  // Tasks a re-registered agent no longer runs and never reported.
  std::vector<std::string> overdue;
  for (const auto& [task_id, deadline] : unconfirmed_)
    if (now > deadline) overdue.push_back(task_id);
  if (!overdue.empty()) {
    catalog_.transaction("controller", [&](catalog::Tx& tx) {
      for (const auto& id : overdue) {
        auto t = tx.task(id);
        if (t && !catalog::is_terminal(t->state))
          tx.update_task(id, failed(cairn::v1::ERROR_CODE_AGENT_LOST, "agent reconnected without this task running and sent no result"));
        unconfirmed_.erase(id);
      }
    });
  }
  // Plans that expired undelivered or unanswered: their tasks are missed.
  auto expired = catalog_.transaction("controller", [&](catalog::Tx& tx) { return tx.expire_plans(); });
  for (const auto& id : expired) spdlog::warn("fleet: plan '{}' expired unanswered; its tasks are missed", id);
}

void Fleet::tick() {
  flush_task_results();
  auto now = Clock::now();
  for (auto it = cutting_.begin(); it != cutting_.end();) {
    if (now < it->second.second) {
      ++it;
      continue;
    }
    ::shutdown(it->second.first, SHUT_RDWR);
    it = cutting_.erase(it);
  }
  // tick() runs after every batch of messages; a pass over every session
  // each time would cost the loop O(agents) per batch. A heartbeat a few
  // hundredths of a second late is as good.
  auto interval = std::chrono::milliseconds(config_.heartbeat_interval_ms);
  if (now - last_heartbeats_ >= std::min<Clock::duration>(std::chrono::milliseconds(100), interval / 4)) {
    last_heartbeats_ = now;
    for (auto& [rid, s] : sessions_) {
      if (!s.registered || now - s.last_send < interval) continue;
      cairn::v1::ControllerMessage m;
      m.mutable_heartbeat()->set_sent_at(unix_now());
      send(s, m);
    }
  }
  if (now - last_flush_ > std::chrono::milliseconds(250)) {
    last_flush_ = now;
    flush_progress();
  }
  if (now - last_sweep_ > std::chrono::seconds(1)) {
    last_sweep_ = now;
    // Announcements that could not be sent (a full send queue) go out now.
    for (auto& [rid, s] : sessions_)
      if (s.registered && s.approved && !s.expected.count(active_key_id_)) {
        try {
          if (send_announcements(s) > 0) deliver(s.agent_id);
        } catch (const std::exception& e) {
          spdlog::error("fleet: cannot send key announcements to '{}': {}", s.agent_id, e.what());
        }
      }
    try {
      flush_touches();
    } catch (const std::exception& e) {
      spdlog::warn("fleet: cannot record when agents were last seen: {}", e.what());
    }
    try {
      sweep();
    } catch (const std::exception& e) {
      spdlog::error("fleet: periodic sweep failed: {}", e.what());
    }
  }
}

std::vector<std::string> wal_gap_lines(const cairn::v1::WalArchiveStatus& w) {
  std::vector<std::string> out;
  for (const auto& g : w.gaps())
    out.push_back("timeline " + std::to_string(g.timeline()) + ": " + g.first_missing() + " (" + std::to_string(g.missing()) +
                  (g.missing() == 1 ? " segment" : " segments") + ") missing, " + g.next_archived() +
                  " archived after it: recovery cannot pass it; take a base backup now");
  if (!w.check_error().empty()) out.push_back("the agent could not check the archive: " + w.check_error());
  return out;
}

std::map<std::pair<std::string, std::string>, cairn::v1::WalArchiveStatus> Fleet::wal_archives() const {
  auto out = wal_;
  const int64_t now = ::time(nullptr);
  for (auto& [key, w] : out) {
    if (connected(key.first)) continue;
    auto at = wal_at_.find(key);
    w.set_last_error(
        "the agent is not connected (its last report " +
        (at == wal_at_.end() ? std::string("is from before this controller started") : std::to_string(now - at->second) + " s ago") +
        "): nothing is archived while it is away; the server keeps the files and retries, and the "
        "waiting count is as it last reported");
    w.set_last_error_at(now);
  }
  return out;
}

}  // namespace cairn::controller
