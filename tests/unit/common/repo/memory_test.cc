#include "common/repo/memory.h"

#include <catch2/catch.hpp>

#include "common/repo/index.h"

using namespace cairn::repo;

constexpr uint64_t MiB = 1ull << 20;

TEST_CASE("memory budget sizes parse as operators write them", "[memory]") {
  CHECK(parse_byte_size("512M") == 512 * MiB);
  CHECK(parse_byte_size("512MiB") == 512 * MiB);
  CHECK(parse_byte_size("512 MB") == 512 * MiB);
  CHECK(parse_byte_size(" 1.5G ") == 1536 * MiB);
  CHECK(parse_byte_size("2 GiB") == 2048 * MiB);
  CHECK(parse_byte_size("64k") == 64 * 1024);
  CHECK(parse_byte_size("1T") == (1ull << 40));
  CHECK(parse_byte_size("1073741824") == (1ull << 30));
  CHECK(parse_byte_size("4096B") == 4096);
  // Refused: nothing, zero, fractions of a byte, unknown units, trailing junk, absurd sizes.
  for (const char* bad : {"", " ", "0", "0M", "1.5", "M", "12X", "12 MiBs", "1e9", "-5M", "5M5", "2000000000T", ".M", "1..5G"}) {
    INFO(bad);
    CHECK_FALSE(parse_byte_size(bad).has_value());
  }
}

TEST_CASE("byte sizes print in binary units", "[memory]") {
  CHECK(byte_size_text(512 * MiB) == "512 MiB");
  CHECK(byte_size_text(1536 * MiB) == "1.5 GiB");
  CHECK(byte_size_text(100) == "100 bytes");
  CHECK(byte_size_text(900 * 1024) == "900 KiB");
  // cairnctl's columns: one decimal always, "B" for bytes.
  CHECK(byte_size_text(512 * MiB, ByteText::tenths) == "512.0 MiB");
  CHECK(byte_size_text(1536 * MiB, ByteText::tenths) == "1.5 GiB");
  CHECK(byte_size_text(100, ByteText::tenths) == "100 B");
}

TEST_CASE("the budget in force: setting, else half the cgroup limit, else the default", "[memory]") {
  auto set = resolve_memory_budget(256 * MiB, "--memory-budget", 4096 * MiB);
  CHECK(set.bytes == 256 * MiB);
  CHECK(set.describe() == "256 MiB (--memory-budget)");

  auto cg = resolve_memory_budget(std::nullopt, "--memory-budget", 1024 * MiB);
  CHECK(cg.bytes == 512 * MiB);
  CHECK(cg.describe() == "512 MiB (half of the cgroup memory limit, 1 GiB)");

  auto def = resolve_memory_budget(std::nullopt, "--memory-budget", std::nullopt);
  CHECK(def.bytes == kDefaultMemoryBudget);
  CHECK(def.describe() == "512 MiB (the default)");
}

TEST_CASE("backup threads fit the budget and never exceed the CPUs", "[memory]") {
  const uint32_t pack = 16 * MiB;
  // The host: 2 CPUs, 512 MiB -> both CPUs.
  CHECK(backup_threads(256 * MiB, 2, pack) == 2);
  // 64 CPUs on a 512 MiB budget: as many as fit, and what they hold stays inside it.
  unsigned t = backup_threads(512 * MiB, 64, pack);
  CHECK(t > 1);
  CHECK(t < 64);
  CHECK(backup_fixed_bytes(pack) + t * kBackupThreadBytes <= 512 * MiB);
  CHECK(backup_fixed_bytes(pack) + (t + 1) * kBackupThreadBytes > 512 * MiB);
  // A budget too small for even one: one thread, never zero.
  CHECK(backup_threads(kMinMemoryBudget, 16, pack) == 1);
  CHECK(backup_threads(1, 16, pack) == 1);
  CHECK(backup_threads(1ull << 40, 0, pack) == 1);
  // Plenty of memory: one a CPU.
  CHECK(backup_threads(64ull << 30, 16, pack) == 16);
}

