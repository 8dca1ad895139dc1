#pragma once
// Reading a snapshot back without writing anything: every tree and every data
// blob a restore of the whole snapshot reads, each authenticated, decompressed
// and checked against its id as restore checks it. The agent does this before a
// restore stops anything (docs/protocol.md § The cluster restore, preflight), so
// damage refuses the restore while every member still runs on its own data.
//
// Memory: each tree is read once (TreeShapes), however many directories share
// it; the data blobs to read are kept as their locations grouped by pack (about
// 48 bytes a blob, as a restore's plan keeps them, and under the same bound);
// packs are read by ranges into one buffer per reader thread.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/repo/progress.h"
#include "common/repo/repository.h"
#include "common/repo/restorer.h"
#include "common/repo/walk.h"

namespace cairn::repo {

struct VerifyOptions {
  unsigned threads = 0;        // readers; 0: as many as a restore's writers (memory.h)
  uint64_t memory_budget = 0;  // bytes for buffers; 0: resolve_memory_budget()'s default
  ProgressFn progress;         // phase "verify"; bytes are the data blobs' plaintext
  std::chrono::milliseconds progress_interval{1000};
  const std::atomic<bool>* cancel = nullptr;
  uint64_t max_entries = kMaxWalkEntries;  // as restore: a snapshot describing more is refused
  uint64_t max_plan_bytes = kMaxRestorePlanBytes;
};

// At most this many failures are listed (and named with their path); the rest
// are counted.
constexpr size_t kMaxVerifyFailures = 20;

struct VerifyFailure {
  std::string kind;    // "tree", "data" or "too_deep"
  std::string blob;    // the blob's id (hex), "" for too_deep
  std::string object;  // the pack holding it ("data/ab/abcd…"), "" when the index does not know the blob
  std::string path;    // the first file or directory of the snapshot that needs it; "" when no walk reached it
  std::string reason;  // e.g. "fails authentication (the stored bytes were changed)"
};

struct VerifyResult {
  std::string snapshot_id;
  uint64_t trees = 0;       // distinct trees read
  uint64_t blobs = 0;       // distinct data blobs read
  uint64_t bytes = 0;       // their plaintext bytes
  uint64_t packs = 0;       // packs they were read from
  uint64_t bytes_read = 0;  // bytes read from the packs (sealed blobs and the gaps between them)
  std::vector<VerifyFailure> failures;
  uint64_t failures_omitted = 0;  // further failures, not listed
  double seconds = 0;
  bool ok() const { return failures.empty(); }
};

// snapshot: "latest", an id or a unique prefix (resolve_snapshot). Damage (a blob
// that does not verify, is missing from the index or cannot be read, a tree nested
// too deep) goes to failures; throws Errc::not_found / Errc::corrupt when the
// snapshot itself cannot be read, Errc::unsupported past max_entries or
// max_plan_bytes (as restore would), Errc::interrupted when cancelled.
VerifyResult verify_snapshot(Repository& r, const std::string& snapshot, const VerifyOptions& opt = {});

// One line for a person: "'/srv/f': data blob '…' in pack 'data/ab/…' fails authentication (…)".
std::string verify_failure_line(const VerifyFailure& f);

}  // namespace cairn::repo
