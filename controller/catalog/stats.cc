// Aggregates for /metrics and the status page (controller/status_view.h).
#include <map>

#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"
#include "controller/driver_metadata.h"

namespace cairn::catalog {

std::vector<BackupStat> Tx::backup_stats() const {
  // Backups someone asked for or a policy ran; safety backups are a restore's.
  auto s = db_.prepare(
      "SELECT coalesce(b.policy, ''), t.component, a.name, t.repository, t.state, count(*),"
      " max(CASE WHEN t.state = 'succeeded' THEN t.updated_at END),"
      " (SELECT sn.bytes FROM snapshots sn JOIN tasks t2 ON t2.id = sn.task_id JOIN backup_sets b2 ON b2.id = t2.backup_set_id"
      "   WHERE t2.agent_id = t.agent_id AND t2.component = t.component AND t2.state = 'succeeded'"
      "   AND coalesce(b2.policy, '') = coalesce(b.policy, '') ORDER BY t2.updated_at DESC LIMIT 1),"
      " sum(CASE WHEN t.updated_at - t.created_at <= 1 THEN 1 ELSE 0 END),"
      " sum(CASE WHEN t.updated_at - t.created_at <= 10 THEN 1 ELSE 0 END),"
      " sum(CASE WHEN t.updated_at - t.created_at <= 60 THEN 1 ELSE 0 END),"
      " sum(CASE WHEN t.updated_at - t.created_at <= 300 THEN 1 ELSE 0 END),"
      " sum(CASE WHEN t.updated_at - t.created_at <= 900 THEN 1 ELSE 0 END),"
      " sum(CASE WHEN t.updated_at - t.created_at <= 3600 THEN 1 ELSE 0 END),"
      " sum(CASE WHEN t.updated_at - t.created_at <= 14400 THEN 1 ELSE 0 END),"
      " sum(t.updated_at - t.created_at)"
      " FROM tasks t JOIN backup_sets b ON b.id = t.backup_set_id JOIN agents a ON a.id = t.agent_id"
      " WHERE t.kind = 'backup' AND b.trigger <> 'safety' AND t.state IN ('succeeded', 'partial', 'failed', 'missed', 'rejected')"
      " GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5");
  std::vector<BackupStat> out;
  while (s.step()) {
    BackupStat b;
    b.policy = s.text(0);
    b.component = s.text(1);
    b.agent = s.text(2);
    b.repository = s.text(3);
    b.state = s.text(4);
    b.count = s.integer(5);
    if (!s.is_null(6)) b.last_success_at = s.integer(6);
    if (!s.is_null(7)) b.last_bytes = s.integer(7);
    for (int i = 0; i < 7; ++i) b.duration_le[i] = s.integer(8 + i);
    b.duration_sum = s.integer(15);
    out.push_back(std::move(b));
  }
  return out;
}

std::vector<CountStat> Tx::restore_stats() const {
  // One count per node restore task that ended, and one per member of each
  // cluster restore that ended, by what that member's own steps did, as the
  // catalog shows them: failed (or partial) when one of its steps did;
  // succeeded when the restore committed; neither when another member's
  // failure ended the restore before this one's data was restored for good
  // (that member counts the failure; the alert fires on it).
  auto s = db_.prepare(
      "SELECT component, name, state, count(*) FROM ("
      "  SELECT t.component AS component, a.name AS name, t.state AS state, t.id AS what"
      "  FROM tasks t JOIN agents a ON a.id = t.agent_id"
      "  WHERE t.kind = 'restore' AND t.restore_step = '' AND t.restore_id NOT LIKE 'dr-%'"
      "  AND t.state IN ('succeeded', 'partial', 'failed', 'missed', 'rejected')"
      "  UNION ALL"
      "  SELECT t.component, a.name,"
      "    CASE WHEN sum(t.state IN ('failed', 'missed', 'rejected')) > 0 THEN 'failed'"
      "         WHEN sum(t.state = 'partial') > 0 THEN 'partial'"
      "         WHEN r.state = 'complete' THEN 'succeeded' ELSE '' END, t.restore_id"
      "  FROM tasks t JOIN agents a ON a.id = t.agent_id JOIN restores r ON r.id = t.restore_id"
      "  WHERE t.kind = 'restore' AND t.restore_step != '' AND r.state != 'running'"
      "  GROUP BY t.restore_id, t.agent_id, t.component"
      ") WHERE state <> '' GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
  std::vector<CountStat> out;
  while (s.step()) out.push_back({{s.text(0), s.text(1), s.text(2)}, s.integer(3)});
  return out;
}

std::string drill_verdict(std::string_view state, std::string_view metadata, bool stopped) {
  if (state == "succeeded") return "proven";
  if (state == "missed" || state == "rejected" || stopped) return "not_run";
  namespace dm = controller::driver_metadata;
  if (dm::drill_not_run(dm::parse(metadata))) return "not_run";
  return "failed";
}

namespace {

// The reasons that say a drill was stopped, not judged: its agent lost or
// revoked, the drill cancelled.
constexpr ErrorCode kDrillStopped[] = {cairn::v1::ERROR_CODE_AGENT_REVOKED, cairn::v1::ERROR_CODE_CANCELLED,
                                       cairn::v1::ERROR_CODE_AGENT_LOST};

// Every drill task that ended, oldest first, with what drill_verdict reads:
// component, state, updated_at, metadata, stopped (a kDrillStopped reason),
// the first reason.
std::string ended_drills_sql() {
  std::string codes;
  for (ErrorCode c : kDrillStopped) codes += (codes.empty() ? "" : ", ") + std::to_string(int(c));
  return "SELECT dt.component, dt.state, dt.updated_at, coalesce(dt.component_metadata, ''),"
         " EXISTS (SELECT 1 FROM task_reasons r WHERE r.task_id = dt.id AND r.code IN (" +
         codes +
         ")),"
         " coalesce((SELECT detail FROM task_reasons WHERE task_id = dt.id ORDER BY ordinal LIMIT 1), dt.state)";
}

}  // namespace

std::string drill_verdict(const Task& t) {
  bool stopped = false;
  for (const auto& r : t.reasons)
    for (ErrorCode c : kDrillStopped) stopped = stopped || r.code == c;
  return drill_verdict(to_string(t.state), t.component_metadata.value_or(""), stopped);
}

std::string drill_verdict(const std::vector<Task>& tasks) {
  if (tasks.empty()) return "";
  std::string out = "proven";
  for (const auto& t : tasks) {
    if (!is_terminal(t.state)) return "";
    const std::string v = drill_verdict(t);
    if (v == "failed")
      out = v;
    else if (v == "not_run" && out == "proven")
      out = v;
  }
  return out;
}

std::vector<DrillStat> Tx::drill_stats() const {
  // Per drilled component: the outcomes, when it was last proven, and the
  // newest proving drill's result (its phases' seconds: the measured RTO).
  auto s = db_.prepare(ended_drills_sql() +
                       " FROM tasks dt WHERE dt.kind = 'restore' AND dt.restore_id LIKE 'dr-%'"
                       " AND dt.state IN ('succeeded', 'partial', 'failed', 'missed', 'rejected')"
                       " ORDER BY dt.updated_at, dt.rowid");
  std::map<std::string, DrillStat> by;
  while (s.step()) {
    DrillStat& d = by[s.text(0)];
    d.component = s.text(0);
    const std::string verdict = drill_verdict(s.text(1), s.text(3), s.integer(4) != 0);
    if (verdict == "proven") {
      ++d.proven;
      d.last_proven_at = s.integer(2);
      d.last_metadata = nlohmann::json::parse(s.text(3), nullptr, false);
    } else if (verdict == "not_run") {
      ++d.not_run;
    } else {
      ++d.failed;
    }
  }
  std::vector<DrillStat> out;
  for (auto& [k, v] : by) out.push_back(std::move(v));
  return out;
}

std::vector<ComponentHealth> Tx::component_health() const {
  std::map<std::pair<std::string, std::string>, ComponentHealth> rows;
  auto row = [&](const std::string& component, const std::string& where) -> ComponentHealth& {
    auto& r = rows[{component, where}];
    r.component = component;
    r.where = where;
    return r;
  };
  {
    auto s = db_.prepare(
        "SELECT t.component, CASE WHEN t.cluster_id <> '' THEN 'cluster ' || t.cluster_id ELSE a.name END,"
        " max(t.updated_at) FROM tasks t JOIN backup_sets b ON b.id = t.backup_set_id JOIN agents a ON a.id = t.agent_id"
        " WHERE t.kind = 'backup' AND b.trigger <> 'safety' AND t.state = 'succeeded' AND t.snapshot_removed_at IS NULL"
        " GROUP BY 1, 2");
    while (s.step()) row(s.text(0), s.text(1)).newest_backup_at = s.integer(2);
  }
  {
    // The newest ended backup of each: one that did not succeed shows, though
    // an older one did (the data an outage costs grows from that older one).
    auto s = db_.prepare(
        // SQLite takes the bare columns from the row max() picked.
        "SELECT t.component, CASE WHEN t.cluster_id <> '' THEN 'cluster ' || t.cluster_id ELSE a.name END, t.state,"
        " max(t.updated_at), t.id"
        " FROM tasks t JOIN backup_sets b ON b.id = t.backup_set_id JOIN agents a ON a.id = t.agent_id"
        " WHERE t.kind = 'backup' AND b.trigger <> 'safety' AND t.state IN ('succeeded', 'partial', 'failed', 'missed', 'rejected')"
        " GROUP BY 1, 2");
    auto why = db_.prepare("SELECT detail FROM task_reasons WHERE task_id = ? ORDER BY ordinal LIMIT 1");
    while (s.step()) {
      auto& r = row(s.text(0), s.text(1));
      if (s.text(2) == "succeeded") {
        r.newest_backup_failure.clear();
        r.newest_backup_failed_at = 0;
      } else {
        why.reset();
        why.bind_all(s.text(4));
        r.newest_backup_failure = s.text(2) + (why.step() ? ": " + why.text(0) : std::string());
        r.newest_backup_failed_at = s.integer(3);
      }
    }
  }
  {
    // Every drill task with the backup task that wrote its snapshot, newest
    // last. A drill that could not run says nothing of the backup: it does
    // not clear an earlier failure, nor make one.
    auto s = db_.prepare(
        ended_drills_sql() +
        ", CASE WHEN bt.cluster_id <> '' THEN 'cluster ' || bt.cluster_id ELSE a.name END"
        " FROM tasks dt JOIN tasks bt INDEXED BY tasks_snapshot ON bt.snapshot_id = dt.source_snapshot AND bt.kind = 'backup'"
        " JOIN agents a ON a.id = bt.agent_id"
        " WHERE dt.kind = 'restore' AND dt.restore_id LIKE 'dr-%' AND dt.state IN ('succeeded', 'partial', 'failed', 'missed', 'rejected')"
        " ORDER BY dt.updated_at, dt.rowid");
    while (s.step()) {
      auto& r = row(s.text(0), s.text(6));
      const std::string verdict = drill_verdict(s.text(1), s.text(3), s.integer(4) != 0);
      if (verdict == "proven") {
        r.proven_at = s.integer(2);
        r.last_drill_failure.clear();
        r.last_drill_not_run.clear();
        r.rto_seconds = 0;
        auto m = nlohmann::json::parse(s.text(3), nullptr, false);
        if (m.is_object() && m.contains("drill") && m["drill"].is_object() && m["drill"].contains("phases") &&
            m["drill"]["phases"].is_object())
          for (const auto& [k, v] : m["drill"]["phases"].items())
            if (v.is_number()) r.rto_seconds += v.get<double>();
      } else if (verdict == "not_run") {
        r.last_drill_not_run = s.text(5);
      } else {
        r.last_drill_failure = s.text(5);
        r.last_drill_not_run.clear();
      }
    }
  }
  std::vector<ComponentHealth> out;
  for (auto& [k, v] : rows) out.push_back(std::move(v));
  return out;
}

std::vector<CountStat> Tx::snapshot_stats() const {
  auto s = db_.prepare(
      "SELECT t.repository, t.component, a.name, count(*) FROM snapshots sn JOIN tasks t ON t.id = sn.task_id"
      " JOIN backup_sets b ON b.id = sn.backup_set_id JOIN agents a ON a.id = sn.agent_id"
      " WHERE b.forgotten_at IS NULL AND t.snapshot_removed_at IS NULL GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
  std::vector<CountStat> out;
  while (s.step()) out.push_back({{s.text(0), s.text(1), s.text(2)}, s.integer(3)});
  return out;
}

std::vector<ExpiredStat> Tx::expired_stats() const {
  auto s = db_.prepare(
      "SELECT t.repository, count(DISTINCT b.id), min(b.expired_at) FROM backup_sets b JOIN tasks t ON t.backup_set_id = b.id"
      " WHERE b.expired_at IS NOT NULL AND b.forgotten_at IS NULL AND t.snapshot_id IS NOT NULL"
      " AND t.snapshot_removed_at IS NULL GROUP BY 1 ORDER BY 1");
  std::vector<ExpiredStat> out;
  while (s.step()) out.push_back({s.text(0), s.integer(1), s.integer(2)});
  return out;
}

std::vector<StoredSnapshot> Tx::snapshots_in(const std::string& repository) const {
  // A snapshot's time from the snapshots table (the agent's report), else
  // the task's end.
  auto s = db_.prepare(
      "SELECT t.snapshot_id, t.backup_set_id, t.id, coalesce(a.name, t.agent_id), t.component,"
      " coalesce(sn.created_at, t.updated_at), 0"
      " FROM tasks t JOIN backup_sets b ON b.id = t.backup_set_id LEFT JOIN agents a ON a.id = t.agent_id"
      " LEFT JOIN snapshots sn ON sn.task_id = t.id"
      " WHERE t.kind = 'backup' AND t.repository = ?1 AND t.snapshot_id IS NOT NULL AND t.snapshot_removed_at IS NULL"
      " AND b.expired_at IS NULL AND b.forgotten_at IS NULL"
      " UNION ALL"
      " SELECT c.snapshot_id, t.backup_set_id, t.id, coalesce(a.name, t.agent_id), t.component,"
      " coalesce(sc.finished_at, t.updated_at), 1"
      " FROM task_copies c JOIN tasks t ON t.id = c.task_id JOIN backup_sets b ON b.id = t.backup_set_id"
      " JOIN set_copies sc ON sc.set_id = t.backup_set_id AND sc.repository = c.repository"
      " LEFT JOIN agents a ON a.id = t.agent_id"
      " WHERE c.repository = ?1 AND sc.state = 'copied' AND sc.removed_at IS NULL"
      " AND b.expired_at IS NULL AND b.forgotten_at IS NULL"
      " ORDER BY 2, 3, 7");
  s.bind(1, repository);
  std::vector<StoredSnapshot> out;
  while (s.step()) out.push_back({s.text(0), s.text(1), s.text(2), s.text(3), s.text(4), s.integer(5), s.integer(6) != 0});
  return out;
}

}  // namespace cairn::catalog
