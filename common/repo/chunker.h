#pragma once
// FastCDC content-defined chunking (Xia et al. 2016/2020) with normalized chunking.
// The gear table is derived from a per-repository secret seed so boundaries do not
// reveal content to someone who sees only chunk sizes.
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace cairn::repo {

// No profile cuts chunks larger than this: it is also the largest data blob a
// reader accepts (max_blob_size in pack.h).
constexpr uint32_t kMaxChunkSize = 4u << 20;

struct ChunkerParams {
  uint32_t min_size;
  uint32_t avg_size;  // a power of two
  uint32_t max_size;
};

// Chunk-size profiles by stream kind. Small chunks where data changes in pages
// (databases); large chunks where data is appended (log segments).
enum class ChunkProfile { page, standard, log };
ChunkerParams profile_params(ChunkProfile p);
const char* profile_name(ChunkProfile p);
bool parse_profile(std::string_view s, ChunkProfile& out);

using GearTable = std::array<uint64_t, 256>;
GearTable make_gear_table(std::span<const uint8_t> seed);

class Chunker {
 public:
  Chunker(const GearTable& gear, ChunkerParams params);
  // Length of the next chunk of data[0..n). When at_eof is false, n must be at
  // least max_size (or the caller has no more data to give).
  size_t cut(const uint8_t* data, size_t n) const;
  const ChunkerParams& params() const { return params_; }

 private:
  const GearTable& gear_;
  ChunkerParams params_;
  uint64_t mask_s_;  // harder to match: before the average size
  uint64_t mask_l_;  // easier to match: after it
};

}  // namespace cairn::repo
