#pragma once
// Reading PostgreSQL 15's WAL records from archived segments: where each
// record starts and ends, and the commit and abort records recovery stops at
// (their transaction and time). A restore reads them before anything is
// stopped to prove that a time or transaction target is reached by the WAL it
// has (docs/postgresql.md § Point-in-time recovery): the commit records in
// intact WAL before a gap or a damaged segment are as readable as any.
//
// The format (PostgreSQL's access/xlogrecord.h, xlog_internal.h, xact.h):
// pages of 8 KiB, each starting with a 24-byte header (40 bytes on a
// segment's first page); records 8-byte aligned, each a 24-byte header
// (xl_tot_len, xl_xid, xl_prev, xl_info, xl_rmid, crc) whose bytes and body
// may run over page boundaries; an XLOG_SWITCH record ends its segment.
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace cairn::agent::postgresql {

// A transaction's end as recovery sees it (recoveryStopsBefore): a commit or
// an abort, of a transaction or of a prepared one.
struct XactEnd {
  uint64_t lsn = 0;      // where the record starts
  uint64_t end_lsn = 0;  // where it ends
  uint32_t xid = 0;      // the transaction (a prepared one's own for COMMIT/ABORT PREPARED)
  int64_t time_us = 0;   // its commit or abort time, microseconds since the Unix epoch
  bool commit = true;
};

// Where a scan stopped.
enum class ScanEnd {
  end_of_wal,       // a record that is not one (a zeroed or unwritten tail): the end of what was written
  missing_segment,  // the next segment is not there (a gap, or the end of the archive)
  bad_record,       // a record whose header cannot be (a length too short or too long, xl_prev wrong)
  stopped,          // the callback asked to stop
};

struct ScanResult {
  ScanEnd end = ScanEnd::end_of_wal;
  uint64_t end_lsn = 0;          // where the last whole record ended: recovery reaches this far at most
  uint64_t last_record_lsn = 0;  // where the last whole record starts
  uint64_t records = 0;
  uint64_t missing_segno = 0;  // ScanEnd::missing_segment: the segment that was needed
  std::string problem;         // ScanEnd::bad_record: what was wrong
};

// Reads records from `start` (a record's start: a backup's START WAL
// LOCATION, the redo point) through the segments `segment` gives (the 16 MiB
// of segment number segno, or an empty view when it is not there; a view
// must stay valid until the next call). Calls `on_xact` for each commit or
// abort; returning false stops the scan (ScanEnd::stopped).
ScanResult scan_wal(uint64_t start, const std::function<std::string_view(uint64_t segno)>& segment,
                    const std::function<bool(const XactEnd&)>& on_xact);

// PostgreSQL's epoch (2000-01-01 00:00:00 UTC) in Unix microseconds.
constexpr int64_t kPgEpochUnixUs = 946684800LL * 1000000;

}  // namespace cairn::agent::postgresql
