// Backup and restore orders: selection, locks, plans, signatures.
#include "controller/orders.h"

#include <algorithm>
#include <map>
#include <set>

#include "common/crypto/crypto.h"
#include "common/plan/signer.h"
#include "common/util/encoding.h"
#include "common/util/error.h"

namespace cairn::controller {
namespace {

using catalog::Tx;

struct Pick {
  catalog::Agent agent;
  std::string component;
  std::vector<std::string> restore_targets;  // declared by the agent for this component
};

bool listed(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& a, const std::string& b = {}) {
  if (list.empty()) return true;
  for (const auto& x : list)
    if (x == a || (!b.empty() && x == b)) return true;
  return false;
}

// Names the operator gave that match nothing are an error, not a silent no-op.
void check_names(const Tx& tx, const cairn::v1::Selector& sel) {
  auto agents = tx.agents();
  for (const auto& n : sel.nodes()) {
    bool found = false;
    for (const auto& a : agents) found |= a.name == n || a.id == n;
    if (!found) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no agent '" + n + "'");
  }
}

std::vector<Pick> select(const Tx& tx, const cairn::v1::Selector& sel, bool restore) {
  check_names(tx, sel);
  std::vector<Pick> out;
  for (const auto& a : tx.agents()) {
    if (a.state != catalog::AgentState::approved || !listed(sel.nodes(), a.name, a.id)) continue;
    for (const auto& c : tx.agent_components(a.id)) {
      if (!listed(sel.components(), c.name)) continue;
      if (restore && !c.can_restore) continue;
      out.push_back({a, c.name, c.restore_targets});
    }
  }
  return out;
}

std::string quoted_list(const std::vector<std::string>& names) {
  if (names.empty()) return "none";
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "'" : ", '") + n + "'";
  return out;
}

// A restore to an alternative target is refused before any plan goes out when
// a selected component does not declare that target; the error lists what
// each one declares.
void check_restore_target(const std::vector<Pick>& picks, const std::string& target) {
  if (target.empty()) return;
  std::string missing, declared;
  for (const auto& p : picks) {
    bool has = std::find(p.restore_targets.begin(), p.restore_targets.end(), target) != p.restore_targets.end();
    if (!has) missing += (missing.empty() ? "'" : ", '") + p.component + "' on '" + p.agent.name + "'";
    declared += (declared.empty() ? "" : "; ") + p.component + " on " + p.agent.name + ": " +
                quoted_list(p.restore_targets);
  }
  if (!missing.empty())
    throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                  "no restore target '" + target + "' declared by component " + missing + " (declared targets: " +
                      declared + "); pick a declared target, or narrow the selection with --component/--node");
}

std::string write_mode_name(cairn::v1::RestoreWriteMode m) {
  return m == cairn::v1::RESTORE_WRITE_MODE_MERGE ? "merge" : "mirror";
}

std::string new_plan_id() { return "pl-" + to_hex(crypto::random_array<8>()); }

nlohmann::json selector_json(const cairn::v1::Selector& s) {
  return {{"components", std::vector<std::string>(s.components().begin(), s.components().end())},
          {"nodes", std::vector<std::string>(s.nodes().begin(), s.nodes().end())}};
}

void lock_targets(Tx& tx, const std::vector<Pick>& picks, catalog::TaskKind kind, const std::string& holder,
                  int64_t ttl) {
  for (const auto& p : picks) {
    std::string target = p.agent.id + "/" + p.component;
    if (!tx.acquire_lock(target, kind, holder, ttl))
      throw OpError(cairn::v1::ERROR_CODE_CONFLICT, "component '" + p.component + "' on '" + p.agent.name +
                                                        "' is busy with another backup or restore; try again later");
  }
}

// Signs one plan for the agent over the given task ids and stores it.
void issue(Tx& tx, const catalog::Agent& agent, const std::vector<std::string>& catalog_task_ids,
           const std::vector<cairn::v1::Task>& tasks, const ControllerConfig& config, const plan::SigningKey& key) {
  catalog::NewPlan np;
  np.plan_id = new_plan_id();
  np.agent_id = agent.id;
  np.key_id = key.key_id();
  np.issued_at = tx.now();
  np.not_before = tx.now();
  np.expires_at = tx.now() + config.plan_validity_seconds;
  np.task_ids = catalog_task_ids;
  uint64_t seq = tx.issue_plan(np);

  cairn::v1::PlanPayload p;
  p.set_plan_id(np.plan_id);
  p.set_target_agent_key(std::string(agent.curve_public_key.begin(), agent.curve_public_key.end()));
  p.set_issued_at(np.issued_at);
  p.set_not_before(np.not_before);
  p.set_expires_at(np.expires_at);
  p.set_sequence(seq);
  p.set_controller_id(config.controller_id);
  plan::set_random_nonce(p);
  for (const auto& t : tasks) *p.add_tasks() = t;
  Bytes envelope = plan::sign_plan(key, p);
  tx.set_plan_envelope(np.plan_id, envelope);
}

}  // namespace

