#pragma once
// Copying snapshots between repositories (cairnctl export and import).
//
// Blob ids are keyed per repository (§ 4: a keyed hash under each
// repository's own key), so nothing can be copied as it is stored: every
// data blob is read and verified in the source and stored again in the
// destination under its id there, and every tree is rewritten bottom-up with
// the new ids of its content and subtrees. A blob the destination already
// holds is not stored twice (its deduplication works across copies).
#include <atomic>
#include <cstdint>
#include <functional>
#include <unordered_map>

#include "common/repo/repository.h"
#include "common/repo/snapshot.h"

namespace cairn::repo {

struct CopyStats {
  uint64_t snapshots = 0;
  uint64_t trees = 0, data_blobs = 0;
  uint64_t blobs_new = 0;   // stored in the destination
  uint64_t bytes = 0;       // plaintext bytes of the data blobs read
  uint64_t file_bytes = 0;  // sizes of the files whose content was copied (a copy's progress)
};

class SnapshotCopier {
 public:
  // Both repositories open, their indexes loaded; the caller holds their locks.
  SnapshotCopier(Repository& src, Repository& dst, const std::atomic<bool>* cancel = nullptr) : src_(src), dst_(dst), cancel_(cancel) {}

  // Copies the snapshot's tree and data, flushes the destination, and saves
  // the snapshot there with the same time, host, paths, tags, errors, summary
  // and component metadata (its parent, a snapshot of the source, is
  // dropped). Returns the new snapshot (its id set). Throws Errc::corrupt
  // naming the blob when the source does not verify.
  Snapshot copy(const Snapshot& s);
  const CopyStats& stats() const { return stats_; }
  // Called after each file's content is copied (stats().file_bytes grown by
  // its size): a long copy's progress. A subtree met again in the same copy
  // is not walked again, so file_bytes can stay below the snapshots' total.
  void on_progress(std::function<void(const CopyStats&)> fn) { progress_ = std::move(fn); }

 private:
  BlobId copy_tree(const BlobId& id);
  BlobId copy_data(const BlobId& id);

  Repository& src_;
  Repository& dst_;
  const std::atomic<bool>* cancel_;
  std::unordered_map<BlobId, BlobId, BlobIdHash> data_, trees_;  // source id -> destination id
  CopyStats stats_;
  std::function<void(const CopyStats&)> progress_;
};

}  // namespace cairn::repo
