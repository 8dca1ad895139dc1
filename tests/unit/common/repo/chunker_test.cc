#include "common/repo/chunker.h"

#include <algorithm>
#include <bit>
#include <catch2/catch.hpp>
#include <random>
#include <set>

#include "common/util/encoding.h"

using namespace cairn;
using namespace cairn::repo;

namespace {
Bytes rand_bytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  Bytes b(n);
  for (auto& x : b) x = uint8_t(rng());
  return b;
}
std::vector<size_t> cuts(const Chunker& c, const Bytes& d) {
  std::vector<size_t> out;
  size_t off = 0;
  while (off < d.size()) {
    size_t n = c.cut(d.data() + off, d.size() - off);
    REQUIRE(n > 0);
    off += n;
    out.push_back(off);
  }
  return out;
}
Bytes seed(uint8_t v) { return Bytes(32, v); }
}  // namespace

TEST_CASE("chunk boundaries are deterministic and respect min and max") {
  auto gear = make_gear_table(seed(7));
  for (auto prof : {ChunkProfile::page, ChunkProfile::standard}) {
    Chunker c(gear, profile_params(prof));
    Bytes d = rand_bytes(8 << 20, 1);
    auto a = cuts(c, d), b = cuts(c, d);
    REQUIRE(a == b);
    size_t prev = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      size_t len = a[i] - prev;
      if (i + 1 < a.size()) {
        REQUIRE(len >= c.params().min_size);
      }
      REQUIRE(len <= c.params().max_size);
      prev = a[i];
    }
    // the average lands near the target
    double avg = double(d.size()) / double(a.size());
    REQUIRE(avg > c.params().avg_size * 0.5);
    REQUIRE(avg < c.params().avg_size * 2.0);
  }
}

TEST_CASE("chunk boundaries survive an insertion at the front (shift resistance)") {
  auto gear = make_gear_table(seed(3));
  Chunker c(gear, profile_params(ChunkProfile::page));
  Bytes d = rand_bytes(2 << 20, 2);
  Bytes shifted = rand_bytes(1234, 9);
  shifted.insert(shifted.end(), d.begin(), d.end());
  auto a = cuts(c, d), b = cuts(c, shifted);
  std::set<size_t> sa(a.begin(), a.end());
  size_t same = 0;
  for (size_t x : b)
    if (x >= 1234 && sa.count(x - 1234)) ++same;
  // all but the first few boundaries re-synchronise
  REQUIRE(same + 3 >= a.size());
}

TEST_CASE("different repository seeds give different boundaries") {
  auto g1 = make_gear_table(seed(1)), g2 = make_gear_table(seed(2));
  Bytes d = rand_bytes(1 << 20, 5);
  REQUIRE(cuts(Chunker(g1, profile_params(ChunkProfile::page)), d) != cuts(Chunker(g2, profile_params(ChunkProfile::page)), d));
}

TEST_CASE("zero-filled input cuts at max size") {
  auto gear = make_gear_table(seed(4));
  Chunker c(gear, profile_params(ChunkProfile::page));
  Bytes z(1 << 20, 0);
  auto a = cuts(c, z);
  REQUIRE(a.front() == c.params().max_size);
}

TEST_CASE("bad chunker parameters are refused") {
  auto gear = make_gear_table(seed(4));
  REQUIRE_THROWS(Chunker(gear, {1024, 1000, 4096}));
  REQUIRE_THROWS(Chunker(gear, {8192, 4096, 65536}));
  REQUIRE_THROWS(Chunker(gear, {16, 4096, 65536}));
}

