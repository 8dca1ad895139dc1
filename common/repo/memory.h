#pragma once
// The memory budget of a backup or a restore: what their buffers may hold, and
// the pool sizes that fit in it (docs/operations.md, "CPUs and memory"). The
// model is measured, not guessed: bench/repo/rss.py prints peak RSS against
// threads and budget, and docs/benchmarks.md keeps the figures.
//
// What the budget bounds: chunk and read buffers, compression contexts and the
// packs in flight, all of which grow with the number of threads; trees are read
// and written a piece at a time. What it does not: the repository index (~64
// bytes a blob), the largest tree's stored size and a restore's plan (a few
// hundred bytes a file), which grow with the repository and the snapshot.
// RepositoryNeeds says how much that is; cairnctl refuses a budget below it.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cairn::repo {

// No setting and no cgroup limit: enough for one thread a CPU on a 16-CPU host.
constexpr uint64_t kDefaultMemoryBudget = 512ull << 20;
// Below this a backup cannot hold one thread's buffers and the packs in flight
// (one thread peaked at 93 MiB on a 4 GiB corpus, a small repository's index
// and trees included: kBackupLeastBytes).
constexpr uint64_t kMinMemoryBudget = 96ull << 20;
constexpr uint64_t kBackupLeastBytes = 93ull << 20;

// Backup: one reader and one worker a thread. A reader holds up to two 8 MiB
// blocks (its own and one its chunks in flight keep alive), a worker one sealed
// chunk, zstd's output for it and its context: 28 MiB at most, measured. Fixed:
// the packs in flight (one filling for data and one for trees, one queued, one
// being written, one spare), the spare read blocks, the index and the process
// itself. Measured peaks (docs/benchmarks.md § Memory): 2 threads 129 MiB, 4
// threads 191 MiB, 16 threads 513 MiB against 136, 192 and 528 by this model.
constexpr uint64_t kBackupThreadBytes = 28ull << 20;
constexpr uint64_t kBackupBaseBytes = 40ull << 20;
constexpr uint64_t backup_fixed_bytes(uint32_t pack_size) { return kBackupBaseBytes + 5ull * pack_size; }
// Restore: a writer holds one read (4 MiB, or one sealed blob) and one chunk.
constexpr uint64_t kRestoreWriterBytes = (8ull << 20) + (384u << 10);
constexpr uint64_t kRestoreBaseBytes = 24ull << 20;
// Writers wait on the disk as much as on the CPU: twice the CPUs, 4 to 8 (restic
// restores with 8); more bought no speed and cost 8 MiB each.
constexpr unsigned kMinRestoreWriters = 4, kMaxRestoreWriters = 8;

// ---- What a command needs whatever its budget ------------------------------
// (docs/operations.md § What the budget cannot bound; figures measured on
// 200,000 files, docs/benchmarks.md § A directory of 200,000 files.)

// The process once the repository is open: binary, libraries, allocator
// (cairnctl: 18 MiB measured).
constexpr uint64_t kProcessBytes = 24ull << 20;
// Opening the repository: scrypt with a key slot's default parameters (n =
// 2^15, r = 8: 32 MiB) on top of the process (52 MiB measured).
constexpr uint64_t kOpenBytes = kProcessBytes + (32ull << 20);
// Reading one index file: its sealed, compressed and decompressed text and its
// entries, a blob each (~190 bytes measured).
constexpr uint64_t kIndexLoadBytesPerBlob = 192;

class Index;

// What a command does with the repository, for RepositoryNeeds.
enum class MemoryUse {
  check,      // check: every tree once, one at a time
  read_data,  // check --read-data: the same, then packs read whole (one reader at least)
  walk,       // ls, and a restore's walk: the trees from the root to where it is
  backup,     // backup: one thread and its packs at least; the parent's trees read, its own written
};

struct RepositoryNeeds {
  MemoryUse use = MemoryUse::check;
  uint64_t blobs = 0;
  uint64_t index = 0;                // the index's records and table (Index::memory_bytes)
  uint64_t index_file_blobs = 0;     // the most blobs one index file lists
  uint64_t index_load = 0;           // reading that many files at once, before the work
  uint64_t largest_tree = 0;         // the largest tree's text
  uint64_t largest_tree_stored = 0;  // its stored (compressed, sealed) size
  uint64_t trees = 0;                // what reading it holds (backup: and writing one as large)
  uint64_t base = 0;                 // the process and the command's own least buffers (backup: kBackupLeastBytes)
  uint64_t total = 0;                // max(kOpenBytes, loading the index, the work)
  // What grows with the repository during the work, beyond base: what a
  // budget's thread pools must leave room for.
  uint64_t repository_bytes() const { return index + trees; }
};

// load_parallel: index files read at once (Repository::load_index: one a
// thread; check: one). largest_pack: for read_data, the largest pack present.
RepositoryNeeds repository_needs(const Index& idx, MemoryUse use, size_t load_parallel, uint64_t largest_pack = 0);
// "is below what this repository needs (about 190 MiB: its index holds 412,000
// blobs at ~64 bytes each, ...)"
std::string below_needs_text(const RepositoryNeeds& n);
// The least budget that covers `bytes`, rounded up to whole 8 MiB: "200M".
std::string least_budget_text(uint64_t bytes);

struct MemoryBudget {
  uint64_t bytes = kDefaultMemoryBudget;
  std::string source = "the default";  // where it came from: for the start-up log and messages
  std::string describe() const;        // "256 MiB (half of the cgroup memory limit, 512 MiB)"
};

// The budget in force: `configured` (from `where`, e.g. "--memory-budget") when
// given, else half the cgroup memory limit when there is one (the other half is
// for the index, the page cache the kernel charges to the cgroup, and drivers'
// tools), else kDefaultMemoryBudget.
MemoryBudget resolve_memory_budget(std::optional<uint64_t> configured, std::string_view where);
MemoryBudget resolve_memory_budget(std::optional<uint64_t> configured, std::string_view where, std::optional<uint64_t> cgroup_limit);
// The bytes of an operation's budget: `configured` when non-zero (an option
// the caller resolved already), else what resolve_memory_budget finds.
uint64_t budget_bytes(uint64_t configured);

// Pool sizes that fit: at least 1, at most `cpus` (backup) or 2×cpus clamped to
// [kMinRestoreWriters, kMaxRestoreWriters] (restore).
unsigned backup_threads(uint64_t budget, unsigned cpus, uint32_t pack_size);
// check --read-data: packs read at once, each held whole with a chunk, after
// what the repository needs (needs.base and repository_bytes()).
unsigned read_data_threads(uint64_t budget, unsigned cpus, uint64_t largest_pack, const RepositoryNeeds& needs);
unsigned restore_writers(uint64_t budget, unsigned cpus);

// "512M", "1.5G", "64MiB", "2 GiB", "1073741824": K, M, G, T are powers of 1024;
// a trailing "B" or "iB" is allowed. nullopt for anything else, for 0, and for
// sizes past 2^60.
std::optional<uint64_t> parse_byte_size(std::string_view text);
// exact: "512 MiB", "1.5 GiB", "900 KiB", "100 bytes" (whole numbers without
// a decimal). tenths: "512.0 MiB", "100 B" (columns of sizes, cairnctl's human_bytes).
enum class ByteText { exact, tenths };
std::string byte_size_text(uint64_t n, ByteText style = ByteText::exact);

}  // namespace cairn::repo
