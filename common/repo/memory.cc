#include "common/repo/memory.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "common/util/cpus.h"

namespace cairn::repo {

std::string MemoryBudget::describe() const { return byte_size_text(bytes) + " (" + source + ")"; }

MemoryBudget resolve_memory_budget(std::optional<uint64_t> configured, std::string_view where, std::optional<uint64_t> cgroup_limit) {
  MemoryBudget b;
  if (configured) {
    b.bytes = *configured;
    b.source = std::string(where);
  } else if (cgroup_limit) {
    b.bytes = *cgroup_limit / 2;
    b.source = "half of the cgroup memory limit, " + byte_size_text(*cgroup_limit);
  }
  return b;
}

MemoryBudget resolve_memory_budget(std::optional<uint64_t> configured, std::string_view where) {
  return resolve_memory_budget(configured, where, configured ? std::nullopt : cgroup_memory_limit());
}

uint64_t budget_bytes(uint64_t configured) {
  return configured ? configured : resolve_memory_budget(std::nullopt, "").bytes;
}

unsigned backup_threads(uint64_t budget, unsigned cpus, uint32_t pack_size) {
  uint64_t fixed = backup_fixed_bytes(pack_size);
  uint64_t fit = budget > fixed ? (budget - fixed) / kBackupThreadBytes : 0;
  return unsigned(std::clamp<uint64_t>(fit, 1, std::max(1u, cpus)));
}

unsigned restore_writers(uint64_t budget, unsigned cpus) {
  unsigned want = std::clamp(2 * cpus, kMinRestoreWriters, kMaxRestoreWriters);
  uint64_t fit = budget > kRestoreBaseBytes ? (budget - kRestoreBaseBytes) / kRestoreWriterBytes : 0;
  return unsigned(std::clamp<uint64_t>(fit, 1, want));
}

std::optional<uint64_t> parse_byte_size(std::string_view t) {
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.front()))) t.remove_prefix(1);
  while (!t.empty() && std::isspace(static_cast<unsigned char>(t.back()))) t.remove_suffix(1);
  size_t i = 0;
  bool dot = false;
  while (i < t.size() && (std::isdigit(static_cast<unsigned char>(t[i])) || (t[i] == '.' && !dot))) dot |= t[i++] == '.';
  std::string num(t.substr(0, i));
  if (num.empty() || num == "." || num.size() > 20) return std::nullopt;
  std::string_view unit = t.substr(i);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  int shift = 0;
  if (!unit.empty()) {
    switch (std::toupper(static_cast<unsigned char>(unit.front()))) {
      case 'K': shift = 10; break;
      case 'M': shift = 20; break;
      case 'G': shift = 30; break;
      case 'T': shift = 40; break;
      case 'B': shift = -1; break;
      default: return std::nullopt;
    }
    if (shift < 0) {  // "B" alone
      if (unit.size() != 1) return std::nullopt;
      shift = 0;
    } else {
      unit.remove_prefix(1);
      if (unit == "iB" || unit == "ib" || unit == "B" || unit == "b") unit = {};
      if (!unit.empty()) return std::nullopt;
    }
  }
  double v = std::strtod(num.c_str(), nullptr) * std::ldexp(1.0, shift);
  if (!(v >= 1) || v > std::ldexp(1.0, 60)) return std::nullopt;
  if (dot && shift == 0) return std::nullopt;  // "1.5" bytes
  return uint64_t(v);
}

std::string byte_size_text(uint64_t n, ByteText style) {
  const bool tenths = style == ByteText::tenths;
  const char* units[] = {tenths ? "B" : "bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(n);
  int i = 0;
  while (v >= 1024 && i < 5) {
    v /= 1024;
    ++i;
  }
  char buf[32];
  bool whole = i == 0 || (!tenths && v == std::floor(v));
  std::snprintf(buf, sizeof buf, whole ? "%.0f %s" : "%.1f %s", v, units[i]);
  return buf;
}

}  // namespace cairn::repo
