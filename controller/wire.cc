// Validation of every frame the controller receives.
#include "controller/wire.h"

#include <nlohmann/json.hpp>

#include "proto/protocol.h"

namespace cairn::controller {
namespace {

using cairn::v1::ErrorCode;

// The bounds of docs/protocol.md § Bounds.
constexpr size_t kMaxName = 128;
constexpr size_t kMaxId = 128;
constexpr int kMaxList = 1024;
constexpr size_t kMaxComponentMetadata = 64 << 10;

template <class M>
Parsed<M> refuse(ErrorCode code, std::string detail) {
  Parsed<M> p;
  p.code = code;
  p.detail = std::move(detail);
  return p;
}

template <class M>
Parsed<M> parse(const std::vector<std::string>& frames, std::string_view protocol_id) {
  if (frames.size() != 2)
    return refuse<M>(cairn::v1::ERROR_CODE_PROTOCOL_UNSUPPORTED,
                     "expected 2 frames (protocol id, message), got " + std::to_string(frames.size()));
  if (frames[0] != protocol_id)
    return refuse<M>(cairn::v1::ERROR_CODE_PROTOCOL_UNSUPPORTED, "frame 0 is not the protocol id '" + std::string(protocol_id) + "'");
  if (frames[1].size() > cairn::proto::kMaxMessageBytes)
    return refuse<M>(cairn::v1::ERROR_CODE_MALFORMED_MESSAGE, "message larger than the 4 MiB limit");
  Parsed<M> p;
  if (!p.message.ParseFromString(frames[1]))
    return refuse<M>(cairn::v1::ERROR_CODE_MALFORMED_MESSAGE, "frame 1 does not parse as a message");
  return p;
}

bool valid_text(const std::string& s, size_t max) { return s.size() <= max; }

// Host names and version strings: printable ASCII without spaces, or empty.
bool valid_label(const std::string& s) {
  if (s.size() > kMaxName) return false;
  for (unsigned char c : s)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

void bound(std::string* s) {
  if (s->size() > kMaxAgentText) *s = truncate_utf8(std::move(*s), kMaxAgentText);
}
bool valid_id(const std::string& s) { return !s.empty() && s.size() <= kMaxId; }

// Names appear in logs, the catalog and cairnctl tables: printable ASCII only.
bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > kMaxName) return false;
  for (unsigned char c : s)
    if (c <= 0x20 || c >= 0x7f) return false;
  return true;
}

std::string check_ids(const google::protobuf::RepeatedPtrField<std::string>& ids, const char* what) {
  if (ids.size() > kMaxList) return std::string("too many ") + what;
  for (const auto& id : ids)
    if (!valid_id(id)) return std::string("an entry of '") + what + "' is empty or too long";
  return {};
}

std::string check_labels(const google::protobuf::Map<std::string, std::string>& labels) {
  if (labels.size() > 64) return "too many labels (at most 64)";
  for (const auto& [k, v] : labels)
    if (!valid_name(k) || v.empty() || v.size() > kMaxName)
      return "a label needs a name of 1-128 printable characters and a value of 1-128 characters";
  return {};
}

}  // namespace

