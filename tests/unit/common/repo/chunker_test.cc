#include <catch2/catch.hpp>

#include <algorithm>
#include <bit>
#include <random>
#include <set>

#include "common/util/encoding.h"

#include "common/repo/chunker.h"

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
    for (auto prof : {ChunkProfile::page, ChunkProfile::standard, ChunkProfile::log}) {
      Chunker c(gear, profile_params(prof));
      size_t off = 0, chunks = 0;
      while (off < d.size()) {
        size_t n = c.cut(d.data() + off, d.size() - off);
        REQUIRE(n == reference(c.params(), d.data() + off, d.size() - off));
        for (size_t short_by = 1; short_by < 4 && chunks % 16 == 0; ++short_by)
          if (d.size() - off > c.params().min_size + short_by)
            REQUIRE(c.cut(d.data() + off, d.size() - off - short_by) ==
                    reference(c.params(), d.data() + off, d.size() - off - short_by));
        off += n;
        ++chunks;
      }
    }
  }
}
