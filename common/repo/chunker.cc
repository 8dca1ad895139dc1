#include "common/repo/chunker.h"

#include <bit>

#include "common/crypto/crypto.h"
#include "common/util/error.h"

namespace cairn::repo {

ChunkerParams profile_params(ChunkProfile p) {
  switch (p) {
    case ChunkProfile::page: return {8 * 1024, 32 * 1024, 256 * 1024};
    case ChunkProfile::standard: return {256 * 1024, 1024 * 1024, 4 * 1024 * 1024};
    case ChunkProfile::log: return {1024 * 1024, 2 * 1024 * 1024, 4 * 1024 * 1024};
  }
  return {256 * 1024, 1024 * 1024, 4 * 1024 * 1024};
}

const char* profile_name(ChunkProfile p) {
  switch (p) {
    case ChunkProfile::page: return "page";
    case ChunkProfile::standard: return "standard";
    case ChunkProfile::log: return "log";
  }
  return "standard";
}

bool parse_profile(std::string_view s, ChunkProfile& out) {
  if (s == "page") out = ChunkProfile::page;
  else if (s == "standard") out = ChunkProfile::standard;
  else if (s == "log") out = ChunkProfile::log;
  else return false;
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
  if (!std::has_single_bit(params.avg_size) || params.min_size < 64 || params.min_size >= params.avg_size || params.avg_size >= params.max_size ||
      params.max_size > kMaxChunkSize)
    throw Error(Errc::invalid_input, "chunker parameters must satisfy min < avg < max <= " + std::to_string(kMaxChunkSize) +
                                         " with avg a power of two");
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

size_t Chunker::cut(const uint8_t* p, size_t n) const {
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

}  // namespace cairn::repo
