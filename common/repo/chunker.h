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
  // Cut only between Kafka record batches (below); FastCDC where the data is
  // not a run of batches.
  bool record_batches = false;
};

// Chunk-size profiles by stream kind. Small chunks where data changes in pages
// (databases); large chunks where data is appended (log segments). `kafka`:
// Kafka log segments, cut between record batches where the batch itself says
// so, so that the replicas of a partition on several brokers, whose segment
// files start and end at different offsets, are cut into the same chunks.
// `relation`: PostgreSQL's relation files (8 KiB pages, often highly
// compressible): chunks of 128 KiB on average, small enough that an
// incremental stores about the pages a checkpoint wrote, large enough to
// compress as well as whole files (docs/benchmarks.md § PostgreSQL).
enum class ChunkProfile { page, standard, log, kafka, relation };
inline constexpr ChunkProfile kAllProfiles[] = {ChunkProfile::page, ChunkProfile::standard, ChunkProfile::log, ChunkProfile::kafka,
                                                ChunkProfile::relation};
ChunkerParams profile_params(ChunkProfile p);
const char* profile_name(ChunkProfile p);
bool parse_profile(std::string_view s, ChunkProfile& out);

using GearTable = std::array<uint64_t, 256>;
GearTable make_gear_table(std::span<const uint8_t> seed);

// One chunker per file (or stream): with record_batches it remembers the rest
// of a batch larger than a chunk, so calls must follow the file in order.
class Chunker {
 public:
  Chunker(const GearTable& gear, ChunkerParams params);
  // Length of the next chunk of data[0..n). n must be at least max_size unless
  // the caller has no more data to give (end of file or of a data extent).
  size_t cut(const uint8_t* data, size_t n) const;
  // The next data does not follow the last (a sparse file's next extent).
  void restart() const { batch_rest_ = 0; }
  const ChunkerParams& params() const { return params_; }

 private:
  size_t cut_cdc(const uint8_t* data, size_t n) const;
  size_t cut_batches(const uint8_t* data, size_t n) const;
  bool batch_starts_chunk(const uint8_t* batch, uint64_t total) const;

  const GearTable& gear_;
  ChunkerParams params_;
  uint64_t mask_s_;                  // harder to match: before the average size
  uint64_t mask_l_;                  // easier to match: after it
  mutable uint64_t batch_rest_ = 0;  // bytes of a batch larger than a chunk not yet cut
};

}  // namespace cairn::repo