TEST_CASE("restore writers: twice the CPUs within 4..8, fewer when the budget is small", "[memory]") {
  CHECK(restore_writers(512 * MiB, 1) == kMinRestoreWriters);
  CHECK(restore_writers(512 * MiB, 3) == 6);
  CHECK(restore_writers(512 * MiB, 64) == kMaxRestoreWriters);
  unsigned w = restore_writers(48 * MiB, 16);
  CHECK(w >= 1);
  CHECK(kRestoreBaseBytes + w * kRestoreWriterBytes <= 48 * MiB);
  CHECK(restore_writers(1, 16) == 1);
}

TEST_CASE("what a command needs of a repository: its index and its largest tree, whatever the budget", "[memory]") {
  Index idx;
  // An empty repository: opening it (the key derivation) is the most a read needs;
  // a backup needs its measured least.
  CHECK(repository_needs(idx, MemoryUse::check, 1).total == kOpenBytes);
  CHECK(repository_needs(idx, MemoryUse::backup, 1).total == kMinMemoryBudget);
  // 200,000 blobs in files of 16,384, and a tree of 54 MiB stored in 9 MiB.
  std::vector<PackBlob> blobs;
  for (uint32_t i = 0; i < 200000; ++i) {
    PackBlob b;
    b.id[0] = uint8_t(i), b.id[1] = uint8_t(i >> 8), b.id[2] = uint8_t(i >> 16), b.id[3] = 7;
    b.length = 100;
    b.raw_length = 60;
    blobs.push_back(b);
  }
  blobs[0].type = BlobType::tree;
  blobs[0].raw_length = 54 << 20;
  blobs[0].length = 9 << 20;
  idx.add_pack(BlobId{}, blobs);
  idx.note_file(16384);
  RepositoryNeeds c = repository_needs(idx, MemoryUse::check, 1);
  CHECK(c.blobs == 200000);
  CHECK(c.index == idx.memory_bytes());
  CHECK(c.index / c.blobs < 70);
  CHECK(c.index_load == 16384 * kIndexLoadBytesPerBlob);
  CHECK(c.trees == 2 * (9 << 20) + 2 * MiB);
  CHECK(c.total == std::max(kOpenBytes, kProcessBytes + c.index + c.trees));
  RepositoryNeeds b = repository_needs(idx, MemoryUse::backup, 4);
  CHECK(b.trees == c.trees + 2 * (9 << 20));
  CHECK(b.total == kBackupLeastBytes + b.index + b.trees);
  // Loading four files at once of a million blobs each is what dominates then.
  idx.note_file(1000000);
  CHECK(repository_needs(idx, MemoryUse::check, 4).total == kProcessBytes + c.index + 4 * 1000000 * kIndexLoadBytesPerBlob);
  // A reader of check --read-data holds a pack whole; the readers fit in what the index leaves.
  RepositoryNeeds r = repository_needs(idx, MemoryUse::read_data, 1, 16 * MiB);
  CHECK(r.base == kProcessBytes + 16 * MiB + 4 * MiB + MiB);
  CHECK(read_data_threads(128 * MiB, 8, 16 * MiB, r) == 4);
  CHECK(read_data_threads(32 * MiB, 8, 16 * MiB, r) == 1);
  CHECK(read_data_threads(4096 * MiB, 2, 16 * MiB, r) == 2);

  std::string text = below_needs_text(b);
  CHECK(text.rfind("is below what this repository needs (about 143 MiB: its index holds 200,000 blobs at ~", 0) == 0);
  CHECK(text.find("its largest tree, 54 MiB of text stored in 9 MiB, takes 38 MiB read and written") != std::string::npos);
  CHECK(least_budget_text(b.total) == "144M");
  CHECK(least_budget_text(143 * MiB + 1) == "144M");
  CHECK(least_budget_text(1024 * MiB) == "1G");
  CHECK(least_budget_text(1) == "8M");
}
