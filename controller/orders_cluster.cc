// The steps of a cluster restore (docs/protocol.md § The cluster restore): the
// next step's tasks when every member ended one, deferred members released,
// and the rollbacks owed to members that were away.
#include <spdlog/spdlog.h>

#include <map>
#include <set>

#include "controller/cluster_restore.h"
#include "controller/orders_internal.h"
#include "proto/restore_step.h"

namespace cairn::controller {

void Orders::on_task_ended(catalog::Tx& tx, const catalog::Task& ended) {
  using namespace orders_detail;
  if (!ended.restore_id) return;
  next_cluster_step(tx, ended);
  release_deferred(tx, ended);
  // A rollback an ended restore owed (issue_owed_rollbacks) held the
  // cluster's lock for as long as it ran.
  if (ended.restore_step == v1::RESTORE_STEP_ROLLBACK && !ended.cluster_id.empty())
    if (auto r = tx.restore(*ended.restore_id); r && r->state != catalog::SetState::running)
      if (auto target = cluster_lock_of(tx, ended.agent_id, ended.component, ended.cluster_id); !target.empty())
        tx.release_lock(target, *ended.restore_id);
}

// docs/protocol.md § A rollback owed to a member that was away. The member's
// agent is back: what the cancelled restore set aside on it is put back and
// its service started on it, as the other members were. The rollback acts
// only on this restore's own record there (a later restore's record is left
// alone), so running it late moves nothing another restore made.
size_t Orders::issue_owed_rollbacks(catalog::Tx& tx, const std::string& agent_id) {
  using namespace orders_detail;
  auto owed = tx.owed_rollbacks(agent_id);
  if (owed.empty()) return 0;
  auto agent = tx.agent(agent_id);
  if (!agent || agent->state != catalog::AgentState::approved) return 0;
  PlanBatch plans(tx, config_, key_);
  size_t n = 0;
  for (const auto& t : owed) {
    auto restore = tx.restore(*t.restore_id);
    std::string target = cluster_lock_of(tx, agent_id, t.component, t.cluster_id);
    if (!restore || target.empty()) {
      spdlog::warn("restore {}: the rollback owed to '{}' for '{}' cannot be made: the agent no longer declares it",
                   t.restore_id.value_or(""), agent->name, t.component);
      continue;
    }
    // Under the cluster's lock when it is free: no backup or restore of the
    // cluster starts while the member's data is put back. Held by another
    // (a backup on another member), the rollback runs beside it: that
    // holder cannot include this member, which was away when it began.
    if (!t.cluster_id.empty()) {
      if (!tx.acquire_lock(target, catalog::TaskKind::restore, restore->id, config_.lock_ttl_seconds))
        if (auto h = tx.lock_holder(target))
          spdlog::warn("restore {}: the rollback owed to '{}' runs while {} {} holds the cluster's lock", restore->id, agent->name,
                       h->first, h->second);
    }
    catalog::NewTask nt{agent_id, t.component, t.source_snapshot, std::nullopt};
    nt.restore_step = v1::RESTORE_STEP_ROLLBACK;
    nt.cluster_id = t.cluster_id;
    nt.repository = !t.repository.empty() ? t.repository : restore_task_repository(tx, nt);
    std::string id = tx.add_owed_rollback(restore->id, nt);
    cairn::v1::Task w = restore_wire(tx, *tx.task(id), restore->source_set_id, restore->id);
    w.mutable_options()->set_skip_safety_backup(true);
    plans.add(*agent, {id}, {w});
    spdlog::info("restore {}: '{}' is back; the rollback its member of '{}' was owed is sent", restore->id, agent->name, t.component);
    ++n;
  }
  plans.sign_and_store();
  return n;
}

// Once every task of the restore ended, the members that waited for their
// clusters (after_clusters in the restore's selector) get their tasks: the
// same as create_restore would have made, with their safety tasks bound to
// the same plans. When a cluster's restore failed, their safety tasks end
// failed with the reason and nothing of theirs runs.
void Orders::release_deferred(catalog::Tx& tx, const catalog::Task& ended) {
  using namespace orders_detail;
  auto restore = tx.restore(*ended.restore_id);
  if (!restore || restore->state != catalog::SetState::running || !restore->selector.is_object()) return;
  const auto& sel = restore->selector;
  if (!sel.contains("after_clusters") || !sel["after_clusters"].is_array() || sel["after_clusters"].empty()) return;
  bool ok = true;
  auto tasks = tx.tasks_of_restore(*ended.restore_id);
  for (const auto& t : tasks) {
    catalog::TaskState st = t.id == ended.id ? ended.state : t.state;
    if (!catalog::is_terminal(st)) return;  // a cluster's restore is still going
    ok &= st == catalog::TaskState::succeeded || st == catalog::TaskState::partial;
  }
  for (const auto& d : sel["after_clusters"])
    for (const auto& t : tasks)
      if (t.agent_id == d.value("agent_id", "") && t.component == d.value("component", "")) return;  // released already
  if (!ok) {
    for (const auto& d : sel["after_clusters"]) {
      std::string safety = d.value("safety_task_id", "");
      if (safety.empty()) continue;
      catalog::TaskUpdate u{catalog::TaskState::failed};
      u.reasons.push_back({cairn::v1::ERROR_CODE_PREFLIGHT_FAILED,
                           "not run: the restore of the cluster it depends on (restored first in the same restore) failed",
                           d.value("component", "")});
      tx.update_task(safety, u);
    }
    return;
  }
  std::vector<catalog::NewTask> add;
  for (const auto& d : sel["after_clusters"]) {
    catalog::NewTask nt{d.value("agent_id", ""), d.value("component", ""), d.value("snapshot", ""), std::nullopt};
    if (!d.value("safety_task_id", "").empty()) nt.safety_task_id = d.value("safety_task_id", "");
    nt.restore_step = proto::restore_step_from_name(d.value("restore_step", "")).value_or(v1::RESTORE_STEP_ALL);
    nt.cluster_id = d.value("cluster_id", "");
    nt.repository = restore_task_repository(tx, nt);
    add.push_back(std::move(nt));
  }
  auto ids = tx.add_restore_tasks(*ended.restore_id, add);
  std::map<std::string, std::vector<std::string>> ids_of;  // agent -> task ids of its plan
  std::map<std::string, std::vector<cairn::v1::Task>> wire_of;
  for (const auto& id : ids) {
    auto t = tx.task(id);
    cairn::v1::Task w = restore_wire(tx, *t, restore->source_set_id, *ended.restore_id);
    w.mutable_options()->set_restore_target(sel.value("restore_target", ""));
    w.mutable_options()->set_skip_safety_backup(restore->skip_safety_backup);
    w.mutable_options()->set_force_identity(sel.value("force_identity", false));
    w.mutable_options()->set_write_mode(sel.value("write_mode", "") == "merge" ? cairn::v1::RESTORE_WRITE_MODE_MERGE
                                                                               : cairn::v1::RESTORE_WRITE_MODE_MIRROR);
    ids_of[t->agent_id].push_back(t->id);
    if (t->safety_task_id) {
      w.mutable_options()->set_safety_backup_task_id(*t->safety_task_id);
      ids_of[t->agent_id].push_back(*t->safety_task_id);
    }
    wire_of[t->agent_id].push_back(w);
  }
  PlanBatch plans(tx, config_, key_);
  for (const auto& [agent_id, wire] : wire_of) {
    plans.add(*tx.agent(agent_id), ids_of[agent_id], wire);
    to_deliver_.push_back(agent_id);
  }
  plans.sign_and_store();
}

void Orders::next_cluster_step(catalog::Tx& tx, const catalog::Task& ended) {
  using namespace orders_detail;
  if (ended.restore_step == v1::RESTORE_STEP_ALL || ended.cluster_id.empty()) return;
  std::vector<catalog::Task> same;  // this cluster's tasks of this restore
  for (auto& t : tx.tasks_of_restore(*ended.restore_id))
    if (t.cluster_id == ended.cluster_id && t.component == ended.component) same.push_back(std::move(t));
  if (same.empty()) return;
  // Which step comes next, on which members: the table in cluster_restore.h.
  ClusterRestore::Next n = ClusterRestore(std::move(same)).after(ended);
  if (n.step == v1::RESTORE_STEP_ALL) return;
  const v1::RestoreStep next = n.step;
  const std::vector<catalog::Task>& members = n.members;
  const std::vector<std::string>& later_waves = n.later_waves;
  auto restore = tx.restore(*ended.restore_id);
  if (!restore || restore->state != catalog::SetState::running) return;
  std::vector<catalog::NewTask> tasks;
  for (const auto& m : members) {
    catalog::NewTask nt{m.agent_id, m.component, m.source_snapshot, std::nullopt};
    nt.restore_step = next;
    nt.cluster_id = m.cluster_id;
    nt.repository = !m.repository.empty() ? m.repository : restore_task_repository(tx, nt);
    tasks.push_back(std::move(nt));
  }
  auto ids = tx.add_restore_tasks(*ended.restore_id, tasks);
  // A member whose agent is gone cannot take this step: it fails now (the
  // barrier then rolls every member back), instead of a plan waiting for the
  // agent while the others stop. A rollback waits for it: its agent puts
  // back what this restore set aside when it returns. So does a halt: the
  // others stay stopped until the absent member's service is stopped too (it
  // may run the restored data; the others starting on their previous data
  // beside it would mix the two).
  std::vector<std::string> absent;
  if (next != v1::RESTORE_STEP_ROLLBACK && next != v1::RESTORE_STEP_HALT && connected_)
    for (const auto& id : ids)
      if (auto t = tx.task(id); t && !connected_(t->agent_id)) absent.push_back(id);
  // Nothing is stopped unless every member can be: a member gone between
  // preflight and stop ends the restore there, every member untouched.
  std::string names;
  for (const auto& id : absent)
    if (auto t = tx.task(id))
      if (auto a = tx.agent(t->agent_id)) names += (names.empty() ? "'" : ", '") + a->name + "'";
  if (next == v1::RESTORE_STEP_STOP && connected_)
    for (const auto& agent : later_waves)  // a member of a later wave must be there too
      if (!connected_(agent))
        if (auto a = tx.agent(agent)) names += (names.empty() ? "'" : ", '") + a->name + "'";
  if (next == v1::RESTORE_STEP_STOP && !names.empty()) {
    for (const auto& id : ids) {
      auto t = tx.task(id);
      if (!t || catalog::is_terminal(t->state)) continue;
      catalog::TaskUpdate u{catalog::TaskState::failed};
      u.reasons.push_back({cairn::v1::ERROR_CODE_AGENT_LOST,
                           "not stopped: the agent of " + names + " is not connected, and no member is stopped unless every member can be",
                           t->component});
      tx.update_task(id, u);
    }
    return;
  }
  // The lock stays the restore's for the next step.
  std::string driver;
  for (const auto& c : tx.agent_components(members.front().agent_id))
    if (c.name == ended.component) driver = c.driver;
  tx.acquire_lock("cluster:" + driver + "/" + ended.cluster_id, catalog::TaskKind::restore, *ended.restore_id, config_.lock_ttl_seconds);
  PlanBatch plans(tx, config_, key_);
  for (const auto& id : ids) {
    if (std::find(absent.begin(), absent.end(), id) != absent.end()) continue;
    auto t = tx.task(id);
    auto agent = tx.agent(t->agent_id);
    cairn::v1::Task w = restore_wire(tx, *t, restore->source_set_id, *ended.restore_id);
    w.mutable_options()->set_skip_safety_backup(true);  // taken at the stop step
    if (restore->selector.is_object() && restore->selector.value("force_identity", false)) w.mutable_options()->set_force_identity(true);
    plans.add(*agent, {t->id}, {w});
    to_deliver_.push_back(t->agent_id);
  }
  plans.sign_and_store();
  for (const auto& id : absent) {
    auto t = tx.task(id);
    if (!t || catalog::is_terminal(t->state)) continue;
    catalog::TaskUpdate u{catalog::TaskState::failed};
    u.reasons.push_back({cairn::v1::ERROR_CODE_AGENT_LOST,
                         "the member's agent is not connected: step '" + std::string(proto::restore_step_name(next)) + "' cannot run there",
                         t->component});
    tx.update_task(id, u);  // may end the step, and so move the restore on (to its rollback)
  }
}

std::vector<std::string> Orders::take_agents_to_deliver() {
  std::vector<std::string> out;
  out.swap(to_deliver_);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace cairn::controller
