#include "agent/drivers/postgresql/wal_scan.h"

#include <cstring>
#include <optional>
#include <vector>

#include "agent/drivers/postgresql/wal.h"
#include "common/plan/recovery_target.h"

namespace cairn::agent::postgresql {

namespace {

constexpr uint32_t kShortHeader = 24;  // MAXALIGN(sizeof(XLogPageHeaderData))
constexpr uint32_t kLongHeader = 40;   // MAXALIGN(sizeof(XLogLongPageHeaderData))
constexpr uint16_t kFirstIsContRecord = 0x0001;
constexpr uint32_t kRecordHeader = 24;          // SizeOfXLogRecord
constexpr uint64_t kMaxRecord = 1100ull << 20;  // PostgreSQL's XLogRecordMaxSize is 1020 MiB
constexpr uint8_t kRmXlog = 0, kRmXact = 1;
constexpr uint8_t kXlogSwitch = 0x40;
constexpr uint8_t kInfoMask = 0x0F;
constexpr uint8_t kXactOpMask = 0x70, kXactHasInfo = 0x80;
constexpr uint8_t kXactCommit = 0x00, kXactAbort = 0x20, kXactCommitPrepared = 0x30, kXactAbortPrepared = 0x40;
// xl_xact_xinfo flags (PostgreSQL 15's access/xact.h).
constexpr uint32_t kHasDbInfo = 1u << 0, kHasSubxacts = 1u << 1, kHasRelfilenodes = 1u << 2, kHasInvals = 1u << 3, kHasTwophase = 1u << 4,
                   kHasDroppedStats = 1u << 8;

uint64_t maxalign(uint64_t v) { return (v + 7) & ~uint64_t(7); }
uint32_t header_size(uint64_t page_lsn) { return page_lsn % kWalSegmentSize == 0 ? kLongHeader : kShortHeader; }

template <typename T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // little-endian, as the files are
  return v;
}

// The pages of the archive, page by page; `segment` gives each segment once
// (the views of the current and the previous segment are kept).
class Pages {
 public:
  explicit Pages(const std::function<std::string_view(uint64_t)>& segment) : segment_(segment) {}

  // The page holding lsn, checked (magic and address); nullopt with `missing`
  // set when its segment is not there, nullopt alone when the page is not a
  // written page of this position (the end of the WAL).
  std::optional<std::string_view> page(uint64_t lsn, bool* missing) {
    *missing = false;
    const uint64_t segno = lsn / kWalSegmentSize;
    std::string_view seg;
    if (cur_ && cur_segno_ == segno) {
      seg = cur_view_;
    } else {
      seg = segment_(segno);
      if (seg.size() != kWalSegmentSize) {
        *missing = true;
        return std::nullopt;
      }
      cur_ = true;
      cur_segno_ = segno;
      cur_view_ = seg;
    }
    const uint64_t page_lsn = lsn - lsn % kWalPageSize;
    std::string_view p = seg.substr(page_lsn % kWalSegmentSize, kWalPageSize);
    if (load<uint16_t>(p.data()) != kWalPageMagic || load<uint64_t>(p.data() + 8) != page_lsn) return std::nullopt;
    return p;
  }