std::string check_agent_message(const cairn::v1::AgentMessage& m) {
  using M = cairn::v1::AgentMessage;
  switch (m.body_case()) {
    case M::BODY_NOT_SET:
      return "message has no body";
    case M::kRegister: {
      const auto& r = m.register_();
      if (!valid_name(r.agent_name())) return "'agent_name' must be 1-128 printable characters without spaces";
      if (!valid_label(r.hostname()) || !valid_label(r.agent_version()))
        return "'hostname' and 'agent_version' must be at most 128 printable characters without spaces";
      if (r.components_size() > kMaxList) return "too many components";
      for (const auto& c : r.components()) {
        if (!valid_name(c.name()) || !valid_name(c.driver())) return "a component needs a valid 'name' and 'driver'";
        if (!c.scope().empty() && c.scope() != "node" && c.scope() != "cluster" && c.scope() != "member")
          return "component '" + c.name() + "': 'scope' must be 'node', 'cluster' or 'member'";
        if (!valid_label(c.cluster_id()) || !valid_label(c.member_id()))
          return "component '" + c.name() + "': 'cluster_id' and 'member_id' must be at most 128 printable characters without spaces";
        // A cluster-scoped component that cannot name its cluster (an empty
        // host: nothing runs, no data dir) registers too: it joins the cluster
        // whose newest backup names this agent (docs/protocol.md § Cluster identity).
        if (c.modes_size() > 16) return "component '" + c.name() + "': too many 'modes'";
        for (const auto& mo : c.modes())
          if (!valid_name(mo)) return "component '" + c.name() + "': a mode must be 1-128 printable characters";
      }
      if (auto e = check_ids(r.trusted_key_ids(), "trusted_key_ids"); !e.empty()) return e;
      for (const auto& c : r.components())
        if (!c.repository().empty() && !valid_name(c.repository()))
          return "component '" + c.name() + "': 'repository' must be 1-128 printable characters";
      if (auto e = check_labels(r.labels()); !e.empty()) return e;
      return check_ids(r.running_task_ids(), "running_task_ids");
    }
    case M::kHeartbeat: {
      const auto& h = m.heartbeat();
      if (h.wal_archives_size() > 64) return "too many 'wal_archives'";
      for (const auto& w : h.wal_archives()) {
        if (!valid_name(w.component())) return "'wal_archives': a component must be 1-128 printable characters";
        if (!valid_text(w.last_archived(), 64)) return "'wal_archives': 'last_archived' too long";
        if (!valid_text(w.last_error(), 2048)) return "'wal_archives': 'last_error' too long";
        if (!valid_text(w.check_error(), 2048)) return "'wal_archives': 'check_error' too long";
        if (w.gaps_size() > 64) return "'wal_archives': too many 'gaps'";
        for (const auto& g : w.gaps())
          if (!valid_text(g.first_missing(), 64) || !valid_text(g.next_archived(), 64))
            return "'wal_archives': a gap's segment name is too long";
      }
      return check_ids(h.running_task_ids(), "running_task_ids");
    }
    case M::kPlanAck: {
      const auto& a = m.plan_ack();
      if (!valid_text(a.plan_id(), kMaxId)) return "'plan_id' too long";
      if (a.reason() < 0) return "'reason' is negative";
      return {};
    }
    case M::kProgress: {
      const auto& p = m.progress();
      if (!valid_id(p.task_id())) return "'task_id' is empty or too long";
      if (!valid_text(p.plan_id(), kMaxId)) return "'plan_id' too long";
      return {};
    }
    case M::kTaskResult: {
      const auto& r = m.task_result();
      if (!valid_id(r.task_id())) return "'task_id' is empty or too long";
      if (r.outcome() != cairn::v1::TASK_OUTCOME_SUCCEEDED && r.outcome() != cairn::v1::TASK_OUTCOME_PARTIAL &&
          r.outcome() != cairn::v1::TASK_OUTCOME_FAILED)
        return "'outcome' must be succeeded, partial or failed";
      if (!valid_text(r.plan_id(), kMaxId)) return "'plan_id' too long";
      if (!valid_text(r.snapshot_id(), kMaxId) || !valid_text(r.manifest_digest(), kMaxId) || !valid_text(r.safety_snapshot_id(), kMaxId))
        return "'snapshot_id', 'manifest_digest' or 'safety_snapshot_id' too long";
      if (r.component_metadata().size() > kMaxComponentMetadata)
        return "'component_metadata' is over " + std::to_string(kMaxComponentMetadata) + " bytes";
      if (!r.component_metadata().empty()) {
        auto j = nlohmann::json::parse(r.component_metadata(), nullptr, false);
        if (!j.is_object()) return "'component_metadata' is not a JSON object";
      }
      if (r.safety_component_metadata().size() > kMaxComponentMetadata)
        return "'safety_component_metadata' is over " + std::to_string(kMaxComponentMetadata) + " bytes";
      if (!r.safety_component_metadata().empty()) {
        auto j = nlohmann::json::parse(r.safety_component_metadata(), nullptr, false);
        if (!j.is_object()) return "'safety_component_metadata' is not a JSON object";
      }
      return {};
    }
    case M::kError:
      return {};
    case M::kKeyAck:
      return valid_text(m.key_ack().announcement_id(), kMaxId) ? "" : "'announcement_id' too long";
  }
  return "message has an unknown body";
}

