#pragma once
// Backup: walk sources depth-first, skip unchanged files by metadata, chunk, store,
// write each directory's tree as soon as its children are stored, and the snapshot
// last. Pipelined: the walk feeds reader threads through a bounded window of files,
// readers read and cut chunks, worker threads hash, compress, encrypt and pack them;
// memory is bounded by the window, a byte budget on the queue between readers and
// workers and the depth of the tree, not by input size.
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/repo/chunker.h"
#include "common/repo/progress.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"

namespace cairn::repo {

struct BackupOptions {
  std::vector<std::string> paths;  // files or directories
  // Source mapping: a path of `paths` (as stored in the snapshot) → the path
  // it is read from. A per-run directory (Prometheus's snapshot, a link
  // staging directory) is stored at a stable path, so the next backup finds
  // its parent's entries. The stable path's parent directories are read from
  // this host as they are.
  std::map<std::string, std::string> path_map;
  // The sources are hard links to files never changed once written: linking
  // changes an inode's ctime, so a file is unchanged when inode, size and
  // mtime match its parent's.
  bool ignore_ctime = false;
  // Files that change or vanish while they are read are no errors: the copy
  // is made consistent afterwards by replaying a log (a PostgreSQL base
  // backup and its WAL). Changed files are stored as read and counted in the
  // summary; vanished ones are left out.
  bool changes_repaired = false;
  // Stored in the snapshot as "component" (a driver's metadata); read after
  // check_lock ran, which may still set it.
  nlohmann::json component_metadata;
  std::vector<std::string> tags;
  std::vector<std::string> excludes;  // globs matched against the full path and the base name
  std::string stdin_name;             // set: back up stdin_fd as one file of this name
  int stdin_fd = 0;
  std::optional<ChunkProfile> profile;  // forced profile; otherwise chosen per file name
  // Files of 64 KiB or more under these snapshot paths are cut with the
  // relation profile (128 KiB chunks on average) whatever their names: a
  // database's files whose fixed-size pages change one by one (PostgreSQL's
  // relation files, named by number), so that an update re-stores a few
  // small chunks, not 1 MiB ones.
  std::vector<std::string> page_dirs;
  // The parent: its entries are reused for files whose inode, size, mtime and
  // ctime match, without reading them. `search` takes `parent` when set, else
  // the newest snapshot of the same host and paths; whoever can write the
  // repository can plant that one, so it is only for a repository that one
  // host writes (cairnctl repo backup). `named_only` takes `parent` or none,
  // never searching: the agent, whose parent the controller names.
  enum class ParentRule { search, named_only };
  ParentRule parent_rule = ParentRule::search;
  std::string parent;  // a snapshot id (search: also a prefix or "latest"); empty: see parent_rule
  bool force = false;  // read every file even when unchanged
  // Other writers store the same data into this repository at the same time
  // (the replicas of a Kafka partition, one per broker): see
  // Repository::share_writes. walk_start in (0, 1): each directory's
  // subdirectories are read after its files, in the order of a hash of their
  // names (the same for every writer; similar names, a topic's partitions,
  // spread out) from this fraction of the list on, wrapping around (the tree
  // is stored sorted either way), so writers that start at different places
  // store different parts first and find each other's.
  bool share_writes = false;
  double walk_start = 0;
  std::string hostname;        // empty: this host
  unsigned threads = 0;        // 0: one reader and one worker per usable CPU, as many as memory_budget holds
  uint64_t memory_budget = 0;  // bytes for buffers (memory.h); 0: resolve_memory_budget()'s default
  ProgressFn progress;
  std::chrono::milliseconds progress_interval{1000};
  const std::atomic<bool>* cancel = nullptr;
  // Called just before the snapshot is written; throws to refuse (a lock no longer held).
  std::function<void()> check_lock;
};

struct BackupResult {
  Snapshot snapshot;
  WriteStats stats;
  uint64_t files_new = 0, files_changed = 0, files_unmodified = 0, dirs = 0;
  uint64_t bytes_total = 0, bytes_read = 0;
  double seconds = 0;
  // Set when a named parent was not used (unreadable, or of other paths) and
  // every file was read instead.
  std::string parent_note;
};

// Throws on a repository-level failure (nothing is referenced by a snapshot then).
// Per-file failures are collected in the snapshot's errors and make it partial.
BackupResult backup(Repository& repo, const BackupOptions& opt);

// The profile chosen for a file when none is forced.
ChunkProfile choose_profile(const std::string& name, uint64_t size);

}  // namespace cairn::repo
