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
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/driver.h"
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
};
WalCatalog load_wal_catalog(repo::Repository& r, const std::string& system_id);

// What a recovery of one base backup to one target reads from the archive.
struct WalPlan {
  std::vector<std::string> needed;  // segments from the backup's start to the last the target needs, then every history file
  uint64_t stop = 0;                // the LSN the base backup is consistent from
  uint64_t covered_lsn = 0;         // the end of the unbroken run of archived segments from the backup's start
  std::string covers;               // what the repository covers, said in a refusal
};

// Whether the archive covers `target` from base backup `base` (its metadata
// as the backup recorded it): {OK, ""} with `out` filled, else the code and
// why not, saying what the repository covers and that nothing was changed.
std::pair<cairn::v1::ErrorCode, std::string> plan_wal(const repo::Snapshot& base, const WalCatalog& cat,
                                                      const plan::ParsedTarget& target, WalPlan* out);

// Reads every file of `wal` into `wal_dir`, each segment checked
// (check_segment_file): {OK, seconds taken} or the first damaged file, named
// with the furthest point recovery from this base backup could reach.
// `count` counts the files read. Stops at ctx.cancel (CANCELLED).
std::pair<cairn::v1::ErrorCode, std::string> fetch_wal(TaskContext& ctx, const WalCatalog& cat, const WalPlan& wal,
                                                       const repo::Snapshot& base, const plan::ParsedTarget& target,
                                                       const std::string& wal_dir, uint64_t memory_budget,
                                                       std::atomic<uint64_t>* count);

// Makes the restored data directory `staged` recover from `meta`'s base
// backup to `target`: backup_label, tablespace_map, recovery.signal, and the
// recovery block of postgresql.auto.conf (restore_command copying from
// `server_wal_dir`, the fetched WAL as the server will see that directory),
// each owned as `owner`. Throws on a write that fails.
void write_recovery_files(const std::string& staged, const nlohmann::json& meta, const plan::ParsedTarget& target,
                          const std::string& server_wal_dir, const struct stat& owner);

}  // namespace cairn::agent::postgresql
