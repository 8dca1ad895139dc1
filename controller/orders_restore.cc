// A restore order: a set's snapshots (or, with a recovery target, the base
// backup the controller picks) restored on the selected components, a safety
// backup first; a cluster's members in steps (orders_cluster.cc).
#include <map>
#include <set>

#include "common/plan/recovery_target.h"
#include "controller/driver_metadata.h"
#include "controller/orders_internal.h"
#include "proto/restore_step.h"

namespace cairn::controller {
namespace orders_detail {
namespace {

// A base backup for point-in-time recovery: a succeeded backup task of the
// component whose driver recorded a physical base backup, when it became
// consistent, and on which timeline (docs/postgresql.md § Point-in-time
// recovery). Safety backups are base backups too.
struct BaseBackup {
  catalog::Task task;
  int64_t end_us = 0;
  uint64_t stop_lsn = 0;
  uint32_t timeline = 0;
};

// What the catalog knows of a component's timelines: each one's history (its
// ancestors, each with the LSN where it ended) as base backups and recoveries
// recorded it, and the newest timeline any of them was on.
struct Timelines {
  std::map<uint32_t, std::map<uint32_t, uint64_t>> history;
  uint32_t newest = 0;
  void add(uint32_t tli, const nlohmann::json& h) {
    if (tli == 0) return;
    newest = std::max(newest, tli);
    if (!h.is_array() || h.empty() || history.count(tli)) return;
    history[tli] = driver_metadata::pg_history_switches(h);
  }
  // Whether recovery from a base backup on `tli`, consistent at `stop`, can
  // follow to `target`: its own, or an ancestor the target left after `stop`.
  // A target whose history nobody recorded is not ruled out here: the agent
  // reads the archive's history files and decides.
  bool leads_to(uint32_t tli, uint64_t stop, uint32_t target) const {
    if (target == 0 || tli == target) return true;
    auto h = history.find(target);
    if (h == history.end()) return target != 1;
    auto e = h->second.find(tli);
    return e != h->second.end() && e->second >= stop;
  }
};

std::vector<BaseBackup> base_backups(const Tx& tx, const std::string& agent_id, const std::string& component,
                                     Timelines* timelines = nullptr) {
  std::vector<BaseBackup> out;
  const catalog::TaskState ok[] = {catalog::TaskState::succeeded};
  for (auto& t : tx.agent_tasks(agent_id, ok)) {
    if (t.component != component || !t.component_metadata) continue;
    auto m = driver_metadata::parse(*t.component_metadata);
    if (!m.is_object()) continue;
    if (t.kind == catalog::TaskKind::restore) {
      // A recovery ends on a new timeline, recorded with its history.
      if (timelines)
        if (auto r = driver_metadata::pg_recovery(m)) timelines->add(r->timeline, r->history);
      continue;
    }
    if (t.kind != catalog::TaskKind::backup || !driver_metadata::pg_physical(m) || !driver_metadata::pg_has_backup_end(m)) continue;
    if (timelines) timelines->add(driver_metadata::pg_timeline(m), driver_metadata::pg_history(m));
    if (!t.backup_set_id || !t.snapshot_id || t.snapshot_removed_at) continue;
    auto set = tx.backup_set(*t.backup_set_id);
    if (!set || set->forgotten_at || !set->attested) continue;
    BaseBackup b;
    b.end_us = driver_metadata::pg_backup_end_time_us(m);
    b.stop_lsn = driver_metadata::pg_stop_lsn(m);
    b.timeline = driver_metadata::pg_timeline(m);
    b.task = std::move(t);
    out.push_back(std::move(b));
  }
  std::sort(out.begin(), out.end(), [](const BaseBackup& a, const BaseBackup& b) { return a.end_us < b.end_us; });
  return out;
}

// The timeline a recovery target ends on as far as the catalog knows: the
// one named, the newest known (PostgreSQL's "latest"), or 0 for each base
// backup's own (--target-timeline current, --to-immediate).
uint32_t target_timeline(const plan::ParsedTarget& t, const Timelines& tl) {
  if (t.timeline_current || t.kind == cairn::v1::RecoveryTarget::KIND_IMMEDIATE) return 0;
  return t.timeline != 0 ? t.timeline : tl.newest;
}

// The newest base backup that is consistent before the target, on the target
// timeline's history; nullptr when none is.
const BaseBackup* base_for(const std::vector<BaseBackup>& bases, const plan::ParsedTarget& t, const Timelines& tl) {
  const uint32_t want = target_timeline(t, tl);
  const BaseBackup* best = nullptr;
  for (const auto& b : bases) {
    bool before = t.kind == cairn::v1::RecoveryTarget::KIND_TIME  ? b.end_us <= t.time_us
                  : t.kind == cairn::v1::RecoveryTarget::KIND_LSN ? b.stop_lsn <= t.lsn
                                                                  : true;
    if (before && tl.leads_to(b.timeline, b.stop_lsn, want)) best = &b;
  }
  return best;
}

std::string covered_from(const std::vector<BaseBackup>& bases) {
  if (bases.empty()) return "no base backup of it is in the catalog";
  return "its oldest base backup (set '" + bases.front().task.backup_set_id.value_or("") + "') is consistent from " +
         plan::format_time_us(bases.front().end_us) + " (LSN " + plan::format_lsn(bases.front().stop_lsn) + ")";
}

}  // namespace
}  // namespace orders_detail

Ordered Orders::create_restore(const std::string& actor, const cairn::v1::RestoreRequest& request) {
  using namespace orders_detail;
  return catalog_.transaction(actor, [&](Tx& tx) {
    cairn::v1::RestoreRequest req = request;
    plan::ParsedTarget target;
    const bool has_recovery = req.has_recovery_target() && req.recovery_target().kind() != cairn::v1::RecoveryTarget::KIND_UNSPECIFIED;
    if (has_recovery)
      if (std::string why = plan::parse_recovery_target(req.recovery_target(), &target); !why.empty())
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT, why);
    // No set named: a recovery target lets the controller pick the base
    // backup, the newest one consistent before the target.
    if (req.backup_set_id().empty()) {
      if (!has_recovery)
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                      "name the backup set to restore ('cairnctl backup list'); only with a recovery target "
                      "(--to-time, --to-lsn, ...) does the controller pick one");
      std::vector<Pick> replay;
      for (auto& p : select(tx, req.selector(), true))
        if (plan::replays_to_target(p.driver)) replay.push_back(p);
      if (replay.size() != 1)
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                      "the selection holds " + std::to_string(replay.size()) +
                          " components that replay to a recovery target; select one with --component and --node, "
                          "or name the backup set");
      Timelines tl;
      auto bases = base_backups(tx, replay[0].agent.id, replay[0].component, &tl);
      const BaseBackup* b = base_for(bases, target, tl);
      if (!b) {
        const uint32_t want = target_timeline(target, tl);
        throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                      "no base backup of '" + replay[0].component + "' on " + replay[0].agent.name + " is consistent before " +
                          target.describe() + (want > 1 ? " on the history of timeline " + std::to_string(want) : std::string()) + ": " +
                          covered_from(bases));
      }
      req.set_backup_set_id(*b->task.backup_set_id);
      req.mutable_selector()->clear_components();
      req.mutable_selector()->add_components(replay[0].component);
      req.mutable_selector()->clear_nodes();
      req.mutable_selector()->add_nodes(replay[0].agent.id);
    }
    auto source_set = tx.backup_set(req.backup_set_id());
    if (!source_set) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no backup set '" + req.backup_set_id() + "'");
    if (source_set->forgotten_at)
      throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                    "backup set '" + req.backup_set_id() + "' was expired by policy '" + source_set->policy.value_or("") +
                        "' and its snapshots removed from the repository; pick a newer set ('cairnctl backup list')");
    check_attested(tx, *source_set, req.accept_unattested(), "restore");
    // Every restored (agent, component) reads the snapshot that set holds for
    // it; every member of a cluster reads the one snapshot of its cluster.
    std::map<std::pair<std::string, std::string>, catalog::Task> source;
    auto source_key = [](const Pick& p) { return std::make_pair(clustered(p) ? "cluster:" + p.cluster_id : p.agent.id, p.component); };
    for (auto& t : tx.tasks_of_set(req.backup_set_id()))
      if (t.snapshot_id && (t.state == catalog::TaskState::succeeded || t.state == catalog::TaskState::partial))
        source[{t.cluster_id.empty() ? t.agent_id : "cluster:" + t.cluster_id, t.component}] = t;
    // What a revoked agent backed up restores on the agent that took its
    // name (a host rebuilt under a new key), unless that agent has its own.
    const std::vector<Pick> selected = select(tx, req.selector(), true);
    std::set<std::string> selected_agents;
    for (const auto& p : selected) selected_agents.insert(p.agent.id);
    for (const auto& id : selected_agents)
      for (const auto& old : tx.predecessors(id))
        for (const auto& [key, t] : std::map(source))
          if (key.first == old && !source.count({id, key.second})) source[{id, key.second}] = t;
    // --from-copy: every snapshot from the set's copy in that repository.
    if (!req.from_copy().empty()) {
      bool landed = false;
      for (const auto& c : tx.set_copies(req.backup_set_id()))
        if (c.repository == req.from_copy() && c.state == "copied" && !c.removed_at) landed = true;
      if (!landed)
        throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                      "backup set '" + req.backup_set_id() + "' has no copy in repository '" + req.from_copy() +
                          "' ('cairnctl backup show' lists its copies: one pending or failed cannot be read)");
      auto copies = tx.task_copies(req.backup_set_id(), req.from_copy());
      for (auto& [key, t] : source) {
        auto it = copies.find(t.id);
        if (it == copies.end()) continue;  // a snapshot the copy lacks is left out below, by name
        t.snapshot_id = it->second;
        t.repository = req.from_copy();
        t.snapshot_removed_at.reset();
      }
      std::erase_if(source, [&](const auto& e) { return !copies.count(e.second.id); });
    }
    std::vector<Pick> picks;
    for (const auto& p : selected)
      if (source.count(source_key(p))) picks.push_back(p);
    // An expired set that retention has cleared from some repositories, not
    // yet all: what is gone there cannot be restored, and leaving it out
    // silently would restore less than was asked.
    std::string removed;
    for (const auto& p : picks)
      if (const auto& t = source[source_key(p)]; t.snapshot_removed_at)
        removed +=
            std::string(removed.empty() ? "" : ", ") + "'" + p.component + "' on " + p.agent.name + " (repository '" + t.repository + "')";
    if (!removed.empty())
      throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                    "backup set '" + req.backup_set_id() + "' was expired by policy '" + source_set->policy.value_or("") +
                        "' and retention has removed the snapshots of " + removed +
                        "; pick a newer set ('cairnctl backup list'), or leave those out with --component/--node");
    check_whole_clusters(tx, picks, req.restore_target());
    check_members_present(tx, picks, [&](const Pick& p) -> const catalog::Task* {
      auto it = source.find(source_key(p));
      return it == source.end() ? nullptr : &it->second;
    });
    if (picks.empty())
      throw OpError(cairn::v1::ERROR_CODE_NOTHING_SELECTED,
                    "backup set '" + req.backup_set_id() + "' holds no snapshot for a selected, restorable component of an approved agent");

    check_restore_target(picks, req.restore_target());
    // A recovery target is for drivers that replay a log to it: restoring
    // another component without it would silently ignore what was asked.
    if (has_recovery) {
      std::string others;
      for (const auto& p : picks)
        if (!plan::replays_to_target(p.driver))
          others += std::string(others.empty() ? "" : ", ") + "'" + p.component + "' (" + p.driver + ") on " + p.agent.name;
      if (!others.empty())
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                      "a recovery target (--to-time, --to-lsn, --to-xid, --to-latest) applies to postgresql components "
                      "only, and the selection also holds " +
                          others + "; select the postgresql ones with --component");
      // The named set's base backup must be consistent before the target:
      // WAL replays forward only. The one that is, when there is one, is named.
      for (const auto& p : picks) {
        const auto& t = source[source_key(p)];
        auto m = driver_metadata::parse_optional(t.component_metadata);
        if (!driver_metadata::pg_physical(m)) continue;
        int64_t end_us = driver_metadata::pg_backup_end_time_us(m);
        uint64_t stop = driver_metadata::pg_stop_lsn(m);
        bool after = (target.kind == cairn::v1::RecoveryTarget::KIND_TIME && end_us > target.time_us) ||
                     (target.kind == cairn::v1::RecoveryTarget::KIND_LSN && stop > target.lsn);
        if (!after) continue;
        Timelines tl;
        auto bases = base_backups(tx, p.agent.id, p.component, &tl);
        const BaseBackup* b = base_for(bases, target, tl);
        throw OpError(
            cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
            "the base backup of '" + p.component + "' on " + p.agent.name + " in set '" + req.backup_set_id() +
                "' is consistent only from " + plan::format_time_us(end_us) + " (LSN " + plan::format_lsn(stop) + "), after " +
                target.describe() + ": " +
                (b ? "restore set '" + b->task.backup_set_id.value_or("") + "' instead, or leave the set out and the controller picks it"
                   : "no base backup of it is older; " + covered_from(bases)));
      }
    }
    check_members_connected(picks, connected_, supports_);
    const auto mode = req.write_mode() == cairn::v1::RESTORE_WRITE_MODE_MERGE ? cairn::v1::RESTORE_WRITE_MODE_MERGE
                                                                              : cairn::v1::RESTORE_WRITE_MODE_MIRROR;
    nlohmann::json sel = selector_json(req.selector());
    if (!req.restore_target().empty()) sel["restore_target"] = req.restore_target();
    sel["write_mode"] = write_mode_name(mode);
    if (req.force_identity()) sel["force_identity"] = true;  // every step of a cluster restore carries it
    if (has_recovery)
      sel["recovery_target"] = {{"kind", int(req.recovery_target().kind())},
                                {"value", req.recovery_target().value()},
                                {"exclusive", req.recovery_target().exclusive()}};
    std::optional<std::string> safety_set;
    if (!req.skip_safety_backup()) {
      // The current state is saved before anything is overwritten (DESIGN.md § restore).
      catalog::NewBackupSet safety;
      safety.trigger = "safety";
      safety.selector = sel;
      for (const auto& p : picks) {
        // Written where the restore reads (restore_wire), the catalog records it there.
        catalog::NewTask nt{p.agent.id, p.component, std::nullopt, std::nullopt};
        nt.repository = restore_repository(tx, p.agent.id, p.component, source[source_key(p)].snapshot_id.value_or(""));
        safety.tasks.push_back(std::move(nt));
      }
      safety_set = tx.create_backup_set(safety);
    }
    // Each restore task names its own safety task: its result ends that one
    // task and no other (Fleet::on_task_result).
    std::map<std::pair<std::string, std::string>, std::string> safety_task;
    if (safety_set)
      for (const auto& t : tx.tasks_of_set(*safety_set)) safety_task[{t.agent_id, t.component}] = t.id;
    // Members of one cluster that each hold their own data (Kafka brokers):
    // restored together, several of them go through the same steps as a
    // cluster, each from its own snapshot.
    std::map<std::string, int> members_selected;
    for (const auto& p : picks)
      if (!p.member_of.empty()) members_selected[p.driver + "/" + p.member_of]++;
    // Members (Kafka brokers) restored together with a cluster-scoped
    // component (their ZooKeeper) wait until every such cluster is restored
    // and verified: their tasks are made then (release_deferred), and not at
    // all when a cluster's restore failed.
    const bool has_cluster = std::any_of(picks.begin(), picks.end(), [](const Pick& p) { return clustered(p); });
    nlohmann::json deferred = nlohmann::json::array();
    catalog::NewRestore r;
    r.source_set_id = req.backup_set_id();
    r.skip_safety_backup = req.skip_safety_backup();
    r.safety_set_id = safety_set;
    for (const auto& p : picks) {
      catalog::NewTask nt{p.agent.id, p.component, source[source_key(p)].snapshot_id, std::nullopt};
      if (auto it = safety_task.find({p.agent.id, p.component}); it != safety_task.end()) nt.safety_task_id = it->second;
      nt.repository = restore_task_repository(tx, nt);
      if (has_cluster && !p.member_of.empty()) {
        bool steps = members_selected[p.driver + "/" + p.member_of] > 1;
        deferred.push_back({{"agent_id", p.agent.id},
                            {"component", p.component},
                            {"snapshot", nt.source_snapshot.value_or("")},
                            {"safety_task_id", nt.safety_task_id.value_or("")},
                            {"restore_step", proto::restore_step_name(steps ? v1::RESTORE_STEP_PREFLIGHT : v1::RESTORE_STEP_ALL)},
                            {"cluster_id", steps ? p.member_of : ""}});
        continue;
      }
      if (clustered(p)) {
        // Step by step on every member (on_task_ended makes the next ones),
        // starting with a preflight that stops nothing.
        nt.restore_step = cairn::v1::RESTORE_STEP_PREFLIGHT;
        nt.cluster_id = p.cluster_id;
      } else if (!p.member_of.empty() && members_selected[p.driver + "/" + p.member_of] > 1) {
        nt.restore_step = cairn::v1::RESTORE_STEP_PREFLIGHT;
        nt.cluster_id = p.member_of;
      }
      r.tasks.push_back(std::move(nt));
    }
    if (!deferred.empty()) sel["after_clusters"] = deferred;
    r.selector = sel;
    Ordered out;
    out.id = tx.create_restore(r);
    lock_targets(tx, picks, catalog::TaskKind::restore, out.id, config_.lock_ttl_seconds);

    std::map<std::string, std::vector<catalog::Task>> by_agent;
    for (auto& t : tx.tasks_of_restore(out.id)) by_agent[t.agent_id].push_back(t);
    PlanBatch plans(tx, config_, key_);
    for (const auto& [agent_id, tasks] : by_agent) {
      auto agent = tx.agent(agent_id);
      std::vector<std::string> ids;
      std::vector<cairn::v1::Task> wire;
      for (const auto& t : tasks) {
        ids.push_back(t.id);
        cairn::v1::Task w = restore_wire(tx, t, req.backup_set_id(), out.id);
        w.mutable_options()->set_restore_target(req.restore_target());
        w.mutable_options()->set_skip_safety_backup(req.skip_safety_backup());
        w.mutable_options()->set_force_identity(req.force_identity());
        w.mutable_options()->set_write_mode(mode);
        if (has_recovery) *w.mutable_options()->mutable_recovery_target() = req.recovery_target();
        if (t.safety_task_id) {
          w.mutable_options()->set_safety_backup_task_id(*t.safety_task_id);
          ids.push_back(*t.safety_task_id);  // bound to the same plan: the agent reports it
        }
        wire.push_back(w);
      }
      plans.add(*agent, ids, wire);
      out.agent_ids.push_back(agent_id);
    }
    plans.sign_and_store();
    return out;
  });
}

}  // namespace cairn::controller
