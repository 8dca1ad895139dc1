#include "controller/catalog/tx.h"

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
  {
    auto last = db_.prepare("SELECT seq, hash FROM audit_outbox ORDER BY seq DESC LIMIT 1");
    if (last.step()) {
      e.seq = last.integer(0) + 1;
      e.prev_hash = last.text(1);
    } else {
      e.seq = 1;
      e.prev_hash = kGenesisHash;
    }
  }
  auto id = crypto::random_array<16>();
  e.event_id = to_hex(id);
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
      .bind_all(e.seq, e.event_id, e.time, e.actor, e.action, e.target, e.outcome, e.reason, e.details, e.prev_hash,
                e.hash)
      .run();
  return e.seq;
}

std::vector<AuditEvent> Tx::audit_events(int64_t from_seq) const {
  auto rows = db_.prepare(
      "SELECT event_id, seq, time, actor, action, target, outcome, reason, details, prev_hash, hash"
      " FROM audit_outbox WHERE seq >= ? ORDER BY seq");
  rows.bind(1, from_seq);
  std::vector<AuditEvent> out;
  while (rows.step()) {
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
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace cairn::catalog
