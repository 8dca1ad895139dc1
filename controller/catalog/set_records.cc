// Which repositories hold each set's signed record (controller/set_record.h).
#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"

namespace cairn::catalog {

std::vector<std::string> Tx::set_records_due(size_t limit) const {
  auto s = db_.prepare(
      "SELECT d.set_id FROM set_records_due d JOIN backup_sets b ON b.id = d.set_id"
      " ORDER BY b.created_at, b.id LIMIT ?");
  s.bind(1, int64_t(limit));
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

std::vector<std::string> Tx::set_snapshot_repositories(const std::string& set_id) const {
  // Its copies' repositories too (a policy's copy_to): a rebuild from a copy
  // finds the set's record there.
  auto s = db_.prepare(
      "SELECT DISTINCT repository FROM tasks WHERE backup_set_id = ? AND kind = 'backup'"
      " AND snapshot_id IS NOT NULL AND snapshot_removed_at IS NULL"
      " UNION SELECT repository FROM set_copies WHERE set_id = ? AND state = 'copied' AND removed_at IS NULL"
      " ORDER BY 1");
  s.bind_all(set_id, set_id);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

void Tx::set_record_written(const std::string& set_id, const std::string& repository, const std::string& key_id) {
  db_.prepare("INSERT OR REPLACE INTO set_records (set_id, repository, key_id, written_at) VALUES (?, ?, ?, ?)")
      .bind_all(set_id, repository, key_id, now())
      .run();
}

void Tx::set_record_not_due(const std::string& set_id) {
  db_.prepare("DELETE FROM set_records_due WHERE set_id = ?").bind(1, set_id).run();
}

void Tx::set_records_due_unwritten(const std::string& key_id) {
  db_.prepare(
         "INSERT OR IGNORE INTO set_records_due (set_id) SELECT b.id FROM backup_sets b"
         " WHERE b.state IN ('complete', 'partial', 'failed') AND b.trigger != 'safety' AND b.forgotten_at IS NULL"
         " AND b.attested = 1 AND NOT EXISTS (SELECT 1 FROM set_records r WHERE r.set_id = b.id AND r.key_id = ?)")
      .bind(1, key_id)
      .run();
}

std::vector<std::string> Tx::set_record_repositories(const std::string& set_id, const std::string& key_id) const {
  auto s = db_.prepare("SELECT repository FROM set_records WHERE set_id = ? AND (? = '' OR key_id = ?) ORDER BY 1");
  s.bind_all(set_id, key_id, key_id);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

void Tx::savepoint(const std::function<void()>& fn) {
  db_.exec("SAVEPOINT cairn_part");
  try {
    fn();
  } catch (...) {
    db_.exec("ROLLBACK TO cairn_part; RELEASE cairn_part");
    throw;
  }
  db_.exec("RELEASE cairn_part");
}

bool Tx::task_exists(const std::string& id) const { return db_.prepare("SELECT 1 FROM tasks WHERE id = ?").bind(1, id).step(); }

}  // namespace cairn::catalog
