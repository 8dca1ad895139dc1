#include "agent/drivers/postgresql/wal.h"

#include <cctype>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "common/plan/recovery_target.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::postgresql {

namespace {

bool hex_field(const std::string& s, size_t pos, size_t n, uint64_t* out) {
  if (pos + n > s.size()) return false;
  uint64_t v = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    char c = s[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
    if (d < 0) return false;  // PostgreSQL writes upper case only
    v = (v << 4) | uint64_t(d);
  }
  *out = v;
  return true;
}

template <typename T>
T load_le(std::string_view b, size_t off) {
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);  // x86 and arm64 are little-endian, as the files are
  return v;
}

constexpr uint16_t kLongHeader = 0x0002;  // XLP_LONG_HEADER
constexpr uint64_t kSegmentsPerId = 0x100000000ull / kWalSegmentSize;

}  // namespace

std::optional<WalFileName> parse_wal_name(const std::string& name) {
  WalFileName w;
  w.name = name;
  uint64_t tli = 0, hi = 0, lo = 0;
  auto segment_part = [&](const std::string& s) {
    return s.size() >= 24 && hex_field(s, 0, 8, &tli) && hex_field(s, 8, 8, &hi) && hex_field(s, 16, 8, &lo) && tli != 0 &&
           lo < kSegmentsPerId;
  };
  if (name.size() == 24 && segment_part(name)) {
    w.kind = WalFileKind::segment;
  } else if (name.size() == 32 && name.compare(24, 8, ".partial") == 0 && segment_part(name)) {
    w.kind = WalFileKind::partial;
  } else if (name.size() == 16 && name.compare(8, 8, ".history") == 0 && hex_field(name, 0, 8, &tli) && tli != 0) {
    w.kind = WalFileKind::history;
    w.timeline = uint32_t(tli);
    return w;
  } else if (name.size() == 40 && name[24] == '.' && name.compare(33, 7, ".backup") == 0 && segment_part(name)) {
    uint64_t off = 0;
    if (!hex_field(name, 25, 8, &off)) return std::nullopt;
    w.kind = WalFileKind::backup_history;
  } else {
    return std::nullopt;
  }
  w.timeline = uint32_t(tli);
  w.segno = hi * kSegmentsPerId + lo;
  return w;
}

std::string segment_name(uint32_t timeline, uint64_t segno) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08X%08X%08X", timeline, unsigned(segno / kSegmentsPerId), unsigned(segno % kSegmentsPerId));
  return buf;
}

uint64_t segno_of(uint64_t lsn) { return lsn / kWalSegmentSize; }

SegmentCheck check_segment(std::string_view b, const WalFileName& name) {
  SegmentCheck c;
  auto fail = [&](const std::string& why) {
    c.problem = "WAL segment '" + name.name + "' " + why;
    return c;
  };
  if (name.kind != WalFileKind::segment && name.kind != WalFileKind::partial) return fail("is not a segment");
  if (b.size() != kWalSegmentSize)
    return fail("is " + std::to_string(b.size()) + " bytes, not " + std::to_string(kWalSegmentSize) +
                " (truncated, or a cluster made with another --wal-segsize)");
  if (load_le<uint16_t>(b, 0) != kWalPageMagic) return fail("does not start with a PostgreSQL 15 WAL page (its magic number is another)");
  if (!(load_le<uint16_t>(b, 2) & kLongHeader)) return fail("has no long header on its first page");
  c.system_id = load_le<uint64_t>(b, 24);
  if (load_le<uint32_t>(b, 32) != kWalSegmentSize) return fail("declares another segment size");
  if (load_le<uint32_t>(b, 36) != kWalPageSize) return fail("declares another page size");
  c.page_timeline = load_le<uint32_t>(b, 4);
  const uint64_t base = name.segno * kWalSegmentSize;
  bool zero_tail = false;
  static const std::string zeros_s(kWalPageSize, '\0');
  const std::string_view zeros(zeros_s);
  for (uint64_t off = 0; off < kWalSegmentSize; off += kWalPageSize) {
    const uint64_t lsn = base + off;
    if (b.compare(off, kWalPageSize, zeros) == 0) {
      if (off == 0) return fail("starts with a zeroed page");
      zero_tail = true;
      continue;
    }
    if (zero_tail) return fail("has a written page at " + plan::format_lsn(lsn) + " after zeroed pages (damaged)");
    if (load_le<uint16_t>(b, off) != kWalPageMagic) return fail("has a damaged page header at " + plan::format_lsn(lsn) + " (magic)");
    if (load_le<uint64_t>(b, off + 8) != lsn)
      return fail("has a page at " + plan::format_lsn(lsn) + " that says it is at " + plan::format_lsn(load_le<uint64_t>(b, off + 8)) +
                  " (a segment of another position, or damaged)");
    uint32_t tli = load_le<uint32_t>(b, off + 4);
    if (tli == 0 || tli > name.timeline)
      return fail("has a page at " + plan::format_lsn(lsn) + " of timeline " + std::to_string(tli) + ", newer than its name's " +
                  std::to_string(name.timeline));
  }
  return c;
}

SegmentCheck check_segment_file(const std::string& path, const WalFileName& name) {
  Bytes bytes;
  try {
    bytes = read_file(path, kWalSegmentSize + 1);
  } catch (const std::exception& e) {
    SegmentCheck c;
    c.problem = "WAL segment '" + name.name + "' cannot be read: " + e.what();
    return c;
  }
  return check_segment(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), name);
}

std::vector<HistoryEntry> parse_history(const std::string& text) {
  std::vector<HistoryEntry> out;
  std::istringstream in(text);
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    size_t i = 0;
    while (i < line.size() && std::isspace(static_cast<unsigned char>(line[i]))) ++i;
    if (i == line.size() || line[i] == '#') continue;
    unsigned long tli = 0;
    char lsn[64] = {0};
    if (std::sscanf(line.c_str() + i, "%lu %63s", &tli, lsn) != 2 || tli == 0)
      throw Error(Errc::corrupt, "timeline history line " + std::to_string(n) + " is not 'timeline<TAB>LSN<TAB>reason'");
    HistoryEntry e;
    e.timeline = uint32_t(tli);
    if (!plan::parse_lsn(lsn, &e.switch_lsn))
      throw Error(Errc::corrupt, "timeline history line " + std::to_string(n) + " has no LSN where one belongs");
    out.push_back(e);
  }
  return out;
}

}  // namespace cairn::agent::postgresql
