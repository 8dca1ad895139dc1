#pragma once
// What an agent has accepted, kept on disk so that a restart does not reopen a
// replay window: the highest sequence per controller, and every plan id and
// nonce accepted whose plan has not yet expired. An expired plan is refused
// for its expiry anyway, so its entry can go; the sequence stays forever.
#include <cstdint>
#include <map>
#include <string>

#include "common/util/encoding.h"
#include "proto/cairn.pb.h"

namespace cairn::plan {

class ReplayJournal {
 public:
  // An in-memory journal (tests, tools); record() does not persist.
  ReplayJournal() = default;
  // Loads the journal at path, or starts an empty one bound to path when the
  // file does not exist (first start). Throws cairn::Error(corrupt) when the
  // file exists but does not parse: an agent must not accept plans with a
  // journal it cannot read.
  static ReplayJournal open(const std::string& path);

  bool seen_plan_id(const std::string& plan_id) const { return plans_.count(plan_id) != 0; }
  bool seen_nonce(const std::string& nonce) const { return nonces_.count(nonce) != 0; }
  // 0 when nothing was accepted from this controller yet.
  uint64_t highest_sequence(const std::string& controller_id) const;
  // The highest over every controller: what an agent reports in Register,
  // before it knows which controller id it talks to.
  uint64_t highest_sequence_any() const {
    uint64_t m = 0;
    for (const auto& [c, s] : sequences_) m = s > m ? s : m;
    return m;
  }
  size_t entries() const { return plans_.size(); }

  // Records an accepted plan, drops entries that expired by `now`, and
  // persists atomically (temp file, fsync, rename, fsync dir) before
  // returning. Throws cairn::Error when the write fails; the in-memory state
  // is then unchanged, so the caller can refuse the plan.
  void record(const cairn::v1::PlanPayload& plan, int64_t now);
  // Drops expired entries and persists when anything changed.
  void prune(int64_t now);

 private:
  struct Entry {
    std::string nonce;  // raw bytes
    int64_t expires_at = 0;
  };
  void drop_expired(int64_t now);
  void save() const;

  std::string path_;
  std::map<std::string, uint64_t> sequences_;  // controller id -> highest accepted
  std::map<std::string, Entry> plans_;         // plan id -> entry
  std::map<std::string, int64_t> nonces_;      // nonce -> expires_at
};

}  // namespace cairn::plan
