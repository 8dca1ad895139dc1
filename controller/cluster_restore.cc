#include "controller/cluster_restore.h"

#include <algorithm>
#include <utility>

#include "controller/driver_metadata.h"
#include "proto/restore_step.h"

namespace cairn::controller {

namespace {

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

bool ok_state(catalog::TaskState st) { return st == catalog::TaskState::succeeded || st == catalog::TaskState::partial; }

}  // namespace

// A failed preflight changed nothing: the restore ends. Any failure from
// stop to verify rolls every member back (the data this restore set aside
// put back, the service started): all members end on the backup's data
// (commit) or all on their own (rollback). A failure once members may run
// the restored data (start, verify) first stops every member (halt) when
// the component asks for it (its members' preflight said "rollback_halt"):
// no member starts on its previous data beside members still on the
// restored data.
v1::RestoreStep ClusterRestore::next_step(v1::RestoreStep step, bool ok, bool halt) {
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

// Tasks made in the same millisecond have no order of their own: the rank
// says which step is the latest.
int ClusterRestore::rank(v1::RestoreStep step) { return proto::restore_step_rank(step); }

ClusterRestore::Next ClusterRestore::after(const catalog::Task& ended) const {
  Next none;
  // The step in progress is the latest one; only its end moves the restore on.
  v1::RestoreStep step = v1::RESTORE_STEP_ALL;
  for (const auto& t : same_)
    if (rank(t.restore_step) > rank(step)) step = t.restore_step;
  if (step != ended.restore_step) return none;
  bool ok = true;
  // The step's task of each member: the latest one (a rollback may have been
  // tried again on a member, below).
  std::map<std::string, catalog::Task> latest;  // agent -> its latest task of the step
  std::map<std::string, int> tries;
  for (const auto& t : same_) {
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
  Next n;
  for (auto& [agent, t] : latest) {
    catalog::TaskState st = t.id == ended.id ? ended.state : t.state;
    if (!catalog::is_terminal(st)) return none;  // a barrier: every member ends the step first
    ok &= ok_state(st);
    n.members.push_back(t);
  }
  bool halt = false;
  for (const auto& t : same_)
    if (t.restore_step == v1::RESTORE_STEP_PREFLIGHT && rollback_halt_of(t)) halt = true;
  n.step = next_step(step, ok, halt);
  // The stop step runs in waves (docs/protocol.md § The cluster restore):
  // each member's preflight said its wave ("stop_wave"); wave 0 stops first,
  // and only when all of it stopped does the next wave get its stop tasks.
  // Once every member stopped, the restore goes on to data.
  if ((step == v1::RESTORE_STEP_PREFLIGHT && n.step == v1::RESTORE_STEP_STOP) || (step == v1::RESTORE_STEP_STOP && ok)) {
    std::map<std::string, std::pair<int, catalog::Task>> unstopped;  // agent -> its wave, its preflight task
    for (const auto& t : same_)
      if (t.restore_step == v1::RESTORE_STEP_PREFLIGHT) unstopped.insert_or_assign(t.agent_id, std::pair{stop_wave_of(t), t});
    for (const auto& t : same_)
      if (t.restore_step == v1::RESTORE_STEP_STOP) unstopped.erase(t.agent_id);
    if (!unstopped.empty()) {
      int wave = std::min_element(unstopped.begin(), unstopped.end(), [](const auto& a, const auto& b) {
                   return a.second.first < b.second.first;
                 })->second.first;
      n.members.clear();
      for (const auto& [agent, wt] : unstopped)
        if (wt.first == wave)
          n.members.push_back(wt.second);
        else
          n.later_waves.push_back(agent);
      n.step = v1::RESTORE_STEP_STOP;
    }
  }
  // The members a stop was sent to: a rollback goes to them alone (a member
  // of a later wave, or one refused as a whole, was never stopped). None:
  // nothing was stopped, nothing to roll back.
  if (step == v1::RESTORE_STEP_STOP && n.step == v1::RESTORE_STEP_ROLLBACK) {
    std::erase_if(n.members, [](const catalog::Task& t) { return !t.plan_id.has_value(); });
    if (n.members.empty()) return none;
  }
  if ((step == v1::RESTORE_STEP_ROLLBACK || step == v1::RESTORE_STEP_HALT) && !ok) {
    // A rollback (or halt) whose agent was lost (killed mid-rollback, restarted) runs
    // again on that member: it acts only on this restore's record, so a
    // second run puts back what the first did not, or finds nothing to do.
    // At most kTries tries a member; then the restore ends naming it.
    std::vector<catalog::Task> again;
    for (const auto& t : n.members) {
      catalog::TaskState st = t.id == ended.id ? ended.state : t.state;
      // A plan that expired waiting for an agent that is away is made again
      // for as long as it takes (the restore stays running, holding its lock,
      // saying which member owes its rollback; an operator may cancel it); an
      // agent lost while it ran the rollback is tried kTries times.
      bool missed = st == catalog::TaskState::missed;
      bool lost = std::any_of(t.reasons.begin(), t.reasons.end(),
                              [](const catalog::Reason& r) { return r.code == cairn::v1::ERROR_CODE_AGENT_LOST; });
      if (!ok_state(st) && (missed || (lost && tries[t.agent_id] < kTries))) again.push_back(t);
    }
    if (!again.empty()) {
      n.members = std::move(again);
      n.step = step;
    } else if (step == v1::RESTORE_STEP_ROLLBACK) {
      return none;
    }
    // A halt that failed on a member (its stop command failed) still goes on
    // to the rollback, which stops the service again before it puts anything back.
  }
  if (n.step == v1::RESTORE_STEP_ALL) return none;
  return n;
}

}  // namespace cairn::controller
