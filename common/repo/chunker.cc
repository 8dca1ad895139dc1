#include "common/repo/chunker.h"

#include <bit>

#include "common/crypto/crypto.h"
#include "common/util/error.h"

namespace cairn::repo {

ChunkerParams profile_params(ChunkProfile p) {
  switch (p) {
    case ChunkProfile::page:
      return {8 * 1024, 32 * 1024, 256 * 1024};
    case ChunkProfile::standard:
      return {256 * 1024, 1024 * 1024, 4 * 1024 * 1024};
    case ChunkProfile::log:
      return {1024 * 1024, 2 * 1024 * 1024, 4 * 1024 * 1024};
    // min applies only where the data is not record batches (FastCDC).
    case ChunkProfile::kafka:
      return {256 * 1024, 1024 * 1024, 4 * 1024 * 1024, true};
    case ChunkProfile::relation:
      return {32 * 1024, 128 * 1024, 1024 * 1024};
  }
  return {256 * 1024, 1024 * 1024, 4 * 1024 * 1024};
}

const char* profile_name(ChunkProfile p) {
  switch (p) {
    case ChunkProfile::page:
      return "page";
    case ChunkProfile::standard:
      return "standard";
    case ChunkProfile::log:
      return "log";
    case ChunkProfile::kafka:
      return "kafka";
    case ChunkProfile::relation:
      return "relation";
  }
  return "standard";
}

bool parse_profile(std::string_view s, ChunkProfile& out) {
  if (s == "page")
    out = ChunkProfile::page;
  else if (s == "standard")
    out = ChunkProfile::standard;
  else if (s == "log")
    out = ChunkProfile::log;
  else if (s == "kafka")
    out = ChunkProfile::kafka;
  else if (s == "relation")
    out = ChunkProfile::relation;
  else
    return false;
  return true;
}

GearTable make_gear_table(std::span<const uint8_t> seed) {
  GearTable g{};
  // Counter-mode SHA-256 over the seed: 8 table entries per hash.
  for (int block = 0; block < 32; ++block) {
    Bytes in(seed.begin(), seed.end());
    in.push_back(uint8_t(block));
    auto h = crypto::sha256(in);
    for (int i = 0; i < 4; ++i) {
      uint64_t v = 0;
      for (int b = 0; b < 8; ++b) v = v << 8 | h[size_t(i * 8 + b)];
      g[size_t(block * 8 + i)] = v;
    }
    // the other 4 entries from a second round over the first hash
    auto h2 = crypto::sha256(h);
    for (int i = 0; i < 4; ++i) {
      uint64_t v = 0;
      for (int b = 0; b < 8; ++b) v = v << 8 | h2[size_t(i * 8 + b)];
      g[size_t(block * 8 + 4 + i)] = v;
    }
  }
  return g;
}

Chunker::Chunker(const GearTable& gear, ChunkerParams params) : gear_(gear), params_(params) {
  if (!std::has_single_bit(params.avg_size) || params.min_size < 64 || params.min_size >= params.avg_size ||
      params.avg_size >= params.max_size || params.max_size > kMaxChunkSize)
    throw Error(Errc::invalid_input,
                "chunker parameters must satisfy min < avg < max <= " + std::to_string(kMaxChunkSize) + " with avg a power of two");
  int bits = std::countr_zero(params.avg_size);
  // Normalized chunking, level 2: the top bits of the gear hash depend on the last
  // 64 bytes, so the masks take the hash's high bits.
  mask_s_ = ~uint64_t(0) << (64 - (bits + 2));
  mask_l_ = ~uint64_t(0) << (64 - (bits - 2));
}

namespace {
// Scans [i, stop) for the first position whose hash has no bit of mask set; returns
// stop when there is none. Four bytes per round with one branch: the hash chain is
// one LEA per byte, so the loop overhead and the branches were what cost.
inline size_t scan(const GearTable& gear, const uint8_t* p, size_t i, size_t stop, uint64_t mask, uint64_t& h) {
  for (; i + 4 <= stop; i += 4) {
    uint64_t h0 = (h << 1) + gear[p[i]];
    uint64_t h1 = (h0 << 1) + gear[p[i + 1]];
    uint64_t h2 = (h1 << 1) + gear[p[i + 2]];
    uint64_t h3 = (h2 << 1) + gear[p[i + 3]];
    if (!(h0 & mask) | !(h1 & mask) | !(h2 & mask) | !(h3 & mask)) {
      if (!(h0 & mask)) return h = h0, i;
      if (!(h1 & mask)) return h = h1, i + 1;
      if (!(h2 & mask)) return h = h2, i + 2;
      return h = h3, i + 3;
    }
    h = h3;
  }
  for (; i < stop; ++i) {
    h = (h << 1) + gear[p[i]];
    if (!(h & mask)) return i;
  }
  return stop;
}
}  // namespace

size_t Chunker::cut(const uint8_t* p, size_t n) const { return params_.record_batches ? cut_batches(p, n) : cut_cdc(p, n); }

size_t Chunker::cut_cdc(const uint8_t* p, size_t n) const {
  if (n <= params_.min_size) return n;
  size_t end = n < params_.max_size ? n : params_.max_size;
  size_t normal = params_.avg_size < end ? params_.avg_size : end;
  uint64_t h = 0;
  size_t i = params_.min_size;
  // Start hashing 64 bytes before the minimum so the first candidate sees a full window.
  for (size_t j = i - 64; j < i; ++j) h = (h << 1) + gear_[p[j]];
  i = scan(gear_, p, i, normal, mask_s_, h);
  if (i < normal) return i + 1;
  i = scan(gear_, p, i, end, mask_l_, h);
  return i < end ? i + 1 : end;
}

namespace {
inline uint32_t be32(const uint8_t* p) { return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3]; }
inline uint64_t be64(const uint8_t* p) { return uint64_t(be32(p)) << 32 | be32(p + 4); }
inline uint64_t mix64(uint64_t x) {  // splitmix64's finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}
// Kafka's log: entries of [offset int64][size int32][size bytes], every
// message format (v0/v1 message sets, v2 record batches). The magic byte is at
// 16 in all three; a v2 batch header is 61 bytes, a v0 message at least 26.
constexpr size_t kLogOverhead = 12;
constexpr uint32_t kMinEntry = 14, kMinV2Entry = 49, kMaxEntry = 1u << 30;
}  // namespace

// A batch starts a chunk when a keyed hash of its base offset and CRC falls
// below its share of the average chunk size: the chance is size/avg, so chunks
// are avg long on average whatever the batch sizes, and the choice depends on
// the batch alone, never on where the file (or the last chunk) began. Replicas
// hold byte-identical batches (a follower appends the leader's bytes), so
// wherever their segment files split a partition's log, the chunks between the
// two splits are the same.
bool Chunker::batch_starts_chunk(const uint8_t* b, uint64_t total) const {
  const uint8_t magic = b[16];
  const uint64_t offset = be64(b);
  const uint32_t crc = magic == 2 ? be32(b + 17) : be32(b + 12);  // v2: after the leader epoch; v0/v1: the message's
  uint64_t x = mix64(offset ^ gear_[crc & 0xff] ^ (uint64_t(crc) << 29) ^ gear_[(crc >> 8) & 0xff] ^ gear_[uint8_t(offset) ^ 0x5a]);
  return (x & (params_.avg_size - 1)) < total;
}

size_t Chunker::cut_batches(const uint8_t* p, size_t n) const {
  const size_t limit = n < params_.max_size ? n : params_.max_size;
  if (batch_rest_) {  // the rest of a batch larger than a chunk, cut from the batch's start
    size_t take = batch_rest_ < limit ? size_t(batch_rest_) : limit;
    batch_rest_ -= take;
    return take;
  }
  size_t pos = 0;
  while (pos < n) {
    // The header up to a v2 batch's CRC (21 bytes) is read below.
    if (n - pos < kLogOverhead + 9) return pos ? pos : n;  // a torn header at the end: the tail is a chunk
    const uint32_t len = be32(p + pos + 8);
    const uint8_t magic = p[pos + 16];
    if (len < kMinEntry || len > kMaxEntry || magic > 2 || (magic == 2 && len < kMinV2Entry))
      return pos ? pos : cut_cdc(p, n);  // not a batch (a torn tail, preallocated zeros): plain FastCDC
    const uint64_t total = kLogOverhead + uint64_t(len);
    if (pos && batch_starts_chunk(p + pos, total)) return pos;
    if (pos + total > limit) {
      if (pos) return pos;                              // it does not fit: it starts the next chunk
      if (total > n && n < params_.max_size) return n;  // torn at the end of the file
      batch_rest_ = total - limit;
      return limit;
    }
    pos += size_t(total);
  }
  return n;
}

}  // namespace cairn::repo
