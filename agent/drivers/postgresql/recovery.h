#pragma once
// A physical base backup's recovery, prepared from the repository: the WAL
// it needs, read out and checked before anything depends on it, and the
// files that make a copy of the data directory recover (backup_label,
// tablespace_map, recovery.signal, the recovery settings). Shared by the
// in-place restore (docs/postgresql.md § Point-in-time recovery) and the
// restore drill (docs/drills.md), which recovers a copy in its sandbox.
#include <sys/stat.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "agent/driver.h"
#include "agent/drivers/postgresql/wal.h"
#include "common/plan/recovery_target.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"

namespace cairn::agent::postgresql {

// The archived WAL of one database system, by file name (the newest
// snapshot of each; partial snapshots are not WAL that can be replayed).
// Whichever component archived it: a primary and its standbys are one
// database system (the same system identifier), and a standby never archives
// the segments pg_basebackup copied to it, which its primary did.
struct WalCatalog {
  std::map<std::string, repo::Snapshot> by_name;
  // Each timeline's history (its ancestors and where each ended), from its
  // .history file (read_histories); a timeline without one has no ancestors.
  std::map<uint32_t, std::vector<HistoryEntry>> histories;
};
WalCatalog load_wal_catalog(repo::Repository& r, const std::string& system_id);
WalCatalog wal_catalog_of(const std::vector<repo::Snapshot>& snapshots, const std::string& system_id);
// Reads every timeline history file of `cat` out of the repository (each at
// most 1 MiB) into cat.histories, using `scratch` (a directory) on the way.
// Throws cairn::Error naming a file that cannot be read or parsed.
void read_histories(repo::Repository& r, WalCatalog& cat, const std::string& scratch, const std::atomic<bool>* cancel);

// Timeline `tli`'s history as the server at `data_dir` keeps it
// (pg_wal/<tli>.history): [{"timeline": 1, "switch_lsn": "0/3000060"}, ...],
// its ancestors oldest first, each with the LSN where it ended; empty for
// timeline 1 or a file that is missing or unreadable. Recorded in a base
// backup's and a recovery's metadata, from which the controller picks a base
// backup on the target timeline's history.
nlohmann::json timeline_history(const std::string& data_dir, uint32_t tli);

// The timelines recovery from a base backup follows to reach a target
// timeline: each with the LSN it begins at (0 for the base backup's own).
struct TimelineStep {
  uint32_t timeline = 0;
  uint64_t begin = 0;
};
// The path from the base backup's timeline `base_tli` (consistent at `stop`)
// to `target`: empty when `target` did not branch off that timeline after
// `stop` (its history does not hold it, or left it before `stop`).
std::vector<TimelineStep> timeline_path(const WalCatalog& cat, uint32_t base_tli, uint64_t stop, uint32_t target);

// What a recovery of one base backup to one target reads from the archive.
struct WalPlan {
  std::vector<std::string> needed;  // segments from the backup's start, in replay order, then every history file
  uint64_t start = 0;               // the LSN replay starts at (the backup's redo point)
  uint64_t stop = 0;                // the LSN the base backup is consistent from
  uint32_t timeline = 0;            // the timeline recovery ends on (recovery_target_timeline)
  std::string timeline_said;        // which, and why: "timeline 2 (the newest ...)"
  uint64_t covered_lsn = 0;         // the end of the unbroken run of archived segments from the backup's start
  std::string gap;                  // the first segment not archived while a later one is ("": none)
  std::string newest;               // the newest segment archived on the path
  std::string covers;               // what the repository covers, said in a refusal
  std::string proof;                // after fetch_wal: where the target is reached ("transaction 812 committed at ...")
};

// Whether the archive covers `target` from base backup `base` (its metadata
// as the backup recorded it), following the timeline the target names
// (latest by default): {OK, ""} with `out` filled, else the code and why not,
// saying what the repository covers and that nothing was changed. A gap in
// the archive is refused here for a target that must pass it (the latest
// WAL, an LSN past it); a time or transaction target is decided by
// fetch_wal, which reads the commit records before the gap.
std::pair<cairn::v1::ErrorCode, std::string> plan_wal(const repo::Snapshot& base, const WalCatalog& cat, const plan::ParsedTarget& target,
                                                      WalPlan* out);

// Reads every file of `wal` into `wal_dir`, each segment checked
// (check_segment_file), then reads the WAL's records from the backup's start
// (wal_scan.h) and proves the target is reached by the intact WAL before any
// gap or damaged segment: {OK, seconds taken} with wal.proof set, or why not,
// naming the missing or damaged segment and the furthest point recovery from
// this base backup can reach. `count` counts the files read. History files
// read_histories left in <wal_dir>/.histories are moved, not read again.
// Stops at ctx.cancel (CANCELLED).
std::pair<cairn::v1::ErrorCode, std::string> fetch_wal(TaskContext& ctx, const WalCatalog& cat, WalPlan& wal, const repo::Snapshot& base,
                                                       const plan::ParsedTarget& target, const std::string& wal_dir, uint64_t memory_budget,
                                                       std::atomic<uint64_t>* count);

// load_wal_catalog, read_histories (into `scratch`) and plan_wal, for a
// restore's preflight and its run.
std::pair<cairn::v1::ErrorCode, std::string> plan_recovery(TaskContext& ctx, const repo::Snapshot& base, const plan::ParsedTarget& target,
                                                           const std::string& scratch, WalCatalog* cat, WalPlan* wal);

// A run of WAL segments missing from the archive while a later segment of
// the same timeline is in it: recovery along that timeline cannot pass it.
struct WalGapRun {
  uint32_t timeline = 0;
  uint64_t first = 0;  // the first missing segment number
  uint64_t count = 0;  // how many in a row
  uint64_t next = 0;   // the archived segment after them
};
// The gaps of every timeline in `cat` (histories read), from segment
// `from_segno` (the oldest base backup's start: WAL before it restores
// nothing) or, on a later timeline, from where it branched when that is
// later: oldest timeline first.
std::vector<WalGapRun> find_gaps(const WalCatalog& cat, uint64_t from_segno);

// The agent's check of the archive of database system `system_id`: the
// oldest base backup of it in `snapshots` (none: no gaps, nothing restores),
// the timelines' history files (read into `scratch`), and find_gaps.
std::vector<WalGapRun> check_archive(repo::Repository& r, const std::vector<repo::Snapshot>& snapshots, const std::string& system_id,
                                     const std::string& scratch, const std::atomic<bool>* cancel);

// Makes the restored data directory `staged` recover from `meta`'s base
// backup to `target`: backup_label, tablespace_map, recovery.signal, and the
// recovery block of postgresql.auto.conf (restore_command copying from
// `server_wal_dir`, the fetched WAL as the server will see that directory),
// each owned as `owner`. Throws on a write that fails.
void write_recovery_files(const std::string& staged, const nlohmann::json& meta, const plan::ParsedTarget& target, uint32_t timeline,
                          const std::string& server_wal_dir, const struct stat& owner);

}  // namespace cairn::agent::postgresql
