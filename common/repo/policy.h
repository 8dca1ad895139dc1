#pragma once
// Retention policy for `forget`: which snapshots to keep, and why. A pure function
// of the snapshot list and the policy, so it can be tested with synthetic times.
//
// Semantics follow restic's `forget`:
//  - snapshots are grouped by source (host + sorted paths, see source_key) and the
//    policy is applied to each group on its own;
//  - keep_last N keeps the N newest snapshots;
//  - keep_hourly/daily/weekly/monthly/yearly N: walking the group newest first, the
//    newest snapshot of each distinct hour/day/ISO week/month/year (UTC) is kept
//    until N such periods have a kept snapshot; periods without snapshots do not count;
//  - keep_within D keeps every snapshot newer than (newest snapshot of the group - D);
//  - keep_tags keeps every snapshot carrying any of these tags.
// One deliberate difference from restic, because an operator expects it: a policy
// never removes every snapshot of a group. When it would (e.g. only --keep-tag is
// given and no snapshot of the group has the tag), the newest snapshot of that group
// is kept and its reason says so. Removing a whole group stays possible by naming
// the snapshots explicitly.
#include <cstdint>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "common/repo/snapshot.h"

namespace cairn::repo {

struct RetentionPolicy {
  int keep_last = 0;
  int keep_hourly = 0;
  int keep_daily = 0;
  int keep_weekly = 0;
  int keep_monthly = 0;
  int keep_yearly = 0;
  int64_t keep_within = 0;  // seconds
  std::vector<std::string> keep_tags;
  // The calendar the hourly...yearly periods are counted in: UTC unless set
  // (a backup policy counts days in its own time zone).
  std::function<std::tm(int64_t)> civil_time;

  // True when no rule is set: such a policy would keep nothing and is refused.
  bool empty() const;
  // "last 3, daily 7, within 7d, tag 'important'": for messages and reports.
  std::string describe() const;
};

struct RetentionDecision {
  Snapshot snapshot;
  bool keep = false;
  std::vector<std::string> reasons;  // why it is kept ("last 1", "daily 2", ...); empty when removed
};

struct RetentionGroup {
  std::string hostname;
  std::vector<std::string> paths;            // sorted
  std::vector<RetentionDecision> snapshots;  // newest first
  bool guard_kept_newest = false;            // the never-remove-all guard applied
};

// Applies the policy to every group. Groups come sorted by host, then paths.
// Throws Error(Errc::invalid_input) for an empty policy or a negative count.
std::vector<RetentionGroup> apply_retention(const std::vector<Snapshot>& snapshots, const RetentionPolicy& policy);

// Log chains: a snapshot that holds one piece of a log (a WAL segment) is
// tagged "log:<chain>:<position>" (position: 16 hex digits, ordered as
// numbers; ffffffffffffffff, the last, for a piece every replay reads, like a
// timeline history file);
// a snapshot that replays the log from a position on (a base backup) says so
// in its component metadata: {"replays_log": {"log": "<chain>", "from":
// "<position>"}}. The snapshots among `kept` that replay `piece`: forgetting
// it would leave a gap their recovery cannot pass. Empty for a snapshot that
// is no piece of a log. Knows no driver: the tags and the key are the
// contract.
std::vector<const Snapshot*> replayed_by(const Snapshot& piece, const std::vector<const Snapshot*>& kept);
// "log:<chain>:<position>" for a piece at `position` of `chain`; the
// position as written in both (16 lower-case hex digits).
std::string log_piece_tag(const std::string& chain, uint64_t position);
std::string log_position(uint64_t position);

// "7d", "36h", "1h30min": a compact form of a number of seconds.
std::string format_duration(int64_t seconds);

}  // namespace cairn::repo
