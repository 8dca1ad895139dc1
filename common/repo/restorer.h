#pragma once
// Restore: recreate a snapshot's tree under a target directory. Snapshot paths are
// absolute (/srv/a/f) and land under the target (TARGET/srv/a/f). Files are written
// to a temporary name and renamed into place only when every blob verified, so a
// damaged file is reported and never left behind looking good. Files (and ranges
// of large files) are restored in parallel; memory is bounded by a read buffer per
// thread, not by file size.
#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/repo/progress.h"
#include "common/repo/repository.h"
#include "common/repo/walk.h"

namespace cairn::repo {

// The most memory a restore's plan (the tree's directories, files and links, held
// until the restore ends) may take, estimated as the walk goes: a tree bomb ends
// with a clear error long before memory runs out. --max-entries lifts it.
constexpr uint64_t kMaxRestorePlanBytes = 4ull << 30;

struct RestoreOptions {
  std::string target;                 // created when missing
  std::vector<std::string> includes;  // globs on the path inside the snapshot or the base name; empty: everything
  std::vector<std::string> excludes;  // same matching; an excluded directory drops its whole subtree
  bool overwrite = false;             // allow a non-empty target; existing entries are replaced
  unsigned threads = 0;               // 0: twice the usable CPUs, 4 to 8, as many as memory_budget holds (memory.h)
  uint64_t memory_budget = 0;         // bytes for buffers; 0: resolve_memory_budget()'s default
  ProgressFn progress;
  std::chrono::milliseconds progress_interval{1000};
  const std::atomic<bool>* cancel = nullptr;
  // Called with the snapshot path of every entry the walk reaches (excluded
  // ones aside), before anything is written; the agent's mirror mode uses it.
  std::function<void(const std::string&)> on_entry;
  uint64_t max_entries = kMaxWalkEntries;  // see walk.h
  uint64_t max_plan_bytes = kMaxRestorePlanBytes;
};

struct RestoreFailure {
  std::string path;    // inside the snapshot, e.g. /srv/a/f
  std::string reason;  // e.g. "blob '<id>' in pack '<id>' fails authentication (...)"
};

struct RestoreResult {
  std::string snapshot_id;
  uint64_t files_restored = 0;  // regular files, hard links included
  uint64_t dirs_restored = 0;
  uint64_t others_restored = 0;          // symlinks, fifos, devices, sockets
  uint64_t bytes_restored = 0;           // logical file sizes (holes included)
  std::vector<RestoreFailure> failures;  // not restored; nothing is left under their names
  std::vector<RestoreFailure> warnings;  // restored, but some metadata (owner, xattr, time) could not be set
  // Partial files an earlier restore into the same target left when it was
  // killed (is_restore_temp_name), found in the directories this one restores
  // into and removed before anything is written: how many, and their bytes.
  uint64_t leftovers_removed = 0;
  uint64_t leftover_bytes_removed = 0;
  double seconds = 0;
};

// Throws Errc::exists for a non-empty target without overwrite (naming the
// partial files of an interrupted restore when the target holds some), Errc::not_found /
// Errc::corrupt when the snapshot or its root tree cannot be read (a subtree that
// cannot be read, or lies deeper than kMaxTreeDepth, is a failure of its path),
// Errc::unsupported past max_entries or max_plan_bytes, Errc::interrupted when
// cancelled (temporary files are removed first). Per-file problems go to failures.
// snapshot: "latest", an id or a unique prefix (see resolve_snapshot).
RestoreResult restore(Repository& repo, const std::string& snapshot, const RestoreOptions& opt);

// The selection rule, exposed for tests: a node is matched by a glob list when the
// glob matches its path inside the snapshot or its base name (fnmatch, '*' spans '/').
bool restore_glob_matches(const std::vector<std::string>& globs, const std::string& path);

// True when name is one restore() gives a file while it writes it:
// ".cairn-restore." + the file's name (cut to 200 bytes) + "." + 2 to 24
// lowercase hex digits (the process id and a counter). A file of that name is
// removed as a leftover only when it also is what restore() creates: a
// regular file with one link, owned by the restoring user, no permission
// beyond 0600, and not locked by a live restore (each holds an flock on its
// temporary files while it writes them).
bool is_restore_temp_name(std::string_view name);

// What a restore tells its user about the leftovers it removed:
// "removed N partial file(s) (B bytes) an earlier interrupted restore left in
// 'TARGET'"; "" when it removed none.
std::string leftovers_text(const RestoreResult& r, const std::string& target);

}  // namespace cairn::repo