Ordered Orders::create_backup(const std::string& actor, const cairn::v1::Selector& selector) {
  return catalog_.transaction(actor, [&](Tx& tx) {
    auto picks = select(tx, selector, false);
    if (picks.empty())
      throw OpError(cairn::v1::ERROR_CODE_NOTHING_SELECTED,
                    "the selection matched no component of an approved agent (see 'cairnctl agent list')");
    catalog::NewBackupSet set;
    set.selector = selector_json(selector);
    for (const auto& p : picks) set.tasks.push_back({p.agent.id, p.component, std::nullopt, std::nullopt});
    Ordered out;
    out.id = tx.create_backup_set(set);
    lock_targets(tx, picks, catalog::TaskKind::backup, out.id, config_.lock_ttl_seconds);

    std::map<std::string, std::vector<catalog::Task>> by_agent;
    for (auto& t : tx.tasks_of_set(out.id)) by_agent[t.agent_id].push_back(t);
    for (const auto& [agent_id, tasks] : by_agent) {
      auto agent = tx.agent(agent_id);
      std::vector<std::string> ids;
      std::vector<cairn::v1::Task> wire;
      for (const auto& t : tasks) {
        ids.push_back(t.id);
        cairn::v1::Task w;
        w.set_task_id(t.id);
        w.set_component(t.component);
        w.set_kind(cairn::v1::TASK_KIND_BACKUP);
        // The parent comes from the catalog, never from the repository, where
        // any agent can write a snapshot in another's name.
        if (auto parent = tx.backup_parent(agent_id, t.component)) w.set_parent_snapshot_id(*parent);
        wire.push_back(w);
      }
      issue(tx, *agent, ids, wire, config_, key_);
      out.agent_ids.push_back(agent_id);
    }
    return out;
  });
}

Ordered Orders::create_restore(const std::string& actor, const cairn::v1::RestoreRequest& req) {
  return catalog_.transaction(actor, [&](Tx& tx) {
    if (!tx.backup_set(req.backup_set_id()))
      throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no backup set '" + req.backup_set_id() + "'");
    // Every restored (agent, component) reads the snapshot that set holds for it.
    std::map<std::pair<std::string, std::string>, catalog::Task> source;
    for (auto& t : tx.tasks_of_set(req.backup_set_id()))
      if (t.snapshot_id && (t.state == catalog::TaskState::succeeded || t.state == catalog::TaskState::partial))
        source[{t.agent_id, t.component}] = t;
    std::vector<Pick> picks;
    for (auto& p : select(tx, req.selector(), true))
      if (source.count({p.agent.id, p.component})) picks.push_back(p);
    if (picks.empty())
      throw OpError(cairn::v1::ERROR_CODE_NOTHING_SELECTED,
                    "backup set '" + req.backup_set_id() +
                        "' holds no snapshot for a selected, restorable component of an approved agent");

    check_restore_target(picks, req.restore_target());
    const auto mode = req.write_mode() == cairn::v1::RESTORE_WRITE_MODE_MERGE ? cairn::v1::RESTORE_WRITE_MODE_MERGE
                                                                              : cairn::v1::RESTORE_WRITE_MODE_MIRROR;
    nlohmann::json sel = selector_json(req.selector());
    if (!req.restore_target().empty()) sel["restore_target"] = req.restore_target();
    sel["write_mode"] = write_mode_name(mode);
    std::optional<std::string> safety_set;
    if (!req.skip_safety_backup()) {
      // The current state is saved before anything is overwritten (DESIGN.md § restore).
      catalog::NewBackupSet safety;
      safety.trigger = "safety";
      safety.selector = sel;
      for (const auto& p : picks) safety.tasks.push_back({p.agent.id, p.component, std::nullopt, std::nullopt});
      safety_set = tx.create_backup_set(safety);
    }
    // Each restore task names its own safety task: its result ends that one
    // task and no other (Fleet::on_task_result).
    std::map<std::pair<std::string, std::string>, std::string> safety_task;
    if (safety_set)
      for (const auto& t : tx.tasks_of_set(*safety_set)) safety_task[{t.agent_id, t.component}] = t.id;
    catalog::NewRestore r;
    r.source_set_id = req.backup_set_id();
    r.skip_safety_backup = req.skip_safety_backup();
    r.safety_set_id = safety_set;
    r.selector = sel;
    for (const auto& p : picks) {
      catalog::NewTask nt{p.agent.id, p.component, source[{p.agent.id, p.component}].snapshot_id, std::nullopt};
      if (auto it = safety_task.find({p.agent.id, p.component}); it != safety_task.end()) nt.safety_task_id = it->second;
      r.tasks.push_back(std::move(nt));
    }
    Ordered out;
    out.id = tx.create_restore(r);
    lock_targets(tx, picks, catalog::TaskKind::restore, out.id, config_.lock_ttl_seconds);

    std::map<std::string, std::vector<catalog::Task>> by_agent;
    for (auto& t : tx.tasks_of_restore(out.id)) by_agent[t.agent_id].push_back(t);
    for (const auto& [agent_id, tasks] : by_agent) {
      auto agent = tx.agent(agent_id);
      std::vector<std::string> ids;
      std::vector<cairn::v1::Task> wire;
      for (const auto& t : tasks) {
        ids.push_back(t.id);
        cairn::v1::Task w;
        w.set_task_id(t.id);
        w.set_component(t.component);
        w.set_kind(cairn::v1::TASK_KIND_RESTORE);
        if (auto parent = tx.backup_parent(agent_id, t.component)) w.set_parent_snapshot_id(*parent);  // of the safety backup
        w.mutable_snapshot()->set_backup_set_id(req.backup_set_id());
        w.mutable_snapshot()->set_snapshot_id(*t.source_snapshot);
        w.mutable_options()->set_restore_target(req.restore_target());
        w.mutable_options()->set_skip_safety_backup(req.skip_safety_backup());
        w.mutable_options()->set_write_mode(mode);
        if (t.safety_task_id) {
          w.mutable_options()->set_safety_backup_task_id(*t.safety_task_id);
          ids.push_back(*t.safety_task_id);  // bound to the same plan: the agent reports it
        }
        wire.push_back(w);
      }
      issue(tx, *agent, ids, wire, config_, key_);
      out.agent_ids.push_back(agent_id);
    }
    return out;
  });
}

}  // namespace cairn::controller
