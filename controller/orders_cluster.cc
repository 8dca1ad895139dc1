// The steps of a cluster restore (docs/protocol.md § The cluster restore): the
// next step's tasks when every member ended one, deferred members released,
// and the rollbacks owed to members that were away.
#include <spdlog/spdlog.h>

#include <map>
#include <set>

#include "controller/driver_metadata.h"
#include "controller/orders_internal.h"
#include "proto/restore_step.h"

namespace cairn::controller {
namespace orders_detail {
namespace {

// The step after `step` when every member ended it as ok says; ALL (none) when the
// cluster restore is over (docs/protocol.md § Cluster restore). A failed
// preflight changed nothing: the restore ends. Any failure from stop to
// verify rolls every member back (the data this restore set aside put back,
// the service started): all members end on the backup's data (commit) or
// all on their own (rollback). A failure once members may run the restored
// data (start, verify) first stops every member (halt) when the component
// asks for it (its members' preflight said "rollback_halt"): no member starts
// on its previous data beside members still on the restored data.
v1::RestoreStep next_step(v1::RestoreStep step, bool ok, bool halt) {
  switch (step) {
    case v1::RESTORE_STEP_PREFLIGHT:
      return ok ? v1::RESTORE_STEP_STOP : v1::RESTORE_STEP_ALL;
    case v1::RESTORE_STEP_STOP:
      return ok ? v1::RESTORE_STEP_DATA : v1::RESTORE_STEP_ROLLBACK;
    case v1::RESTORE_STEP_DATA:
      return ok ? v1::RESTORE_STEP_START : v1::RESTORE_STEP_ROLLBACK;
    case v1::RESTORE_STEP_START:
      return ok ? v1::RESTORE_STEP_VERIFY : (halt ? v1::RESTORE_STEP_HALT : v1::RESTORE_STEP_ROLLBACK);
    case v1::RESTORE_STEP_VERIFY:
      return ok ? v1::RESTORE_STEP_COMMIT : (halt ? v1::RESTORE_STEP_HALT : v1::RESTORE_STEP_ROLLBACK);
    case v1::RESTORE_STEP_HALT:
      return v1::RESTORE_STEP_ROLLBACK;  // however the halts ended (a failed one is stopped again by its rollback)
    default:
      return v1::RESTORE_STEP_ALL;  // commit, rollback
  }
}

// Steps in the order they run; commit or rollback comes last. Tasks made in
// the same millisecond have no order of their own.
int step_rank(v1::RestoreStep step) {
  switch (step) {
    case v1::RESTORE_STEP_PREFLIGHT:
      return 1;
    case v1::RESTORE_STEP_STOP:
      return 2;
    case v1::RESTORE_STEP_DATA:
      return 3;
    case v1::RESTORE_STEP_START:
      return 4;
    case v1::RESTORE_STEP_VERIFY:
      return 5;
    case v1::RESTORE_STEP_COMMIT:
      return 6;
    case v1::RESTORE_STEP_HALT:
      return 7;
    case v1::RESTORE_STEP_ROLLBACK:
      return 8;
    default:
      return 0;
  }
}

// The stop wave a member's preflight reported (agent/driver.h stop_wave);
// 0 when it reported none (an older agent, a failed preflight).
int stop_wave_of(const catalog::Task& preflight) {
  return driver_metadata::preflight_stop_wave(driver_metadata::parse_optional(preflight.component_metadata));
}

// Whether a member's preflight asked for the halt before a rollback
// (agent/driver.h rollback_needs_halt).
bool rollback_halt_of(const catalog::Task& preflight) {
  return driver_metadata::preflight_rollback_halt(driver_metadata::parse_optional(preflight.component_metadata));
}

}  // namespace
}  // namespace orders_detail

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
  // The step in progress is the latest one; only its end moves the restore on.
  v1::RestoreStep step = v1::RESTORE_STEP_ALL;
  for (const auto& t : same)
    if (step_rank(t.restore_step) > step_rank(step)) step = t.restore_step;
  if (step != ended.restore_step) return;
  bool ok = true;
  // The step's task of each member: the latest one (a rollback may have been
  // tried again on a member, below).
  auto ok_state = [](catalog::TaskState st) { return st == catalog::TaskState::succeeded || st == catalog::TaskState::partial; };
  std::map<std::string, catalog::Task> latest;  // agent -> its latest task of the step
  std::map<std::string, int> tries;
  for (const auto& t : same) {
    if (t.restore_step != step) continue;
    // tasks_of_restore lists them by the second they were made, so two tries
    // of one second come in any order: a try still open stands for the
    // member, else one that succeeded (a rollback done once is done), else
    // the last listed.
    auto it = latest.find(t.agent_id);
    if (it == latest.end() || !catalog::is_terminal(t.state) ||
        (catalog::is_terminal(it->second.state) && (ok_state(t.state) || !ok_state(it->second.state))))
      latest[t.agent_id] = t;
    ++tries[t.agent_id];
  }
  std::vector<catalog::Task> members;
  for (auto& [agent, t] : latest) {
    catalog::TaskState st = t.id == ended.id ? ended.state : t.state;
    if (!catalog::is_terminal(st)) return;  // a barrier: every member ends the step first
    ok &= ok_state(st);
    members.push_back(t);
  }
  bool halt = false;
  for (const auto& t : same)
    if (t.restore_step == v1::RESTORE_STEP_PREFLIGHT && rollback_halt_of(t)) halt = true;
  v1::RestoreStep next = next_step(step, ok, halt);
  // The stop step runs in waves (docs/protocol.md § The cluster restore):
  // each member's preflight said its wave ("stop_wave"); wave 0 stops first,
  // and only when all of it stopped does the next wave get its stop tasks.
  // Once every member stopped, the restore goes on to data.
  std::vector<std::string> later_waves;  // agents of the waves after the one about to stop
  if ((step == v1::RESTORE_STEP_PREFLIGHT && next == v1::RESTORE_STEP_STOP) || (step == v1::RESTORE_STEP_STOP && ok)) {
    std::map<std::string, std::pair<int, catalog::Task>> unstopped;  // agent -> its wave, its preflight task
    for (const auto& t : same)
      if (t.restore_step == v1::RESTORE_STEP_PREFLIGHT) unstopped.insert_or_assign(t.agent_id, std::pair{stop_wave_of(t), t});
    for (const auto& t : same)
      if (t.restore_step == v1::RESTORE_STEP_STOP) unstopped.erase(t.agent_id);
    if (!unstopped.empty()) {
      int wave = std::min_element(unstopped.begin(), unstopped.end(), [](const auto& a, const auto& b) {
                   return a.second.first < b.second.first;
                 })->second.first;
      members.clear();
      for (const auto& [agent, wt] : unstopped)
        if (wt.first == wave)
          members.push_back(wt.second);
        else
          later_waves.push_back(agent);
      next = v1::RESTORE_STEP_STOP;
    }
  }
  // The members a stop was sent to: a rollback goes to them alone (a member
  // of a later wave, or one refused as a whole, was never stopped). None:
  // nothing was stopped, nothing to roll back.
  if (step == v1::RESTORE_STEP_STOP && next == v1::RESTORE_STEP_ROLLBACK) {
    std::erase_if(members, [](const catalog::Task& t) { return !t.plan_id.has_value(); });
    if (members.empty()) next = v1::RESTORE_STEP_ALL;
  }
  if ((step == v1::RESTORE_STEP_ROLLBACK || step == v1::RESTORE_STEP_HALT) && !ok) {
    // A rollback (or halt) whose agent was lost (killed mid-rollback, restarted) runs
    // again on that member: it acts only on this restore's record, so a
    // second run puts back what the first did not, or finds nothing to do.
    // At most three tries a member; then the restore ends naming it.
    std::vector<catalog::Task> again;
    for (const auto& t : members) {
      catalog::TaskState st = t.id == ended.id ? ended.state : t.state;
      // A plan that expired waiting for an agent that is away is made again
      // for as long as it takes (the restore stays running, holding its lock,
      // saying which member owes its rollback; an operator may cancel it); an
      // agent lost while it ran the rollback is tried three times.
      bool missed = st == catalog::TaskState::missed;
      bool lost = std::any_of(t.reasons.begin(), t.reasons.end(),
                              [](const catalog::Reason& r) { return r.code == cairn::v1::ERROR_CODE_AGENT_LOST; });
      if (!ok_state(st) && (missed || (lost && tries[t.agent_id] < 3))) again.push_back(t);
    }
    if (!again.empty()) {
      members = std::move(again);
      next = step;
    } else if (step == v1::RESTORE_STEP_ROLLBACK) {
      return;
    }
    // A halt that failed on a member (its stop command failed) still goes on
    // to the rollback, which stops the service again before it puts anything back.
  }
  if (next == v1::RESTORE_STEP_ALL) return;
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
