#pragma once
// The memory budget of a backup or a restore: what their buffers may hold, and
// the pool sizes that fit in it (docs/operations.md, "CPUs and memory"). The
// model is measured, not guessed: bench/repo/rss.py prints peak RSS against
// threads and budget, and docs/benchmarks.md keeps the figures.
//
// What the budget bounds: chunk and read buffers, compression contexts and the
// packs in flight, all of which grow with the number of threads. What it does
// not: the repository index (52 bytes a blob, as restic's) and a restore's plan
// (a few hundred bytes a file), which grow with the repository and the snapshot.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cairn::repo {

// No setting and no cgroup limit: enough for one thread a CPU on a 16-CPU host.
constexpr uint64_t kDefaultMemoryBudget = 512ull << 20;
// Below this a backup cannot hold one thread's buffers and the packs in flight
// (one thread peaked at 93 MiB on a 4 GiB corpus).
constexpr uint64_t kMinMemoryBudget = 96ull << 20;

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