TEST_CASE("the four-bytes-per-round scan cuts exactly where a byte-at-a-time FastCDC does") {
  // The reference is the plain loop the format spec describes; the boundaries are
  // part of what makes a new backup deduplicate against old ones.
  auto gear = make_gear_table(seed(3));
  auto reference = [&](const ChunkerParams& p, const uint8_t* d, size_t n) -> size_t {
    if (n <= p.min_size) return n;
    size_t end = std::min<size_t>(n, p.max_size), normal = std::min<size_t>(p.avg_size, end);
    int bits = std::countr_zero(p.avg_size);
    uint64_t ms = ~uint64_t(0) << (64 - (bits + 2)), ml = ~uint64_t(0) << (64 - (bits - 2)), h = 0;
    for (size_t j = p.min_size - 64; j < p.min_size; ++j) h = (h << 1) + gear[d[j]];
    size_t i = p.min_size;
    for (; i < normal; ++i)
      if (!((h = (h << 1) + gear[d[i]]) & ms)) return i + 1;
    for (; i < end; ++i)
      if (!((h = (h << 1) + gear[d[i]]) & ml)) return i + 1;
    return end;
  };
  // Random data, low-entropy data (long runs cut late, at odd offsets) and every
  // remainder of a round of four at the end of the input.
  Bytes low = rand_bytes(6 << 20, 9);
  for (auto& x : low) x &= 0x03;
  for (const Bytes& d : {rand_bytes(6 << 20, 8), low}) {
    for (auto prof : {ChunkProfile::page, ChunkProfile::standard, ChunkProfile::log}) {  // FastCDC profiles
      Chunker c(gear, profile_params(prof));
      size_t off = 0, chunks = 0;
      while (off < d.size()) {
        size_t n = c.cut(d.data() + off, d.size() - off);
        REQUIRE(n == reference(c.params(), d.data() + off, d.size() - off));
        for (size_t short_by = 1; short_by < 4 && chunks % 16 == 0; ++short_by)
          if (d.size() - off > c.params().min_size + short_by)
            REQUIRE(c.cut(d.data() + off, d.size() - off - short_by) == reference(c.params(), d.data() + off, d.size() - off - short_by));
        off += n;
        ++chunks;
      }
    }
  }
}

namespace {
// A partition's log as Kafka writes it: v2 record batches (12-byte entry
// header, leader epoch, magic 2, CRC, then a body) of varying sizes.
struct KafkaLog {
  Bytes bytes;
  std::vector<size_t> batch_starts;
};
void put_be(Bytes& b, size_t at, uint64_t v, int n) {
  for (int i = n - 1; i >= 0; --i, v >>= 8) b[at + size_t(i)] = uint8_t(v);
}
KafkaLog kafka_log(size_t total, uint32_t seed_, size_t big_every = 0) {
  std::mt19937_64 rng(seed_);
  KafkaLog log;
  uint64_t offset = 0;
  size_t n = 0;
  while (log.bytes.size() < total) {
    size_t body = 200 + rng() % 30000;                       // producer batches from 200 B to 30 KiB
    if (big_every && ++n % big_every == 0) body = 9u << 20;  // larger than a chunk
    size_t at = log.bytes.size();
    log.batch_starts.push_back(at);
    log.bytes.resize(at + 61 + body);
    put_be(log.bytes, at, offset, 8);
    put_be(log.bytes, at + 8, 49 + body, 4);
    put_be(log.bytes, at + 12, 7, 4);  // partition leader epoch
    log.bytes[at + 16] = 2;
    for (size_t i = at + 17; i < log.bytes.size(); ++i) log.bytes[i] = uint8_t(rng());
    offset += 1 + rng() % 50;
  }
  return log;
}
// The chunks of each file, as (hash, length).
std::vector<std::pair<uint64_t, size_t>> file_chunks(const Chunker& c, const uint8_t* d, size_t n) {
  std::vector<std::pair<uint64_t, size_t>> out;
  c.restart();
  for (size_t off = 0; off < n;) {
    size_t len = c.cut(d + off, n - off);
    REQUIRE(len > 0);
    REQUIRE(len <= c.params().max_size);
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < len; ++i) h = (h ^ d[off + i]) * 1099511628211ULL;
    out.emplace_back(h, len);
    off += len;
  }
  return out;
}
// Bytes of the replica split at `splits` (batch indexes) that the one split
// at `other` does not hold as the same chunks.
size_t bytes_not_shared(const Chunker& c, const KafkaLog& log, const std::vector<size_t>& splits, const std::vector<size_t>& other) {
  auto segments = [&](const std::vector<size_t>& at) {
    std::vector<std::pair<size_t, size_t>> seg;
    size_t prev = 0;
    for (size_t b : at) {
      seg.emplace_back(prev, log.batch_starts[b] - prev);
      prev = log.batch_starts[b];
    }
    seg.emplace_back(prev, log.bytes.size() - prev);
    return seg;
  };
  std::set<uint64_t> theirs;
  for (auto [o, l] : segments(other))
    for (auto [h, len] : file_chunks(c, log.bytes.data() + o, l)) theirs.insert(h);
  size_t missing = 0;
  for (auto [o, l] : segments(splits))
    for (auto [h, len] : file_chunks(c, log.bytes.data() + o, l))
      if (!theirs.count(h)) missing += len;
  return missing;
}
}  // namespace

