#pragma once
// Ceilings on what a reader loads or decompresses, by object kind
// (docs/repository-format.md § 14). Every size read from the repository is
// checked against one of these before it sizes an allocation; writers never
// produce an object above its ceiling, so a larger one is damaged or hostile.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/repo/storage/backend.h"

namespace cairn::repo {

// Plain files, read whole.
constexpr size_t kMaxConfigFile = 64u << 10;
constexpr size_t kMaxKeySlotFile = 64u << 10;
// Encrypted JSON files (§ 9): ceiling of the decompressed text.
constexpr size_t kMaxLockText = 64u << 10;
constexpr size_t kMaxSnapshotText = 64u << 20;
constexpr size_t kMaxIndexText = 256u << 20;
constexpr size_t kMaxDictText = 1u << 20;
// Compression dictionaries a reader loads (§ 5.1); a writer makes one per kind.
constexpr size_t kMaxDictionaries = 64;
// Entries in one pack header (42 bytes each: a 42 MiB header at most).
constexpr size_t kMaxPackBlobs = 1u << 20;
// Errors a snapshot lists by path; past this many only their number is recorded.
constexpr size_t kMaxSnapshotErrors = 10000;

// The ceiling of a file type's plaintext: the whole file for config and key slots,
// the decompressed text for encrypted JSON files. Packs have none (their blobs do:
// max_blob_size in pack.h).
size_t file_size_ceiling(FileType t);
// "a snapshot", "an index file", …: for messages.
std::string file_kind_text(FileType t);

}  // namespace cairn::repo
