#pragma once
// What this process may really use: the CPUs of its affinity mask, lowered by
// a cgroup CPU quota (v2 cpu.max, v1 cpu.cfs_quota_us / cpu.cfs_period_us, at
// its cgroup and every parent), and the cgroup memory limit (v2 memory.max,
// v1 memory.limit_in_bytes). std::thread::hardware_concurrency() counts the
// host's CPUs: 64 on a host that gives an agent two, each thread pool sized
// from it holding its buffers.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cairn {

struct CpuLimit {
  unsigned affinity = 1;         // CPUs in the affinity mask
  std::optional<double> quota;   // cgroup CPU quota in CPUs (1.5 = 150 ms per 100 ms), the lowest on the path
  unsigned usable = 1;           // min(affinity, quota rounded up), at least 1
  std::string describe() const;  // "2 (affinity 16, cgroup quota 1.50 CPUs)"
};

// Read once and kept (the limits of a running process rarely change, and pools are sized once).
const CpuLimit& cpu_limit();
inline unsigned usable_cpus() { return cpu_limit().usable; }

// The cgroup memory limit in bytes, the lowest on the path; nullopt when none.
std::optional<uint64_t> cgroup_memory_limit();

// For tests and for the readers above: the limits read under a cgroup file
// system root, for a process whose /proc/self/cgroup reads `proc_cgroup`.
std::optional<double> cgroup_cpu_quota(std::string_view proc_cgroup, const std::string& root);
std::optional<uint64_t> cgroup_memory_limit(std::string_view proc_cgroup, const std::string& root);
// "max 100000" -> nullopt, "150000 100000" -> 1.5; nullopt for anything malformed.
std::optional<double> parse_cpu_max(std::string_view text);

}  // namespace cairn