 private:
  const std::function<std::string_view(uint64_t)>& segment_;
  bool cur_ = false;
  uint64_t cur_segno_ = 0;
  std::string_view cur_view_;
};

enum class Read { ok, missing, end };

// Reads n bytes of record data from lsn (not inside a page header), skipping
// the header of every page it enters; *out gets them when out is non-null.
// *next is where the data ended.
Read read_data(Pages& pages, uint64_t lsn, uint64_t n, std::string* out, uint64_t* next, uint64_t* missing_segno) {
  if (out) out->clear();
  bool first = true;
  while (n > 0) {
    bool missing = false;
    auto p = pages.page(lsn, &missing);
    if (missing) {
      *missing_segno = lsn / kWalSegmentSize;
      return Read::missing;
    }
    if (!p) return Read::end;
    const uint64_t page_lsn = lsn - lsn % kWalPageSize;
    uint64_t off = lsn - page_lsn;
    if (off == 0) {
      // A page entered in the middle of a record continues it.
      if (!first && !(load<uint16_t>(p->data() + 2) & kFirstIsContRecord)) return Read::end;
      off = header_size(page_lsn);
      lsn = page_lsn + off;
    }
    const uint64_t take = std::min<uint64_t>(n, kWalPageSize - off);
    if (out) out->append(p->data() + off, take);
    n -= take;
    lsn += take;
    first = false;
  }
  *next = lsn;
  return Read::ok;
}

// The xact record's transaction end, from its main data; false when the
// record is not a commit or an abort, or its data is too short.
bool xact_end(uint8_t info, uint32_t record_xid, std::string_view main, XactEnd* out) {
  const uint8_t op = info & kXactOpMask;
  if (op != kXactCommit && op != kXactAbort && op != kXactCommitPrepared && op != kXactAbortPrepared) return false;
  if (main.size() < 8) return false;
  out->commit = op == kXactCommit || op == kXactCommitPrepared;
  out->time_us = load<int64_t>(main.data()) + kPgEpochUnixUs;
  out->xid = record_xid;
  if (!(info & kXactHasInfo) || (op != kXactCommitPrepared && op != kXactAbortPrepared)) return true;
  // A prepared transaction's own xid follows the sub-records (ParseCommitRecord).
  if (main.size() < 12) return false;
  const uint32_t xinfo = load<uint32_t>(main.data() + 8);
  size_t pos = 12;
  auto counted = [&](size_t item) {
    if (pos + 4 > main.size()) return false;
    const int32_t n = load<int32_t>(main.data() + pos);
    if (n < 0) return false;
    pos += 4 + size_t(n) * item;
    return pos <= main.size();
  };
  if (xinfo & kHasDbInfo) pos += 8;
  if ((xinfo & kHasSubxacts) && !counted(4)) return false;
  if ((xinfo & kHasRelfilenodes) && !counted(12)) return false;
  if ((xinfo & kHasDroppedStats) && !counted(12)) return false;
  if ((xinfo & kHasInvals) && !counted(16)) return false;
  if (!(xinfo & kHasTwophase) || pos + 4 > main.size()) return false;
  out->xid = load<uint32_t>(main.data() + pos);
  return true;
}

// The main data of a record (its header included in `rec`): after the
// block headers, block data and images, the last main_len bytes.
std::optional<std::string_view> main_data(std::string_view rec) {
  size_t pos = kRecordHeader;
  uint64_t data_total = 0;
  uint32_t main_len = 0;
  auto need = [&](size_t n) { return pos + n <= rec.size(); };
  while (pos < rec.size() && rec.size() - pos > data_total) {
    const uint8_t id = uint8_t(rec[pos++]);
    if (id == 255) {  // XLR_BLOCK_ID_DATA_SHORT
      if (!need(1)) return std::nullopt;
      main_len = uint8_t(rec[pos++]);
      data_total += main_len;
      break;
    }
    if (id == 254) {  // XLR_BLOCK_ID_DATA_LONG
      if (!need(4)) return std::nullopt;
      main_len = load<uint32_t>(rec.data() + pos);
      pos += 4;
      data_total += main_len;
      break;
    }
    if (id == 253) {  // XLR_BLOCK_ID_ORIGIN
      pos += 2;
      continue;
    }
    if (id == 252) {  // XLR_BLOCK_ID_TOPLEVEL_XID
      pos += 4;
      continue;
    }
    if (id > 32 || !need(3)) return std::nullopt;  // XLR_MAX_BLOCK_ID
    const uint8_t fork_flags = uint8_t(rec[pos]);
    data_total += load<uint16_t>(rec.data() + pos + 1);
    pos += 3;
    if (fork_flags & 0x10) {  // BKPBLOCK_HAS_IMAGE
      if (!need(5)) return std::nullopt;
      data_total += load<uint16_t>(rec.data() + pos);
      const uint8_t bimg_info = uint8_t(rec[pos + 4]);
      pos += 5;
      if ((bimg_info & 0x01) && (bimg_info & (0x04 | 0x08 | 0x10))) pos += 2;  // a hole in a compressed image
    }
    if (!(fork_flags & 0x80)) pos += 12;  // a relation of its own (BKPBLOCK_SAME_REL not set)
    pos += 4;                             // the block number
  }
  if (pos > rec.size() || data_total > rec.size() - pos || main_len > rec.size()) return std::nullopt;
  return rec.substr(rec.size() - main_len);
}

}  // namespace

