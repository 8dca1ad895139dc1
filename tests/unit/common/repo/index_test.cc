#include "common/repo/index.h"

#include <catch2/catch.hpp>
#include <random>
#include <thread>

using namespace cairn;
using namespace cairn::repo;

namespace {

BlobId make_id(uint64_t n) {
  // Spread like keyed hashes, but reproducible.
  std::mt19937_64 g(n * 0x9E3779B97F4A7C15ull + 1);
  BlobId id{};
  for (size_t i = 0; i < id.size(); i += 8) {
    uint64_t v = g();
    std::memcpy(id.data() + i, &v, 8);
  }
  return id;
}

BlobId pack_id_of(uint32_t n) {
  BlobId id{};
  id[0] = 0xAA;
  std::memcpy(id.data() + 1, &n, sizeof n);
  return id;
}

}  // namespace

TEST_CASE("compact index: every blob added across many packs is found with its exact location") {
  Index idx;
  const uint32_t packs = 300, per_pack = 250;  // 75,000 blobs: the table grows many times
  for (uint32_t p = 0; p < packs; ++p) {
    std::vector<PackBlob> blobs;
    for (uint32_t i = 0; i < per_pack; ++i) {
      uint64_t n = uint64_t(p) * per_pack + i;
      blobs.push_back(
          PackBlob{make_id(n), i % 7 == 0 ? BlobType::tree : BlobType::data, uint8_t(i & 1), i * 1000, 900 + i, 2000 + uint32_t(n % 5000)});
    }
    idx.add_pack(pack_id_of(p), blobs);
  }
  REQUIRE(idx.blob_count() == size_t(packs) * per_pack);
  REQUIRE(idx.pack_count() == packs);
  for (uint32_t p = 0; p < packs; p += 7) {
    for (uint32_t i = 0; i < per_pack; i += 3) {
      uint64_t n = uint64_t(p) * per_pack + i;
      auto loc = idx.lookup(make_id(n));
      REQUIRE(loc);
      CHECK(loc->pack == pack_id_of(p));
      CHECK(loc->type == (i % 7 == 0 ? BlobType::tree : BlobType::data));
      CHECK(loc->flags == (i & 1));
      CHECK(loc->offset == i * 1000);
      CHECK(loc->length == 900 + i);
      CHECK(loc->raw_length == 2000 + uint32_t(n % 5000));
      CHECK(idx.contains(make_id(n)));
    }
  }
  // ids never added are absent, including ones sharing the first 8 bytes of a present id
  for (uint64_t n = 1'000'000; n < 1'010'000; ++n) CHECK_FALSE(idx.contains(make_id(n)));
  BlobId near = make_id(42);
  near[31] ^= 1;
  CHECK_FALSE(idx.contains(near));
  CHECK_FALSE(idx.lookup(near));
  CHECK(idx.has_pack(pack_id_of(299)));
  CHECK_FALSE(idx.has_pack(pack_id_of(300)));
  // compact: well under the ~100 bytes per blob of a node-based hash map
  INFO("bytes per blob: " << double(idx.memory_bytes()) / double(idx.blob_count()));
  CHECK(idx.memory_bytes() < idx.blob_count() * 80);
}

TEST_CASE("compact index: a blob stored twice keeps its first location; re-adding a pack changes nothing") {
  Index idx;
  BlobId a = make_id(1), b = make_id(2);
  idx.add_pack(pack_id_of(1), {PackBlob{a, BlobType::data, 0, 10, 20, 30}});
  idx.add_pack(pack_id_of(2), {PackBlob{a, BlobType::data, 1, 11, 21, 31}, PackBlob{b, BlobType::tree, 0, 12, 22, 32}});
  idx.add_pack(pack_id_of(1), {PackBlob{a, BlobType::data, 0, 10, 20, 30}});
  CHECK(idx.blob_count() == 2);
  CHECK(idx.pack_count() == 2);
  auto la = idx.lookup(a);
  REQUIRE(la);
  CHECK(la->pack == pack_id_of(1));
  CHECK(la->offset == 10);
  auto lb = idx.lookup(b);
  REQUIRE(lb);
  CHECK(lb->pack == pack_id_of(2));
  CHECK(lb->type == BlobType::tree);
  CHECK(idx.packs() == std::vector<BlobId>{pack_id_of(1), pack_id_of(2)});
  idx.clear();
  CHECK(idx.blob_count() == 0);
  CHECK_FALSE(idx.contains(a));
  CHECK_FALSE(idx.lookup(b));
  idx.add_pack(pack_id_of(3), {PackBlob{b, BlobType::tree, 0, 1, 2, 3}});
  CHECK(idx.lookup(b)->pack == pack_id_of(3));
}

TEST_CASE("compact index: concurrent readers see every blob of a pack once add_pack returned") {
  Index idx;
  std::atomic<uint32_t> published{0};
  std::atomic<bool> bad{false};
  std::thread writer([&] {
    for (uint32_t p = 0; p < 200; ++p) {
      std::vector<PackBlob> blobs;
      for (uint32_t i = 0; i < 100; ++i) blobs.push_back(PackBlob{make_id(uint64_t(p) * 100 + i), BlobType::data, 0, i, 1, 1});
      idx.add_pack(pack_id_of(p), blobs);
      published = p + 1;
    }
  });
  std::vector<std::thread> readers;
  for (int r = 0; r < 2; ++r)
    readers.emplace_back([&] {
      while (published < 200) {
        uint32_t p = published;
        for (uint32_t q = 0; q < p; q += 13)
          if (!idx.contains(make_id(uint64_t(q) * 100 + 99))) bad = true;
      }
    });
  writer.join();
  for (auto& t : readers) t.join();
  CHECK_FALSE(bad);
  CHECK(idx.blob_count() == 20000);
}
