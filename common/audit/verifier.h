#pragma once
// Verifies the audit topic record by record (cairn-audit), failing closed: an
// event is verified only once a signed checkpoint from a trusted controller
// key covers it — the checkpoint signs the hash of event N, and each event's
// hash covers its predecessor's, so the chain from N back to the last
// verified event is authenticated by that one signature. Until then an event
// is pending: never handed out. What it finds is a Problem naming the
// offending sequence numbers and the record's offset; verified events are
// handed back for output, in seq order. Kafka itself is the caller's
// business, so this is unit-tested on records in memory.
//
// - Two different events with one seq are a `conflict`, both kept pending;
//   the checkpoint that covers the seq decides (the other is `forged`).
// - A trail whose first event is not seq 1 is a `gap` (the head was removed)
//   unless the reader was told where it starts (VerifierOptions::from_seq) or
//   resumes from a saved state.
// - expire(): events still pending longer than max_unsigned after they were
//   written are `unsigned`, and a newest checkpoint older than that is
//   `stale` (the controller signs at least every checkpoint interval while it
//   runs, idle or not): a tail cut or rewritten after its last checkpoint.
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/audit/topic.h"
#include "common/plan/trust_store.h"

namespace cairn::audit {

struct Problem {
  // gap, reordered, duplicate, altered, conflict, forged, malformed, unsigned,
  // stale, checkpoint_key, checkpoint_signature, checkpoint_mismatch, truncated
  std::string kind;
  int64_t first_seq = 0;  // the sequence numbers concerned (0 when none)
  int64_t last_seq = 0;
  int64_t offset = -1;  // the topic offset of the record (-1 when none)
  std::string message;
};

// An event read and not yet covered by a signed checkpoint.
struct PendingEvent {
  AuditEvent event;
  int64_t offset = -1;
};

// Where a reader stands, saved between runs (cairn-audit --state).
struct VerifierState {
  int64_t next_offset = 0;            // the next topic offset to read
  int64_t expected_seq = 0;           // the seq after the newest verified event; 0 before the first
  std::string last_hash;              // hash of event expected_seq - 1
  int64_t checkpoint_seq = 0;         // newest seq covered by a verified checkpoint
  int64_t checkpoint_time = 0;        // the signed time (unix ms) of the newest verified checkpoint
  std::vector<PendingEvent> pending;  // read, not verified yet (topic order)
};

struct VerifierOptions {
  // The trail is verified from this event (the ones before it were removed
  // on purpose, e.g. by the topic's retention); 0: from event 1.
  int64_t from_seq = 0;
  // How long an event may wait for a checkpoint, and how old the newest
  // checkpoint may be: the controller's checkpoint_interval_s plus a grace.
  int64_t max_unsigned_ms = 120'000;
};

class Verifier {
 public:
  // trust: the controller keys to accept checkpoints from; keys announced in
  // checkpoints (signed by a key already trusted) join it.
  Verifier(plan::TrustStore& trust, VerifierState state = {}, VerifierOptions options = {});

  // One record of the topic. on_event gets each event once a checkpoint
  // verifies it (in seq order).
  void feed(int64_t offset, std::string_view key, std::string_view value,
            const std::function<void(const AuditEvent&, int64_t offset)>& on_event);

  // Reports events pending longer than max_unsigned_ms (by their time; or
  // dated that far in the future) as `unsigned` and drops them, and a newest
  // checkpoint older than that as `stale` (once until a newer one arrives).
  // Returns a note on the events still pending (held back), empty if none.
  std::string expire(int64_t now_ms);

  const std::vector<Problem>& problems() const { return problems_; }
  std::vector<Problem> take_problems();
  const VerifierState& state() const { return st_; }
  int64_t events_verified() const { return events_; }
  int64_t checkpoints_verified() const { return checkpoints_; }

 private:
  void problem(std::string kind, int64_t first, int64_t last, int64_t offset, std::string message);
  void on_event_record(int64_t offset, const AuditEvent& e);
  void on_checkpoint(int64_t offset, const Checkpoint& c, const std::function<void(const AuditEvent&, int64_t)>& out);
  void remember(int64_t seq, const std::string& hash);
  const std::string* seen_hash(int64_t seq) const;
  void set_head(int64_t seq, const std::string& hash);
  // Positions in st_.pending by seq: every lookup of a pending event by its
  // seq goes through it, so reading N events costs O(N), not O(N * pending)
  // (an attacker who writes a million events and no checkpoint must not stall
  // the auditor). Rebuilt after each erase from pending (once per checkpoint).
  // A hash names one event (it covers the seq), so the pair (seq, hash) is
  // found by the hash; many forged events with one seq cost one lookup each.
  void reindex();
  void index_last();
  const PendingEvent* first_pending_at(int64_t seq) const;
  int pending_index(int64_t seq, const std::string& hash) const;  // -1: none
  std::unordered_map<int64_t, size_t> first_at_seq_;
  std::unordered_map<std::string, size_t> at_hash_;

  plan::TrustStore& trust_;
  VerifierState st_;
  VerifierOptions opt_;
  std::vector<Problem> problems_;
  int64_t events_ = 0, checkpoints_ = 0;
  int64_t max_seq_read_ = 0;      // the highest seq read so far (a lower one later is reordered)
  int64_t reported_through_ = 0;  // missing events up to here were reported
  bool stale_reported_ = false;
  // hashes of the newest verified events, for duplicates and checkpoints
  std::map<int64_t, std::string> hashes_;
  static constexpr size_t kWindow = 1'000'000;
  static constexpr size_t kMaxPending = 1'000'000;
};

}  // namespace cairn::audit