std::string truncate_utf8(std::string s, size_t max) {
  if (s.size() <= max) return s;
  size_t keep = max > kTruncationMark.size() ? max - kTruncationMark.size() : 0;
  // Back off to a code point boundary: never cut a multi-byte sequence.
  while (keep > 0 && (static_cast<unsigned char>(s[keep]) & 0xc0) == 0x80) --keep;
  s.resize(keep);
  s += kTruncationMark;
  return s;
}

void bound_agent_text(cairn::v1::AgentMessage& m) {
  using M = cairn::v1::AgentMessage;
  switch (m.body_case()) {
    case M::kPlanAck:
      bound(m.mutable_plan_ack()->mutable_detail());
      break;
    case M::kProgress:
      bound(m.mutable_progress()->mutable_current_item());
      break;
    case M::kTaskResult: {
      auto* reasons = m.mutable_task_result()->mutable_reasons();
      if (reasons->size() > int(kMaxReasons)) {
        // The outcome is kept whatever the number of reasons; the list is cut
        // and says how much was left out.
        int dropped = reasons->size() - int(kMaxReasons - 1);
        auto code = reasons->Get(int(kMaxReasons - 1)).code();
        reasons->DeleteSubrange(int(kMaxReasons - 1), dropped);
        auto* more = reasons->Add();
        more->set_code(code);
        more->set_detail(std::to_string(dropped) + " more reasons not kept (the controller keeps " + std::to_string(kMaxReasons) +
                         " per task; see the agent's log)");
      }
      for (auto& why : *reasons) {
        bound(why.mutable_detail());
        bound(why.mutable_item());
      }
      bound(m.mutable_task_result()->mutable_safety_detail());
      break;
    }
    case M::kError:
      bound(m.mutable_error()->mutable_detail());
      break;
    case M::kKeyAck:
      bound(m.mutable_key_ack()->mutable_detail());
      break;
    default:
      break;
  }
}

