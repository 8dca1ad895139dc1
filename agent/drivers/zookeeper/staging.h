#pragma once
// The files of a backup, gathered where the repository reads them, and the
// files of a restore, put where the server reads them. Plain file operations
// (links, copies, renames), unit-tested without a server.
//
// Backup: the selection (layout.h) is gathered in a staging directory inside
// the data directory (the same filesystem, so finished files are hard links):
//   <dataDir>/.cairn-staging-<task>/            stored as <dataDir>/.cairn-zookeeper-data
//     myid, version-2/{snapshot.<z>, currentEpoch, acceptedEpoch, log.* (when the
//     logs live in the data directory)}, conf/{zoo.cfg, dynamic config file}
//   <dataLogDir>/.cairn-staging-<task>/         stored as <dataLogDir>/.cairn-zookeeper-log
//     version-2/log.*                           (only when dataLogDir is another directory)
// Finished snapshots and closed logs never change: hard links. The newest
// log is appended to: copied (holes kept). Small files (myid, epochs,
// configuration) are copied. A file removed between listing and linking (the
// purge task) makes the selection start over.
//
// Restore: the snapshot is restored into <dataDir>/.cairn-restore-<task>; its
// version-2 files go to this server's version-2 (logs to dataLogDir's), the
// directories they replace are renamed version-2.cairn-old-<stamp> and kept.
// myid and the configuration are never written.
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/drivers/zookeeper/layout.h"
#include "common/util/fs.h"

namespace cairn::agent::zookeeper {

inline constexpr const char* kDataRootName = ".cairn-zookeeper-data";
inline constexpr const char* kLogRootName = ".cairn-zookeeper-log";
inline constexpr const char* kOldPrefix = "version-2.cairn-old-";

struct StageSpec {
  std::string data_dir;
  std::string data_log_dir;  // equal to data_dir when the logs live there
  std::string config_file;
  std::string dynamic_config_file;  // empty: none
  std::string task;                 // names the staging directories (a plain name)
  // Every file of version-2 as it is, when it holds no valid snapshot (the
  // safety backup of a damaged server: whatever is there is kept).
  bool raw_when_no_snapshot = false;
};

struct Staged {
  std::string data_staging;  // <dataDir>/.cairn-staging-<task>
  std::string log_staging;   // empty when the logs live in the data directory
  Selection selection;
  uint64_t files_linked = 0, files_copied = 0;
  uint64_t bytes = 0;  // logical sizes of everything staged
  std::optional<uint64_t> current_epoch, accepted_epoch;
  std::string myid;        // empty: none (standalone)
  uint64_t last_zxid = 0;  // highest zxid found in the staged logs (0: none)
  uint64_t log_txns = 0;   // transactions in the staged logs
  bool logs_copied_across_filesystems = false;
  bool raw = false;  // no valid snapshot: every file of version-2 was taken as it is
};

// Throws cairn::Error naming what failed; what it created is removed first.
Staged stage(const StageSpec& spec);
using cairn::remove_leftovers;  // common/util/fs.h
using cairn::remove_tree;       // common/util/fs.h

using cairn::copy_file_sparse;  // common/util/fs.h

struct PlaceSpec {
  std::string data_root;               // the restored <...>/.cairn-zookeeper-data
  std::string log_root;                // the restored <...>/.cairn-zookeeper-log, or empty
  std::string data_dir, data_log_dir;  // this server's (equal when the logs live in the data directory)
  std::string stamp;                   // names the directories set aside, e.g. 20261123T101500Z
  std::string restore_id;              // recorded: only a rollback of the same restore puts the old data back
  std::string task_id, member;         // recorded: the task that placed it, the component
};

struct Placed {
  std::string old_data_v2;  // where the data directory's version-2 went ("" when there was none)
  std::string old_log_v2;   // the same for dataLogDir when it is another directory
  uint64_t files = 0, bytes = 0;
  uint64_t snapshot_zxid = 0;
  uint64_t zxid = 0;  // the last transaction of the restored logs (or the snapshot's)
};

// Checks the restored files (a valid snapshot and its logs are there), then
// swaps them in. On failure, what was moved is moved back and the error is
// thrown; the old version-2 directories are where they were.
Placed place_restored(const PlaceSpec& spec);

// What the last place_restored in data_dir recorded in its record
// (agent/restore_record.h): the payload (stamp, old_data_v2, old_log_v2,
// snapshot_zxid, zxid) with the record's restore as "restore"; an empty
// object when there is none or it cannot be read.
nlohmann::json read_restore_state(const std::string& data_dir);

struct RolledBack {
  bool nothing = false;                 // restore_id's data step never swapped anything in here
  std::string restored_aside;           // where the restored version-2 went
  std::string old_data_v2, old_log_v2;  // what was put back
};
// Undoes place_restored of restore restore_id: the restored version-2 (and
// the log directory's) is set aside as version-2.cairn-failed-<stamp> and the
// directories recorded in the state file are put back. When the state file
// is missing or records another restore, nothing is changed (`nothing`).
// Throws when what was set aside is gone.
RolledBack rollback(const std::string& data_dir, const std::string& data_log_dir, const std::string& stamp, const std::string& restore_id);

// Commits restore restore_id here: its state file is removed, what it set
// aside stays (the safety copy). Returns the state it recorded, or an empty
// object when the state file is missing or records another restore (then
// nothing is changed).
nlohmann::json commit_restore(const std::string& data_dir, const std::string& restore_id);

}  // namespace cairn::agent::zookeeper
