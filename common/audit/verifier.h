#pragma once
// Verifies the audit topic record by record (cairn-audit): the hash chain
// (each event's hash over its content, each prev_hash the previous event's
// hash, seq without gaps) and the signed checkpoints (a trusted controller key,
// the chain head they name present and equal). What it finds is a Problem
// naming the offending sequence numbers and the record's offset; verified
// events are handed back for output. Kafka itself is the caller's business, so
// this is unit-tested on records in memory.
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/audit/topic.h"
#include "common/plan/trust_store.h"

namespace cairn::audit {

struct Problem {
  // gap, reordered, duplicate, altered, conflict, malformed, checkpoint_key,
  // checkpoint_signature, checkpoint_mismatch, truncated
  std::string kind;
  int64_t first_seq = 0;  // the sequence numbers concerned (0 when none)
  int64_t last_seq = 0;
  int64_t offset = -1;  // the topic offset of the record (-1 when none)
  std::string message;
};

// Where a reader stands, saved between runs (cairn-audit --state).
struct VerifierState {
  int64_t next_offset = 0;       // the next topic offset to read
  int64_t expected_seq = 0;      // the next event's seq; 0 before the first event
  std::string last_hash;         // hash of event expected_seq - 1
  int64_t checkpoint_seq = 0;    // newest seq covered by a verified checkpoint
};

class Verifier {
 public:
  // trust: the controller keys to accept checkpoints from; keys announced in
  // checkpoints (signed by a key already trusted) join it.
  Verifier(plan::TrustStore& trust, VerifierState state = {});

  // One record of the topic. on_event gets each verified event (in topic order).
  void feed(int64_t offset, std::string_view key, std::string_view value,
            const std::function<void(const AuditEvent&, int64_t offset)>& on_event);

  // At the end of a one-shot check: events after the newest checkpoint are
  // reported as a warning (not signed yet), returned as text; empty if none.
  std::string unsigned_tail() const;

  const std::vector<Problem>& problems() const { return problems_; }
  std::vector<Problem> take_problems();
  const VerifierState& state() const { return st_; }
  int64_t events_verified() const { return events_; }
  int64_t checkpoints_verified() const { return checkpoints_; }
  // Set when the first event read was not seq 1 (earlier ones beyond the
  // topic's retention, or a reader resuming): the chain is anchored there.
  std::optional<int64_t> anchored_at() const { return anchored_at_; }

 private:
  void problem(std::string kind, int64_t first, int64_t last, int64_t offset, std::string message);
  void on_event_record(int64_t offset, const AuditEvent& e, const std::function<void(const AuditEvent&, int64_t)>& out);
  void on_checkpoint(int64_t offset, const Checkpoint& c);
  void remember(int64_t seq, const std::string& hash);
  const std::string* seen_hash(int64_t seq) const;

  plan::TrustStore& trust_;
  VerifierState st_;
  std::vector<Problem> problems_;
  int64_t events_ = 0, checkpoints_ = 0;
  std::optional<int64_t> anchored_at_;
  // hashes of the newest events seen, for duplicates and checkpoints
  std::map<int64_t, std::string> hashes_;
  std::set<int64_t> missing_;  // seqs a gap skipped, so a late arrival reads as reordered
  static constexpr size_t kWindow = 1'000'000;
};

}  // namespace cairn::audit
