#include "common/repo/memory.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>

#include "common/repo/chunker.h"
#include "common/repo/index.h"
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

uint64_t budget_bytes(uint64_t configured) { return configured ? configured : resolve_memory_budget(std::nullopt, "").bytes; }

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

namespace {
// A pack read whole by check --read-data, with one chunk decompressed out of it.
uint64_t reader_bytes(uint64_t largest_pack) { return largest_pack + kMaxChunkSize + (1u << 20); }
}  // namespace

RepositoryNeeds repository_needs(const Index& idx, MemoryUse use, size_t load_parallel, uint64_t largest_pack) {
  RepositoryNeeds n;
  n.use = use;
  n.blobs = idx.blob_count();
  n.index = idx.memory_bytes();
  n.index_file_blobs = idx.largest_file_blobs();
  n.index_load = n.index_file_blobs * kIndexLoadBytesPerBlob * std::max<size_t>(load_parallel, 1);
  n.largest_tree = idx.largest_tree_raw();
  n.largest_tree_stored = idx.largest_tree_sealed();
  // Reading a tree holds its sealed bytes and its decrypted frame, then the
  // frame and a window of its text (a small tree: its text, under 1 MiB). A
  // backup also writes a tree as large: its compressed frame, then sealed.
  const uint64_t one = 2 * n.largest_tree_stored + std::min<uint64_t>(n.largest_tree, 2u << 20);
  n.trees = use == MemoryUse::backup ? one + 2 * n.largest_tree_stored : one;
  switch (use) {
    case MemoryUse::backup:
      n.base = kBackupLeastBytes;
      break;
    case MemoryUse::read_data:
      n.base = kProcessBytes + reader_bytes(largest_pack);
      break;
    default:
      n.base = kProcessBytes;
  }
  const uint64_t load = kProcessBytes + n.index + n.index_load;
  const uint64_t work = n.base + n.repository_bytes();
  n.total = std::max({kOpenBytes, load, work, use == MemoryUse::backup ? kMinMemoryBudget : 0});
  return n;
}

std::string least_budget_text(uint64_t bytes) {
  uint64_t mib = (bytes + (1u << 20) - 1) >> 20;
  mib = (mib + 7) / 8 * 8;
  return mib % 1024 == 0 ? std::to_string(mib / 1024) + "G" : std::to_string(mib) + "M";
}

std::string below_needs_text(const RepositoryNeeds& n) {
  auto mib = [](uint64_t b) { return std::to_string((b + (1u << 20) - 1) >> 20) + " MiB"; };
  auto count = [](uint64_t v) {
    std::string s = std::to_string(v);
    for (int i = int(s.size()) - 3; i > 0; i -= 3) s.insert(size_t(i), ",");
    return s;
  };
  std::string s = "is below what this repository needs (about " + mib(n.total) + ": ";
  s += "its index holds " + count(n.blobs) + " blobs at ~" + std::to_string(n.blobs ? n.index / n.blobs : 0) + " bytes each, " +
       mib(n.index);
  if (n.index_load)
    s += ", and ~" + std::to_string(kIndexLoadBytesPerBlob) + " bytes each of its largest index file's " + count(n.index_file_blobs) +
         " while it is read";
  if (n.largest_tree)
    s += "; its largest tree, " + mib(n.largest_tree) + " of text stored in " + mib(n.largest_tree_stored) + ", takes " + mib(n.trees) +
         (n.use == MemoryUse::backup ? " read and written" : " to read");
  switch (n.use) {
    case MemoryUse::backup:
      s += "; one backup thread, its packs and the process " + mib(n.base);
      break;
    case MemoryUse::read_data:
      s += "; the process and one pack reader " + mib(n.base);
      break;
    default:
      s += "; the process " + mib(n.base);
  }
  if (n.total == kOpenBytes) s += "; opening it " + mib(kOpenBytes) + " (the key derivation)";
  return s + ")";
}

unsigned read_data_threads(uint64_t budget, unsigned cpus, uint64_t largest_pack, const RepositoryNeeds& needs) {
  uint64_t fixed = kProcessBytes + needs.index;
  uint64_t fit = budget > fixed ? (budget - fixed) / reader_bytes(largest_pack) : 0;
  return unsigned(std::clamp<uint64_t>(fit, 1, std::clamp(cpus, 1u, 8u)));
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
      case 'K':
        shift = 10;
        break;
      case 'M':
        shift = 20;
        break;
      case 'G':
        shift = 30;
        break;
      case 'T':
        shift = 40;
        break;
      case 'B':
        shift = -1;
        break;
      default:
        return std::nullopt;
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