std::string check_operator_request(const cairn::v1::OperatorRequest& m) {
  using M = cairn::v1::OperatorRequest;
  if (!valid_text(m.request_id(), kMaxId)) return "'request_id' too long";
  auto check_selector = [](const cairn::v1::Selector& s) -> std::string {
    if (s.components_size() > kMaxList || s.nodes_size() > kMaxList) return "selector lists too many names";
    for (const auto& c : s.components())
      if (!valid_name(c)) return "selector component '" + c.substr(0, kMaxName) + "' is not a valid name";
    for (const auto& n : s.nodes())
      if (!valid_name(n)) return "selector node '" + n.substr(0, kMaxName) + "' is not a valid name";
    return check_labels(s.labels());
  };
  auto check_spec = [&](const cairn::v1::PolicySpec& p) -> std::string {
    if (!valid_name(p.name())) return "policy 'name' must be 1-128 printable characters";
    if (!valid_text(p.schedule(), kMaxName) || !valid_text(p.time_zone(), kMaxName) || !valid_text(p.mode(), kMaxName) ||
        !valid_text(p.repository(), kMaxName) || !valid_text(p.drill(), kMaxName) || !valid_text(p.drill_on(), kMaxName))
      return "a policy's schedule, time_zone, mode and repository are at most 128 characters";
    return check_selector(p.selector());
  };
  switch (m.body_case()) {
    case M::BODY_NOT_SET:
      return "request has no body";
    case M::kBackupCreate:
      return check_selector(m.backup_create().selector());
    case M::kBackupList:
      return m.backup_list().limit() > 10000 ? "'limit' above 10000" : "";
    case M::kBackupShow:
      return valid_id(m.backup_show().backup_set_id()) ? "" : "'backup_set_id' is empty or too long";
    case M::kRestore:
      // Empty only with a recovery target: the controller picks the base backup.
      if (m.restore().backup_set_id().empty()
              ? !m.restore().has_recovery_target() || m.restore().recovery_target().kind() == cairn::v1::RecoveryTarget::KIND_UNSPECIFIED
              : !valid_id(m.restore().backup_set_id()))
        return "'backup_set_id' is empty or too long";
      if (m.restore().recovery_target().value().size() > 64) return "'recovery_target' value too long";
      if (m.restore().recovery_target().timeline().size() > 16) return "'recovery_target' timeline too long";
      if (!m.restore().restore_target().empty() && !valid_name(m.restore().restore_target())) return "'restore_target' is not a valid name";
      return check_selector(m.restore().selector());
    case M::kDrill:
      if (m.drill().latest() != m.drill().backup_set_id().empty()) return "a drill names a backup set or asks for the latest, not both";
      if (!m.drill().latest() && !valid_id(m.drill().backup_set_id())) return "'backup_set_id' is too long";
      if (!m.drill().on_agent().empty() && !valid_name(m.drill().on_agent())) return "'on_agent' is not a valid name";
      return check_selector(m.drill().selector());
    case M::kRestoreShow:
      return valid_id(m.restore_show().restore_id()) ? "" : "'restore_id' is empty or too long";
    case M::kBackupCancel:
      return valid_id(m.backup_cancel().id()) ? "" : "'id' is empty or too long";
    case M::kRestoreList:
      return m.restore_list().limit() > 10000 ? "'limit' above 10000" : "";
    case M::kAgentList:
    case M::kStatus:
      return {};
    case M::kKeyRotate: {
      int64_t v = m.key_rotate().announcement_validity_seconds();
      return v == 0 || (v >= 3600 && v <= int64_t(10) * 365 * 86400)
                 ? ""
                 : "'announcement_validity_seconds' must be 0 (default) or between an hour and ten years";
    }
    case M::kPolicy: {
      const auto& q = m.policy();
      using P = cairn::v1::PolicyRequest;
      switch (q.op_case()) {
        case P::kAdd:
          return check_spec(q.add());
        case P::kEdit:
          return check_spec(q.edit());
        case P::kList:
          return {};
        case P::OP_NOT_SET:
          return "policy request names no operation";
        default: {
          const std::string& name = q.op_case() == P::kShow     ? q.show()
                                    : q.op_case() == P::kRemove ? q.remove()
                                    : q.op_case() == P::kPause  ? q.pause()
                                    : q.op_case() == P::kResume ? q.resume()
                                                                : q.run_now();
          return valid_name(name) ? "" : "policy name is empty or not printable";
        }
      }
    }
    case M::kForget:
      return m.forget().policy().empty() || valid_name(m.forget().policy()) ? "" : "'policy' is not a valid name";
    case M::kImportSet: {
      const auto& q = m.import_set();
      if (!valid_name(q.repository())) return "'repository' is not a valid name";
      if (q.check_only() ? q.snapshot_ids_size() != 0 : (q.snapshot_ids_size() == 0 || q.snapshot_ids_size() > kMaxList))
        return q.check_only() ? "a check names no 'snapshot_ids'" : "'snapshot_ids' is empty or too long";
      for (const auto& id : q.snapshot_ids())
        if (!valid_id(id)) return "a snapshot id is empty or too long";
      if (!valid_text(q.origin(), kMaxName * 8)) return "'origin' is too long or not printable";
      if (q.export_snapshot_ids_size() > kMaxList || q.export_task_ids_size() != q.export_snapshot_ids_size() ||
          (!q.check_only() && q.export_snapshot_ids_size() != q.snapshot_ids_size()))
        return "'export_snapshot_ids' and 'export_task_ids' do not name one export snapshot and task for each snapshot";
      for (const auto& id : q.export_snapshot_ids())
        if (!valid_id(id)) return "an export snapshot id is empty or too long";
      for (const auto& id : q.export_task_ids())
        if (!valid_id(id)) return "an export task id is empty or too long";
      if (!q.backup_set_id().empty() && !valid_id(q.backup_set_id())) return "'backup_set_id' is too long";
      if (q.trusted_keys_size() > 64) return "'trusted_keys' lists more than 64 keys";
      for (const auto& k : q.trusted_keys())
        if (k.size() != 32) return "a trusted key is not 32 bytes (an Ed25519 public key)";
      return {};
    }
    case M::kAttestExport: {
      const auto& q = m.attest_export();
      if (!valid_id(q.backup_set_id())) return "'backup_set_id' is empty or too long";
      if (q.snapshots_size() == 0 || q.snapshots_size() > kMaxList) return "'snapshots' is empty or too long";
      for (const auto& s : q.snapshots())
        if (!valid_id(s.task_id()) || !valid_id(s.source_snapshot_id()) || !valid_id(s.export_snapshot_id()))
          return "a snapshot's task or ids are empty or too long";
      return valid_name(q.export_name()) ? "" : "'export_name' is not a valid name";
    }
    case M::kAgentApprove: {
      const auto& q = m.agent_approve();
      if (q.agent_ids_size() == 0) return valid_id(q.agent()) ? "" : "'agent' is empty or too long";
      if (!q.agent().empty()) return "give 'agent' or 'agent_ids', not both";
      if (q.agent_ids_size() > 100000) return "'agent_ids' lists more than 100000 agents";
      for (const auto& id : q.agent_ids())
        if (!valid_id(id)) return "an agent id is empty or too long";
      return {};
    }
    case M::kAgentRevoke:
      return valid_id(m.agent_revoke().agent()) ? "" : "'agent' is empty or too long";
  }
  return "request has an unknown body";
}

