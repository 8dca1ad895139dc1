// Offsite copies of backup sets by policy (migration 0018; controller/set_copy.h).
#include <algorithm>
#include <sstream>

#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"

namespace cairn::catalog {
namespace {

constexpr const char* kCopyColumns =
    "SELECT set_id, repository, state, reason, attempts, next_attempt_at, created_at, finished_at, removed_at, snapshots,"
    " bytes, blobs_new, started_at, snapshots_total, bytes_total FROM set_copies ";

SetCopy read_copy(const sqlite::Stmt& s) {
  SetCopy c;
  c.set_id = s.text(0);
  c.repository = s.text(1);
  c.state = s.text(2);
  c.reason = s.text(3);
  c.attempts = s.integer(4);
  c.next_attempt_at = s.integer(5);
  c.created_at = s.integer(6);
  if (!s.is_null(7)) c.finished_at = s.integer(7);
  if (!s.is_null(8)) c.removed_at = s.integer(8);
  c.snapshots = s.integer(9);
  c.bytes = s.integer(10);
  c.blobs_new = s.integer(11);
  if (!s.is_null(12)) c.started_at = s.integer(12);
  c.snapshots_total = s.integer(13);
  c.bytes_total = s.integer(14);
  return c;
}

}  // namespace

std::vector<SetCopy> Tx::set_copies_due(int64_t at, size_t limit) {
  db_.prepare(
         "INSERT OR IGNORE INTO set_copies (set_id, repository, state, created_at)"
         " SELECT b.id, p.copy_to, 'pending', ? FROM backup_sets b JOIN policies p ON p.name = b.policy"
         " WHERE p.copy_to != '' AND b.state IN ('complete', 'partial') AND b.trigger != 'safety'"
         " AND b.expired_at IS NULL AND b.forgotten_at IS NULL")
      .bind(1, at)
      .run();
  auto s = db_.prepare(std::string(kCopyColumns) +
                       "WHERE state IN ('pending', 'failed') AND next_attempt_at <= ? AND removed_at IS NULL AND set_id IN"
                       " (SELECT id FROM backup_sets WHERE expired_at IS NULL AND forgotten_at IS NULL)"
                       " ORDER BY created_at, set_id LIMIT ?");
  s.bind_all(at, int64_t(limit));
  std::vector<SetCopy> out;
  while (s.step()) out.push_back(read_copy(s));
  return out;
}

void Tx::set_copy_copied(const std::string& set_id, const std::string& repository, int64_t snapshots, int64_t bytes, int64_t blobs_new,
                         const std::map<std::string, std::string>& task_snapshots) {
  for (const auto& [task, snap] : task_snapshots)
    db_.prepare("INSERT OR REPLACE INTO task_copies (task_id, repository, snapshot_id) VALUES (?, ?, ?)")
        .bind_all(task, repository, snap)
        .run();
  db_.prepare(
         "UPDATE set_copies SET state = 'copied', reason = '', attempts = attempts + 1, finished_at = ?, snapshots = ?,"
         " bytes = ?, blobs_new = ?, started_at = NULL WHERE set_id = ? AND repository = ?")
      .bind_all(now(), snapshots, bytes, blobs_new, set_id, repository)
      .run();
  // The set's signed record is signed again, naming the copies, and written
  // there too (controller/set_record.h): a rebuild from the copy attests it.
  db_.prepare("INSERT OR IGNORE INTO set_records_due (set_id) SELECT id FROM backup_sets WHERE id = ? AND attested = 1")
      .bind(1, set_id)
      .run();
  audit({"set.copy",
         "backup_set:" + set_id,
         "ok",
         "",
         {{"repository", repository}, {"snapshots", snapshots}, {"bytes", bytes}, {"blobs_new", blobs_new}}});
}

void Tx::set_copy_failed(const std::string& set_id, const std::string& repository, const std::string& reason,
                         const std::map<std::string, std::string>& task_snapshots, int64_t first_delay) {
  for (const auto& [task, snap] : task_snapshots)
    db_.prepare("INSERT OR REPLACE INTO task_copies (task_id, repository, snapshot_id) VALUES (?, ?, ?)")
        .bind_all(task, repository, snap)
        .run();
  int64_t attempts = 0;
  {
    auto s = db_.prepare("SELECT attempts FROM set_copies WHERE set_id = ? AND repository = ?");
    s.bind_all(set_id, repository);
    if (s.step()) attempts = s.integer(0);
  }
  const int64_t delay = std::min<int64_t>(3600, std::max<int64_t>(1, first_delay) << std::min<int64_t>(attempts, 6));
  db_.prepare(
         "UPDATE set_copies SET state = 'failed', reason = ?, attempts = attempts + 1, finished_at = ?,"
         " next_attempt_at = ?, started_at = NULL WHERE set_id = ? AND repository = ?")
      .bind_all(reason, now(), now() + delay, set_id, repository)
      .run();
  audit({"set.copy",
         "backup_set:" + set_id,
         "failed",
         reason,
         {{"repository", repository}, {"attempt", attempts + 1}, {"next_attempt_at", now() + delay}}});
}

void Tx::set_copy_progress(const std::string& set_id, const std::string& repository, int64_t started_at, int64_t snapshots_done,
                           int64_t snapshots_total, int64_t bytes_done, int64_t bytes_total) {
  db_.prepare(
         "UPDATE set_copies SET started_at = ?, snapshots = ?, snapshots_total = ?, bytes = ?, bytes_total = ?"
         " WHERE set_id = ? AND repository = ? AND state != 'copied'")
      .bind_all(started_at, snapshots_done, snapshots_total, bytes_done, bytes_total, set_id, repository)
      .run();
}

void Tx::clear_copy_progress() { db_.prepare("UPDATE set_copies SET started_at = NULL WHERE started_at IS NOT NULL").run(); }

std::vector<SetCopy> Tx::set_copies(const std::string& set_id) const {
  auto s = db_.prepare(std::string(kCopyColumns) + "WHERE set_id = ? ORDER BY repository");
  s.bind(1, set_id);
  std::vector<SetCopy> out;
  while (s.step()) out.push_back(read_copy(s));
  return out;
}

std::map<std::string, std::string> Tx::task_copies(const std::string& set_id, const std::string& repository) const {
  auto s = db_.prepare(
      "SELECT c.task_id, c.snapshot_id FROM task_copies c JOIN tasks t ON t.id = c.task_id"
      " JOIN set_copies sc ON sc.set_id = t.backup_set_id AND sc.repository = c.repository"
      " WHERE t.backup_set_id = ? AND c.repository = ? AND sc.removed_at IS NULL");
  s.bind_all(set_id, repository);
  std::map<std::string, std::string> out;
  while (s.step()) out[s.text(0)] = s.text(1);
  return out;
}

void Tx::mark_copy_removed(const std::string& set_id, const std::string& repository) {
  db_.prepare("UPDATE set_copies SET removed_at = ? WHERE set_id = ? AND repository = ? AND removed_at IS NULL")
      .bind_all(now(), set_id, repository)
      .run();
}

std::vector<Tx::CopyStat> Tx::copy_stats() const {
  auto s = db_.prepare(
      "SELECT repository, sum(state = 'copied'), sum(state = 'pending'), sum(state = 'failed'),"
      " max(CASE WHEN state = 'copied' THEN finished_at END),"
      " (SELECT reason FROM set_copies f WHERE f.repository = c.repository AND f.state = 'failed'"
      "  ORDER BY f.finished_at DESC LIMIT 1),"
      " (SELECT set_id || ' ' || snapshots || ' ' || snapshots_total || ' ' || bytes || ' ' || bytes_total"
      "  FROM set_copies r WHERE r.repository = c.repository AND r.started_at IS NOT NULL LIMIT 1)"
      " FROM set_copies c WHERE removed_at IS NULL GROUP BY repository ORDER BY repository");
  std::vector<CopyStat> out;
  while (s.step()) {
    CopyStat c;
    c.repository = s.text(0);
    c.copied = s.integer(1);
    c.pending = s.integer(2);
    c.failed = s.integer(3);
    if (!s.is_null(4)) c.last_copied_at = s.integer(4);
    if (!s.is_null(5)) c.last_failure = s.text(5);
    if (!s.is_null(6)) {
      std::istringstream in(s.text(6));
      SetCopy r;
      in >> r.set_id >> r.snapshots >> r.snapshots_total >> r.bytes >> r.bytes_total;
      r.repository = c.repository;
      c.copying = std::move(r);
    }
    out.push_back(std::move(c));
  }
  return out;
}

}  // namespace cairn::catalog
