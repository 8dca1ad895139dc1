#include "controller/catalog/tx.h"

#include <algorithm>

#include "common/crypto/crypto.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"

namespace cairn::catalog {

std::string Tx::new_id(std::string_view prefix) const {
  // 64 random bits: unique within a catalog without coordination, short
  // enough to type in cairnctl.
  auto r = crypto::random_array<8>();
  return std::string(prefix) + "-" + to_hex(r);
}

int64_t Tx::audit(const AuditRecord& record) {
  AuditEvent e;
  if (!audit_head_) {
    auto last = db_.prepare("SELECT seq, hash FROM audit_outbox ORDER BY seq DESC LIMIT 1");
    if (last.step())
      audit_head_.emplace(last.integer(0), last.text(1));
    else
      audit_head_.emplace(0, std::string(kGenesisHash));
  }
  e.seq = audit_head_->first + 1;
  e.prev_hash = audit_head_->second;
  if (id_pool_used_ + 16 > id_pool_.size()) {
    crypto::random_bytes(id_pool_.data(), id_pool_.size());
    id_pool_used_ = 0;
  }
  e.event_id = to_hex(std::span<const uint8_t>(id_pool_.data() + id_pool_used_, 16));
  id_pool_used_ += 16;
  e.time = now_ms_;
  e.actor = actor_;
  e.action = record.action;
  e.target = record.target;
  e.outcome = record.outcome;
  e.reason = record.reason;
  // Serialised once; the hash covers exactly these bytes (audit.h).
  e.details = record.details.is_null() ? "{}" : record.details.dump();
  e.hash = audit_hash(e);
  db_.prepare(
         "INSERT INTO audit_outbox (seq, event_id, time, actor, action, target, outcome, reason, details,"
         " prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind_all(e.seq, e.event_id, e.time, e.actor, e.action, e.target, e.outcome, e.reason, e.details, e.prev_hash, e.hash)
      .run();
  audit_head_.emplace(e.seq, std::move(e.hash));
  ++audit_written_;
  return e.seq;
}

namespace {

// Retention's bound: the highest seq beyond the newest keep_events or older
// than max_age_ms; never the newest event (it anchors the chain). 0 when none.
int64_t retention_upto(sqlite::Db& db, int64_t now_ms, int64_t keep_events, int64_t max_age_ms) {
  int64_t newest = 0;
  {
    auto last = db.prepare("SELECT max(seq) FROM audit_outbox");
    if (last.step() && !last.is_null(0)) newest = last.integer(0);
  }
  if (newest == 0) return 0;
  int64_t upto = std::max<int64_t>(0, newest - std::max<int64_t>(keep_events, 1));
  auto old = db.prepare("SELECT max(seq) FROM audit_outbox WHERE time < ? AND seq < ?");
  old.bind(1, now_ms - max_age_ms).bind(2, newest);
  if (old.step() && !old.is_null(0)) upto = std::max(upto, old.integer(0));
  return upto;
}

// Deletes events up to seq `upto` matching `where`, unpublished ones included:
// the gate lets this delete through the keep-unpublished trigger (migration
// 0005) and is shut again in the same transaction. Returns how many went.
int64_t delete_through_gate(sqlite::Db& db, const std::string& where, int64_t upto) {
  db.exec("UPDATE audit_prune_gate SET open = 1 WHERE id = 1");
  db.prepare("DELETE FROM audit_outbox WHERE seq <= ?" + where).bind(1, upto).run();
  int64_t n = db.changes();
  db.exec("UPDATE audit_prune_gate SET open = 0 WHERE id = 1");
  return n;
}

}  // namespace

int64_t Tx::prune_audit(int64_t keep_events, int64_t max_age_ms) {
  // Everything at or below `upto` goes, published or not.
  int64_t upto = retention_upto(db_, now_ms_, keep_events, max_age_ms);
  if (upto == 0) return 0;
  int64_t first = 0;
  {
    auto f = db_.prepare("SELECT min(seq) FROM audit_outbox");
    if (f.step() && !f.is_null(0)) first = f.integer(0);
  }
  if (first == 0 || first > upto) return 0;
  int64_t n = delete_through_gate(db_, "", upto);
  audit({"audit.pruned",
         "audit_outbox",
         "ok",
         "retention",
         {{"count", n}, {"first_seq", first}, {"last_seq", upto}, {"keep_events", keep_events}, {"max_age_ms", max_age_ms}}});
  return n;
}

namespace {

AuditEvent audit_row(sqlite::Stmt& rows) {
  AuditEvent e;
  e.event_id = rows.text(0);
  e.seq = rows.integer(1);
  e.time = rows.integer(2);
  e.actor = rows.text(3);
  e.action = rows.text(4);
  e.target = rows.text(5);
  e.outcome = rows.text(6);
  e.reason = rows.text(7);
  e.details = rows.text(8);
  e.prev_hash = rows.text(9);
  e.hash = rows.text(10);
  return e;
}

constexpr const char* kAuditColumns =
    "SELECT event_id, seq, time, actor, action, target, outcome, reason, details, prev_hash, hash FROM audit_outbox ";

}  // namespace

std::vector<AuditEvent> Tx::audit_events(int64_t from_seq) const {
  auto rows = db_.prepare(std::string(kAuditColumns) + "WHERE seq >= ? ORDER BY seq");
  rows.bind(1, from_seq);
  std::vector<AuditEvent> out;
  while (rows.step()) out.push_back(audit_row(rows));
  return out;
}

std::vector<AuditEvent> Tx::unpublished_audit_events(int64_t after_seq, int64_t limit) const {
  auto rows = db_.prepare(std::string(kAuditColumns) + "WHERE seq > ? AND published_at IS NULL ORDER BY seq LIMIT ?");
  rows.bind(1, after_seq).bind(2, limit);
  std::vector<AuditEvent> out;
  while (rows.step()) out.push_back(audit_row(rows));
  return out;
}

std::optional<AuditEvent> Tx::audit_event(int64_t seq) const {
  auto rows = db_.prepare(std::string(kAuditColumns) + "WHERE seq = ?");
  rows.bind(1, seq);
  if (!rows.step()) return std::nullopt;
  return audit_row(rows);
}

int64_t Tx::mark_audit_published(int64_t upto_seq) {
  db_.prepare("UPDATE audit_outbox SET published_at = ? WHERE seq <= ? AND published_at IS NULL").bind_all(now_ms_, upto_seq).run();
  return db_.changes();
}

int64_t Tx::mark_audit_unpublished_after(int64_t after_seq) {
  db_.prepare("UPDATE audit_outbox SET published_at = NULL WHERE seq > ? AND published_at IS NOT NULL").bind(1, after_seq).run();
  return db_.changes();
}

int64_t Tx::audit_published_head() const {
  auto q = db_.prepare("SELECT max(seq) FROM audit_outbox WHERE published_at IS NOT NULL");
  return q.step() && !q.is_null(0) ? q.integer(0) : 0;
}

void Tx::set_audit_topic_mark(const AuditTopicMark& m) {
  db_.prepare(
         "INSERT INTO audit_topic_mark (id, topic, seq, hash, record_offset) VALUES (1, ?, ?, ?, ?) "
         "ON CONFLICT (id) DO UPDATE SET topic = excluded.topic, seq = excluded.seq, hash = excluded.hash, "
         "record_offset = excluded.record_offset")
      .bind_all(m.topic, m.seq, m.hash, m.offset)
      .run();
}

std::optional<Tx::AuditTopicMark> Tx::audit_topic_mark() const {
  auto q = db_.prepare("SELECT topic, seq, hash, record_offset FROM audit_topic_mark WHERE id = 1");
  if (!q.step()) return std::nullopt;
  return AuditTopicMark{q.text(0), q.integer(1), q.text(2), q.integer(3)};
}

int64_t Tx::audit_first_after(int64_t after_seq) const {
  auto q = db_.prepare("SELECT min(seq) FROM audit_outbox WHERE seq > ?");
  q.bind(1, after_seq);
  return q.step() && !q.is_null(0) ? q.integer(0) : 0;
}

Tx::Dropped Tx::cap_audit_outbox(int64_t max_unpublished) {
  Dropped d;
  if (max_unpublished <= 0) return d;
  const int64_t keep = std::max<int64_t>(0, max_unpublished - std::max<int64_t>(1, max_unpublished / 10) - 1);
  {
    // Through the partial index of unpublished events: O(unpublished). The
    // catalog runs this only when its bound on them says they may be over
    // (Catalog::before_commit), not in every audited transaction.
    auto q = db_.prepare("SELECT count(*), min(seq) FROM audit_outbox WHERE published_at IS NULL");
    if (!q.step()) return d;
    d.unpublished = q.integer(0);
    if (d.unpublished <= max_unpublished) return d;
    d.count = d.unpublished - keep;
    d.first = q.is_null(1) ? 0 : q.integer(1);
  }
  {
    auto q = db_.prepare("SELECT seq FROM audit_outbox WHERE published_at IS NULL ORDER BY seq LIMIT 1 OFFSET ?");
    q.bind(1, d.count - 1);
    if (!q.step()) return {};
    d.last = q.integer(0);
  }
  d.count = delete_through_gate(db_, " AND published_at IS NULL", d.last);
  d.unpublished -= d.count;
  audit({"audit.dropped",
         "audit_outbox",
         "dropped",
         "outbox_full",
         {{"count", d.count}, {"first_seq", d.first}, {"last_seq", d.last}, {"max_unpublished", max_unpublished}}});
  return d;
}

int64_t Tx::prune_published_audit(int64_t keep_events, int64_t max_age_ms, int64_t max_unpublished) {
  int64_t deleted = 0;
  // Unpublished beyond the cap: the oldest go, and the chain says so.
  int64_t unpublished = 0, first_unpublished = 0;
  {
    auto q = db_.prepare("SELECT count(*), min(seq) FROM audit_outbox WHERE published_at IS NULL");
    if (q.step()) {
      unpublished = q.integer(0);
      first_unpublished = q.is_null(1) ? 0 : q.integer(1);
    }
  }
  if (unpublished > max_unpublished) {
    int64_t drop = unpublished - max_unpublished;
    int64_t upto = 0;
    {
      auto q = db_.prepare("SELECT seq FROM audit_outbox WHERE published_at IS NULL ORDER BY seq LIMIT 1 OFFSET ?");
      q.bind(1, drop - 1);
      if (q.step()) upto = q.integer(0);
    }
    int64_t n = delete_through_gate(db_, " AND published_at IS NULL", upto);
    deleted += n;
    audit({"audit.dropped",
           "audit_outbox",
           "dropped",
           "outbox_full",
           {{"count", n}, {"first_seq", first_unpublished}, {"last_seq", upto}, {"max_unpublished", max_unpublished}}});
  }
  // Published ones age out as without a publisher; the newest event always stays.
  if (int64_t upto = retention_upto(db_, now_ms_, keep_events, max_age_ms); upto > 0) {
    db_.prepare("DELETE FROM audit_outbox WHERE seq <= ? AND published_at IS NOT NULL").bind(1, upto).run();
    deleted += db_.changes();
  }
  return deleted;
}

}  // namespace cairn::catalog
