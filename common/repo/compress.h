#pragma once
#include <span>
#include <string>

#include "common/util/encoding.h"

namespace cairn::repo {

// Compresses with zstd unless the data does not shrink by at least 1/32; returns
// true when out holds compressed data. out views a per-thread buffer that stays
// valid until this thread's next call.
bool compress_if_useful(std::span<const uint8_t> in, std::span<const uint8_t>& out, int level);
// Decompresses a zstd frame whose content size must equal expected_size. Nothing is
// allocated before the frame's block headers prove it can produce that many bytes
// (a tiny frame that declares a gigabyte is refused, not given a gigabyte), and
// callers check expected_size against the ceiling of their object kind first
// (file_size_ceiling, max_blob_size). Returns an empty string on success, or why
// the frame is refused ("does not decompress", "declares ... but holds at most ...").
std::string decompress(std::span<const uint8_t> in, size_t expected_size, Bytes& out);

}  // namespace cairn::repo
