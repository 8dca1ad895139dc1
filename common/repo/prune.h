#pragma once
// Prune: delete the data no snapshot refers to any more.
//
// Every blob reachable from every snapshot is marked; each pack is then fully used
// (kept), fully unused (deleted), or partly used. Partly used packs are repacked,
// most unused bytes first, only while the repository-wide unused bytes exceed
// max_unused_percent of what remains. Packs in data/ that no index file names
// (left by an interrupted backup) are deleted: prune runs under the exclusive lock,
// so no backup can be writing them. Duplicate copies of a blob are reduced to one.
//
// Repacking copies the sealed blobs unchanged (their AAD is type + id, independent
// of the pack) after verifying them. Crash safety comes from the order:
//   1. write the new packs,
//   2. write one new index file describing every pack that remains,
//   3. delete the old index files,
//   4. delete the obsolete packs.
// Interrupted anywhere, every snapshot still restores; at worst some packs are
// left unreferenced, which the next prune deletes.
//
// Prune refuses to run when any snapshot, tree or index file cannot be read, or a
// blob a snapshot needs is in no pack: deleting data such a repository may still
// need would be unrecoverable.
#include <atomic>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "common/repo/progress.h"
#include "common/repo/repository.h"

namespace cairn::repo {

struct PruneOptions {
  double max_unused_percent = 5;
  bool dry_run = false;
  // Snapshots to treat as already removed (forget --dry-run --prune shows what
  // prune would do after the forget).
  std::set<std::string> ignore_snapshots;
  ProgressFn progress;  // phase "repack": files = packs, bytes = blob bytes copied
  std::function<void(const std::string&)> warn;
  const std::atomic<bool>* cancel = nullptr;
  // Called before the index is rewritten and before each deletion; throws to refuse
  // (the exclusive lock is no longer held).
  std::function<void()> check_lock;
};

struct PruneCount {
  uint64_t packs = 0, blobs = 0, bytes = 0;
};

struct PruneResult {
  uint64_t snapshots = 0;
  uint64_t used_blobs = 0, used_bytes = 0;  // distinct blobs the snapshots need, sealed bytes
  PruneCount before;                        // packs in data/, blob entries in the index, bytes on disk
  PruneCount kept;                          // packs kept as they are
  PruneCount repacked;                      // old packs rewritten; blobs/bytes: still-used blobs copied
  PruneCount deleted;                       // packs: fully unused ones; blobs/bytes: unused entries dropped (deleted + repacked packs)
  PruneCount unindexed;                     // packs in no index file, deleted
  PruneCount written;                       // new packs (estimated with dry_run)
  PruneCount leftovers;  // packs: temporary files of writes that never finished (a writer killed), removed; bytes: their size
  // A store with Object Lock (Backend::retains_deleted_versions): the versions it
  // kept of deleted objects. packs: objects (delete markers not counted); bytes: their size.
  PruneCount versions_removed;       // removed now (with dry_run: found, none removed)
  PruneCount versions_retained;      // still under retention: the next prune tries them again
  std::string retained_until;        // the latest retention date among them ("" when none has one)
  uint64_t legal_holds = 0;          // of them, under a legal hold (no date: the operator lifts it)
  uint64_t unused_bytes_before = 0;  // unused and duplicate blob bytes
  uint64_t unused_bytes_after = 0;
  uint64_t bytes_freed = 0;
  uint64_t index_files_removed = 0, index_files_written = 0;
  std::vector<std::string> missing_packs;  // named by an index file but absent; dropped from the index
  bool changed = false;                    // false: nothing to do (or dry_run)
};

// Holds no lock itself: the caller must hold the exclusive lock.
PruneResult prune(Repository& repo, const PruneOptions& opt);

// Whether these credentials may delete what prune and forget delete, asked
// before they change anything (with nothing to delete they would otherwise
// succeed under an agent's credentials): a delete of an object no repository
// has (index/delete-probe), which a store answers by the credentials' rights
// alone. Throws Errc::denied (the store's refusal, and that maintenance runs
// where the controller's credentials are) when they may not. A versioning
// store's delete marker for the probe is removed again where the store lists it.
void check_may_delete(Backend& be);

}  // namespace cairn::repo
