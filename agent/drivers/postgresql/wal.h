#pragma once
// WAL files as PostgreSQL archives them (docs/postgresql.md § WAL archive):
// names, and the checks a segment passes before it is reported stored.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace cairn::agent::postgresql {

constexpr uint64_t kWalSegmentSize = 16ull << 20;  // initdb's default; other sizes are refused
constexpr uint32_t kWalPageSize = 8192;
constexpr uint16_t kWalPageMagic = 0xD110;  // PostgreSQL 15 (XLOG_PAGE_MAGIC)

// What archive_command may hand over: a segment, a segment's last piece from
// before a promotion (".partial"), a timeline history or a backup history file.
enum class WalFileKind { segment, partial, history, backup_history };

struct WalFileName {
  WalFileKind kind = WalFileKind::segment;
  uint32_t timeline = 0;
  uint64_t segno = 0;  // segments: the segment's number (LSN / segment size)
  std::string name;
};

// Parses the base name PostgreSQL gives (%f); nullopt for anything else
// (a path, another file's name).
std::optional<WalFileName> parse_wal_name(const std::string& name);
// The segment name of (timeline, segno) with 16 MiB segments.
std::string segment_name(uint32_t timeline, uint64_t segno);
uint64_t segno_of(uint64_t lsn);

struct SegmentCheck {
  std::string problem;     // empty: the segment is whole
  uint64_t system_id = 0;  // the cluster's system identifier (from the first page)
  uint32_t page_timeline = 0;
};

// Checks a segment's pages: its size, the long header of the first page (magic,
// system id, segment and page sizes), and on every page the magic and the
// address the name implies; zeroed pages are allowed only as a tail. The
// timeline of a page may be older than the name's (the first segment of a new
// timeline begins with the old one's pages), never newer.
SegmentCheck check_segment(std::string_view bytes, const WalFileName& name);
// Reads and checks a file; problem names the file.
SegmentCheck check_segment_file(const std::string& path, const WalFileName& name);

// A timeline history file's entries: each parent timeline and where it ended.
struct HistoryEntry {
  uint32_t timeline = 0;
  uint64_t switch_lsn = 0;
};
// Throws cairn::Error(corrupt) on a line that is not "tli<TAB>lsn<TAB>reason".
std::vector<HistoryEntry> parse_history(const std::string& text);

}  // namespace cairn::agent::postgresql