TEST_CASE("kafka profile: replicas split into segments at other offsets are cut into the same chunks") {
  auto gear = make_gear_table(seed(11));
  KafkaLog log = kafka_log(96 << 20, 5);
  const size_t nb = log.batch_starts.size();
  // Replica A rolls its segments at some batches, replica B at others (a
  // follower appends whole fetch responses, so its rolls land elsewhere).
  std::vector<size_t> a, b;
  for (size_t i = 1; i < 8; ++i) a.push_back(nb * i / 8);
  for (size_t i = 1; i < 8; ++i) b.push_back(nb * i / 8 + 3 + i);
  Chunker kafka(gear, profile_params(ChunkProfile::kafka));
  Chunker cdc(gear, profile_params(ChunkProfile::log));
  size_t kafka_missing = bytes_not_shared(kafka, log, b, a);
  size_t cdc_missing = bytes_not_shared(cdc, log, b, a);
  INFO("bytes not shared: kafka profile " << kafka_missing << ", FastCDC log profile " << cdc_missing);
  // Each of the 7 splits that differ costs at most the chunk around it in each
  // file (4 MiB each at most, about 1 MiB on average): far below a copy.
  REQUIRE(kafka_missing < 7 * (3u << 20));
  REQUIRE(kafka_missing < log.bytes.size() / 6);
  REQUIRE(kafka_missing < cdc_missing);
  // Cut only between batches, about 1 MiB apart on average.
  std::set<size_t> starts(log.batch_starts.begin(), log.batch_starts.end());
  size_t off = 0, chunks = 0;
  kafka.restart();
  while (off < log.bytes.size()) {
    off += kafka.cut(log.bytes.data() + off, log.bytes.size() - off);
    ++chunks;
    REQUIRE((off == log.bytes.size() || starts.count(off)));
  }
  double avg = double(log.bytes.size()) / double(chunks);
  REQUIRE(avg > (512 << 10));
  REQUIRE(avg < (2 << 20));
}

TEST_CASE("kafka profile: a batch larger than a chunk, a torn tail and preallocated zeros") {
  auto gear = make_gear_table(seed(12));
  Chunker c(gear, profile_params(ChunkProfile::kafka));
  KafkaLog log = kafka_log(40 << 20, 6, 300);
  // Batches of 9 MiB are cut into pieces of at most 4 MiB from their start,
  // and the batches after them are cut where they would be anyway.
  auto whole = file_chunks(c, log.bytes.data(), log.bytes.size());
  size_t from = log.batch_starts[305];
  auto tail = file_chunks(c, log.bytes.data() + from, log.bytes.size() - from);
  size_t shared = 0;
  std::set<uint64_t> w;
  for (auto [h, l] : whole) w.insert(h);
  for (auto [h, l] : tail) shared += w.count(h) ? l : 0;
  REQUIRE(shared > (log.bytes.size() - from) * 8 / 10);
  // A torn last batch and a preallocated (zero-filled) rest still cut to the end.
  Bytes torn(log.bytes.begin(), log.bytes.begin() + ptrdiff_t(log.batch_starts[200] + 100));
  torn.resize(torn.size() + (10 << 20), 0);
  size_t total = 0;
  for (auto [h, l] : file_chunks(c, torn.data(), torn.size())) total += l;
  REQUIRE(total == torn.size());
  // Anything that is no record batch at all is cut by FastCDC.
  Bytes noise = rand_bytes(9 << 20, 4);
  REQUIRE(file_chunks(c, noise.data(), noise.size()).size() > 2);
}