Parsed<cairn::v1::AgentMessage> parse_agent_message(const std::vector<std::string>& frames) {
  auto p = parse<cairn::v1::AgentMessage>(frames, cairn::proto::kFleetProtocolId);
  if (!p.ok()) return p;
  if (auto e = check_agent_message(p.message); !e.empty())
    return refuse<cairn::v1::AgentMessage>(cairn::v1::ERROR_CODE_MALFORMED_MESSAGE, e);
  bound_agent_text(p.message);
  return p;
}

Parsed<cairn::v1::OperatorRequest> parse_operator_request(const std::vector<std::string>& frames) {
  auto p = parse<cairn::v1::OperatorRequest>(frames, cairn::proto::kOperatorProtocolId);
  if (!p.ok()) return p;
  if (auto e = check_operator_request(p.message); !e.empty()) {
    auto r = refuse<cairn::v1::OperatorRequest>(cairn::v1::ERROR_CODE_MALFORMED_MESSAGE, e);
    r.message.set_request_id(p.message.request_id());  // so the reply still matches
    return r;
  }
  return p;
}

std::vector<std::string> fleet_frames(const cairn::v1::ControllerMessage& m) {
  return {std::string(cairn::proto::kFleetProtocolId), m.SerializeAsString()};
}

std::vector<std::string> operator_frames(const cairn::v1::OperatorResponse& m) {
  return {std::string(cairn::proto::kOperatorProtocolId), m.SerializeAsString()};
}

}  // namespace cairn::controller
