#pragma once
#include <span>

#include "common/util/encoding.h"

namespace cairn::repo {

// Compresses with zstd unless the data does not shrink by at least 1/32; returns
// true when out holds compressed data. out views a per-thread buffer that stays
// valid until this thread's next call.
bool compress_if_useful(std::span<const uint8_t> in, std::span<const uint8_t>& out, int level);
// Decompresses a zstd frame whose content size must equal expected_size.
// Returns false on any error (corrupt or mismatched size).
bool decompress(std::span<const uint8_t> in, size_t expected_size, Bytes& out);

}  // namespace cairn::repo