ScanResult scan_wal(uint64_t start, const std::function<std::string_view(uint64_t)>& segment,
                    const std::function<bool(const XactEnd&)>& on_xact) {
  ScanResult r;
  Pages pages(segment);
  uint64_t lsn = start, prev = 0;
  if (lsn % kWalPageSize == 0) lsn += header_size(lsn);
  r.end_lsn = lsn;
  std::string head, body;
  while (true) {
    uint64_t after_head = 0;
    switch (read_data(pages, lsn, kRecordHeader, &head, &after_head, &r.missing_segno)) {
      case Read::missing:
        r.end = ScanEnd::missing_segment;
        return r;
      case Read::end:
        r.end = ScanEnd::end_of_wal;
        return r;
      case Read::ok:
        break;
    }
    const uint32_t tot_len = load<uint32_t>(head.data());
    const uint32_t xid = load<uint32_t>(head.data() + 4);
    const uint64_t xl_prev = load<uint64_t>(head.data() + 8);
    const uint8_t info = uint8_t(head[16]), rmid = uint8_t(head[17]);
    if (tot_len == 0) {  // a zeroed tail: nothing more was written
      r.end = ScanEnd::end_of_wal;
      return r;
    }
    if (tot_len < kRecordHeader || tot_len > kMaxRecord || (prev != 0 && xl_prev != prev)) {
      r.end = ScanEnd::bad_record;
      r.problem = "the record at " + plan::format_lsn(lsn) +
                  (prev != 0 && xl_prev != prev ? " does not follow the one before it (xl_prev " + plan::format_lsn(xl_prev) + ", not " +
                                                      plan::format_lsn(prev) + ")"
                                                : " declares a length of " + std::to_string(tot_len) + " bytes");
      return r;
    }
    const bool want_body = rmid == kRmXact;
    uint64_t end = 0;
    Read rd = want_body ? read_data(pages, lsn, tot_len, &body, &end, &r.missing_segno)
                        : read_data(pages, after_head, tot_len - kRecordHeader, nullptr, &end, &r.missing_segno);
    if (rd == Read::missing) {
      r.end = ScanEnd::missing_segment;
      return r;
    }
    if (rd == Read::end) {
      r.end = ScanEnd::end_of_wal;
      return r;
    }
    ++r.records;
    r.end_lsn = end;
    r.last_record_lsn = lsn;
    if (want_body) {
      XactEnd x;
      if (auto m = main_data(body); m && xact_end(info, xid, *m, &x)) {
        x.lsn = lsn;
        x.end_lsn = end;
        if (!on_xact(x)) {
          r.end = ScanEnd::stopped;
          return r;
        }
      }
    }
    prev = lsn;
    if (rmid == kRmXlog && (info & ~kInfoMask) == kXlogSwitch) {
      // The rest of the segment is unused: the next record starts the next one.
      lsn = (end + kWalSegmentSize - 1) / kWalSegmentSize * kWalSegmentSize;
      if (end % kWalSegmentSize == 0) lsn = end;
      r.end_lsn = lsn;
    } else {
      lsn = maxalign(end);
    }
    if (lsn % kWalPageSize == 0) lsn += header_size(lsn);
  }
}

}  // namespace cairn::agent::postgresql
