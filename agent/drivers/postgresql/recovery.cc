// Planning a recovery from the archive: which timeline, which segments, and
// the proof (from the WAL's own commit records) that the target is reached
// before anything is stopped (docs/postgresql.md § Point-in-time recovery).
#include "agent/drivers/postgresql/recovery.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <set>

#include "agent/drivers/postgresql/wal_scan.h"
#include "common/repo/restorer.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::postgresql {

namespace fs = std::filesystem;
namespace v1 = cairn::v1;
using nlohmann::json;

namespace {

// Reads the one file of a WAL snapshot to `dest`: empty, or why it could not be.
std::string restore_wal_file(repo::Repository& r, const repo::Snapshot& ws, const std::string& dest, uint64_t budget,
                             const std::atomic<bool>* cancel) {
  const std::string tmp = dest + ".r";
  std::string problem;
  try {
    repo::RestoreOptions ro;
    ro.target = tmp;
    ro.memory_budget = budget;
    ro.cancel = cancel;
    auto rr = repo::restore(r, ws.id, ro);
    if (!rr.failures.empty())
      problem = rr.failures.front().reason;
    else if (ws.paths.size() != 1)
      problem = "the snapshot holds " + std::to_string(ws.paths.size()) + " paths";
    else
      fs::rename(tmp + ws.paths[0], dest);
  } catch (const Error& e) {
    remove_tree(tmp);
    if (e.code() == Errc::interrupted) throw;
    problem = e.what();
  } catch (const std::exception& e) {
    problem = e.what();
  }
  remove_tree(tmp);
  return problem;
}

std::string short_id(const std::string& id) { return id.substr(0, 8); }

}  // namespace

WalCatalog load_wal_catalog(repo::Repository& r, const std::string& system_id) {
  return wal_catalog_of(repo::load_snapshots(r), system_id);
}

WalCatalog wal_catalog_of(const std::vector<repo::Snapshot>& snapshots, const std::string& system_id) {
  WalCatalog c;
  for (const auto& s : snapshots) {
    if (s.partial) continue;
    auto tv = repo::tag_values(s);
    bool wal = std::find(s.tags.begin(), s.tags.end(), "wal") != s.tags.end();
    if (!wal || tv["pg-system"] != system_id || tv["wal"].empty()) continue;
    auto& slot = c.by_name[tv["wal"]];
    if (slot.id.empty() || slot.time_unix < s.time_unix) slot = s;
  }
  return c;
}

void read_histories(repo::Repository& r, WalCatalog& cat, const std::string& scratch, const std::atomic<bool>* cancel) {
  mkdir_p(scratch, 0700);
  for (const auto& [name, snap] : cat.by_name) {
    auto wn = parse_wal_name(name);
    if (!wn || wn->kind != WalFileKind::history) continue;
    const std::string dest = scratch + "/" + name;
    if (std::string problem = restore_wal_file(r, snap, dest, 64ull << 20, cancel); !problem.empty())
      throw Error(Errc::corrupt, "timeline history file '" + name + "' (snapshot '" + short_id(snap.id) +
                                     "') cannot be read from the repository: " + problem);
    Bytes b = read_file(dest, 1u << 20);
    try {
      cat.histories[wn->timeline] = parse_history(std::string(b.begin(), b.end()));
    } catch (const Error& e) {
      throw Error(Errc::corrupt, "timeline history file '" + name + "' (snapshot '" + short_id(snap.id) + "'): " + e.what());
    }
  }
}

json timeline_history(const std::string& data_dir, uint32_t tli) {
  json out = json::array();
  if (tli <= 1) return out;
  char name[32];
  std::snprintf(name, sizeof name, "%08X.history", tli);
  // The server's user owns pg_wal: the file is opened once, not following a
  // link, and checked as opened (a regular file, at most 1 MiB).
  Fd f(::open((data_dir + "/pg_wal/" + name).c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
  struct stat st {};
  if (!f || ::fstat(f.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 20)) return out;
  std::string text(size_t(st.st_size), '\0');
  pread_all(f.get(), reinterpret_cast<uint8_t*>(text.data()), text.size(), 0, name);
  try {
    for (const auto& e : parse_history(text)) out.push_back({{"timeline", e.timeline}, {"switch_lsn", plan::format_lsn(e.switch_lsn)}});
  } catch (const Error&) {
    return json::array();  // unreadable: the controller knows less, the restore reads the archive's copy
  }
  return out;
}

std::vector<WalGapRun> find_gaps(const WalCatalog& cat, uint64_t from_segno) {
  std::map<uint32_t, std::set<uint64_t>> by_tli;
  for (const auto& [name, snap] : cat.by_name)
    if (auto wn = parse_wal_name(name); wn && wn->kind == WalFileKind::segment) by_tli[wn->timeline].insert(wn->segno);
  std::vector<WalGapRun> out;
  for (const auto& [tli, segs] : by_tli) {
    uint64_t from = from_segno;
    // A later timeline begins in the segment its parent ended in.
    if (auto h = cat.histories.find(tli); h != cat.histories.end() && !h->second.empty())
      from = std::max(from, segno_of(h->second.back().switch_lsn));
    else if (tli > 1)
      from = std::max(from, *segs.begin());
    uint64_t expect = from;
    for (uint64_t s : segs) {
      if (s < from) continue;
      if (s > expect) out.push_back({tli, expect, s - expect, s});
      expect = s + 1;
    }
  }
  return out;
}

std::vector<WalGapRun> check_archive(repo::Repository& r, const std::vector<repo::Snapshot>& snapshots, const std::string& system_id,
                                     const std::string& scratch, const std::atomic<bool>* cancel) {
  std::optional<uint64_t> oldest;
  for (const auto& s : snapshots) {
    const json& m = s.component;
    if (s.partial || !m.is_object() || m.value("mode", "") != "physical" || m.value("system_identifier", "") != system_id) continue;
    auto wn = parse_wal_name(m.value("start_wal", ""));
    if (wn && wn->kind == WalFileKind::segment && (!oldest || wn->segno < *oldest)) oldest = wn->segno;
  }
  if (!oldest) return {};
  WalCatalog cat = wal_catalog_of(snapshots, system_id);
  read_histories(r, cat, scratch, cancel);
  return find_gaps(cat, *oldest);
}

std::vector<TimelineStep> timeline_path(const WalCatalog& cat, uint32_t base_tli, uint64_t stop, uint32_t target) {
  std::vector<TimelineStep> path;
  if (target == base_tli) return {{base_tli, 0}};
  auto h = cat.histories.find(target);
  if (h == cat.histories.end()) return {};
  // The history lists the ancestors, oldest first, each with where it ended;
  // the base backup's timeline must be one, left at or after `stop`.
  const auto& entries = h->second;
  size_t at = entries.size();
  for (size_t i = 0; i < entries.size(); ++i)
    if (entries[i].timeline == base_tli) at = i;
  if (at == entries.size() || entries[at].switch_lsn < stop) return {};
  path.push_back({base_tli, 0});
  for (size_t i = at + 1; i < entries.size(); ++i) path.push_back({entries[i].timeline, entries[i - 1].switch_lsn});
  path.push_back({target, entries.back().switch_lsn});
  // Each step must begin where the one before it does or later.
  for (size_t i = 1; i < path.size(); ++i)
    if (path[i].begin < path[i - 1].begin || path[i].timeline <= path[i - 1].timeline) return {};
  return path;
}

std::pair<v1::ErrorCode, std::string> plan_wal(const repo::Snapshot& base, const WalCatalog& cat, const plan::ParsedTarget& target,
                                               WalPlan* out) {
  const json& meta = base.component;
  const uint32_t tli = meta.value("timeline", 0u);
  uint64_t start = 0, stop = 0;
  plan::parse_lsn(meta.value("start_lsn", ""), &start);
  plan::parse_lsn(meta.value("stop_lsn", ""), &stop);
  const int64_t end_us = meta.value("backup_end_time_us", int64_t(0));
  auto refuse = [](v1::ErrorCode code, std::string why) { return std::pair{code, std::move(why)}; };
  const std::string bb = "base backup '" + short_id(base.id) + "'";

  // 1. The timeline: the base backup's own for --to-immediate or "current";
  // the one named; or the newest the archive knows that branched from the
  // base backup's timeline after it became consistent.
  std::set<uint32_t> known = {tli};
  for (const auto& [name, snap] : cat.by_name)
    if (auto wn = parse_wal_name(name); wn && (wn->kind == WalFileKind::segment || wn->kind == WalFileKind::history))
      known.insert(wn->timeline);
  uint32_t want = tli;
  std::string said;
  if (target.kind == v1::RecoveryTarget::KIND_IMMEDIATE || target.timeline_current) {
    said = "timeline " + std::to_string(tli) + " (the base backup's)";
  } else if (target.timeline != 0) {
    want = target.timeline;
    if (timeline_path(cat, tli, stop, want).empty())
      return refuse(
          v1::ERROR_CODE_PREFLIGHT_FAILED,
          "timeline " + std::to_string(want) + " does not follow " + bb + " (timeline " + std::to_string(tli) + ", consistent from LSN " +
              plan::format_lsn(stop) + "): " +
              (want != tli && !cat.histories.count(want) ? "the repository holds no history file of timeline " + std::to_string(want)
                                                         : "its history did not pass through that point") +
              "; restore a base backup taken on timeline " + std::to_string(want) +
              " or before it branched, or choose --target-timeline current; nothing was changed");
    said = "timeline " + std::to_string(want) + " (as asked)";
  } else {
    for (uint32_t t : known)
      if (t > want && !timeline_path(cat, tli, stop, t).empty()) want = t;
    said = "timeline " + std::to_string(want) +
           (want == tli ? " (the base backup's; no later timeline branched from it after it became consistent)"
                        : " (the newest the archive holds that branched from the base backup's timeline " + std::to_string(tli) +
                              " after it became consistent)");
    // A newer timeline that left this one before the base backup: recovery
    // from it cannot reach that timeline, which the operator may have meant.
    if (uint32_t newest = *known.rbegin(); newest > want)
      said += "; timeline " + std::to_string(newest) +
              " is newer, but its history does not pass through this base backup: one on its history "
              "reaches it (leave the set out and the controller picks one)";
  }
  const std::vector<TimelineStep> path = timeline_path(cat, tli, stop, want);

  // 2. The segments along that path: each segment number is read from the
  // newest timeline on the path that had begun by then (as the server reads
  // them); the newest one archived ends the run, and a missing one before
  // it is a gap.
  auto tli_for = [&](uint64_t segno) {
    uint32_t t = path.front().timeline;
    for (const auto& step : path)
      if (segno_of(step.begin) <= segno) t = step.timeline;
    return t;
  };
  uint64_t last = 0;
  bool any = false;
  for (const auto& [name, snap] : cat.by_name) {
    auto wn = parse_wal_name(name);
    if (!wn || wn->kind != WalFileKind::segment || wn->segno < segno_of(start)) continue;
    if (tli_for(wn->segno) != wn->timeline) continue;  // not on the path (another branch's)
    if (!any || wn->segno > last) last = wn->segno;
    any = true;
  }
  uint64_t seg = segno_of(start);
  int64_t archived_until_s = 0;
  std::string gap;
  for (; any && seg <= last; ++seg) {
    auto it = cat.by_name.find(segment_name(tli_for(seg), seg));
    if (it == cat.by_name.end()) {
      gap = segment_name(tli_for(seg), seg);
      break;
    }
    archived_until_s = std::max(archived_until_s, it->second.time_unix);
  }
  const uint64_t end_seg = any ? seg : segno_of(start);  // the first segment the run lacks
  const uint64_t covered_lsn = end_seg * kWalSegmentSize;
  const uint64_t stop_seg = segno_of(stop == 0 ? 0 : stop - 1);
  const std::string newest = any ? segment_name(tli_for(last), last) : std::string();
  std::string covers = "the repository holds " + bb + " (consistent from LSN " + plan::format_lsn(stop) + ", " +
                       plan::format_time_us(end_us) + ") and its WAL on " + said + " up to LSN " + plan::format_lsn(covered_lsn) +
                       (archived_until_s ? " (archived by " + plan::format_time_us(archived_until_s * 1000000) + ")" : "");
  const std::string gap_said = gap.empty()
                                   ? std::string()
                                   : "WAL segment '" + gap + "' is not in the repository, though later segments are (up to '" + newest +
                                         "'): recovery from " + bb + " can reach LSN " + plan::format_lsn(covered_lsn) +
                                         " at most; put the segment back if a copy exists (the server's pg_wal, another archive), or ";
  if (end_seg <= stop_seg)
    return refuse(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "the WAL that makes " + bb + " consistent (segment '" +
                                                         segment_name(tli_for(end_seg), end_seg) +
                                                         "') is not in the repository; nothing was changed");
  uint64_t last_needed = end_seg - 1;
  switch (target.kind) {
    case v1::RecoveryTarget::KIND_TIME:
      if (target.time_us < end_us)
        return refuse(v1::ERROR_CODE_PREFLIGHT_FAILED, target.describe() + " is before this base backup became consistent: " + covers +
                                                           "; restore an older set for that time; nothing was changed");
      // No commit in WAL archived before the target time can be after it
      // (snapshot times are whole seconds: the second after the last one).
      if (target.time_us >= (archived_until_s + 1) * 1000000) {
        if (!gap.empty())
          return refuse(v1::ERROR_CODE_PREFLIGHT_FAILED, target.describe() + " is past a gap in the archive: " + gap_said +
                                                             "restore to a point before the gap (--to-lsn " +
                                                             plan::format_lsn(covered_lsn) + " or an earlier time); nothing was changed");
        return refuse(v1::ERROR_CODE_PREFLIGHT_FAILED,
                      target.describe() + " is after the newest archived WAL: " + covers +
                          "; WAL written after that is not archived yet (SELECT pg_switch_wal() archives the "
                          "current segment); nothing was changed");
      }
      break;
    case v1::RecoveryTarget::KIND_LSN:
      if (target.lsn < stop)
        return refuse(v1::ERROR_CODE_PREFLIGHT_FAILED,
                      target.describe() + " is before this base backup became consistent: " + covers + "; nothing was changed");
      if (target.lsn >= covered_lsn) {
        if (!gap.empty())
          return refuse(v1::ERROR_CODE_PREFLIGHT_FAILED, target.describe() + " is past a gap in the archive: " + gap_said +
                                                             "restore to an LSN before it; nothing was changed");
        return refuse(v1::ERROR_CODE_PREFLIGHT_FAILED,
                      target.describe() + " is beyond the archived WAL: " + covers + "; nothing was changed");
      }
      // The segment after the target's too, when archived: the record at the
      // target may end in it.
      last_needed = std::min(segno_of(target.lsn) + 1, end_seg - 1);
      break;
    case v1::RecoveryTarget::KIND_IMMEDIATE:
      last_needed = stop_seg;
      break;
    case v1::RecoveryTarget::KIND_LATEST:
      if (!gap.empty())
        return refuse(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND,
                      "the latest archived WAL cannot be reached: " + gap_said +
                          "restore to a point before the gap (--to-lsn, --to-time); nothing was changed");
      break;
    default:
      break;
  }
  out->needed.clear();
  for (uint64_t s = segno_of(start); s <= last_needed; ++s) out->needed.push_back(segment_name(tli_for(s), s));
  // Every timeline's history file: the server promotes onto the first
  // timeline no history file names, so the new one never collides with a
  // timeline an earlier restore made (its WAL is in the archive too).
  for (const auto& [name, snap] : cat.by_name)
    if (auto wn = parse_wal_name(name); wn && wn->kind == WalFileKind::history) out->needed.push_back(name);
  out->start = start;
  out->stop = stop;
  out->timeline = want;
  out->timeline_said = said;
  out->covered_lsn = covered_lsn;
  out->gap = gap;
  out->newest = newest;
  out->covers = covers;
  out->proof.clear();
  return {v1::ERROR_CODE_OK, {}};
}

namespace {

// Reads the fetched segments (by number, along the plan) for scan_wal: one
// at a time in memory.
class FetchedSegments {
 public:
  FetchedSegments(const WalPlan& wal, std::string dir) : dir_(std::move(dir)) {
    for (const auto& n : wal.needed)
      if (auto wn = parse_wal_name(n); wn && wn->kind == WalFileKind::segment) names_[wn->segno] = n;
  }
  void forget_from(uint64_t segno) { names_.erase(names_.lower_bound(segno), names_.end()); }
  std::string_view operator()(uint64_t segno) {
    if (loaded_ && segno == segno_) return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
    auto it = names_.find(segno);
    if (it == names_.end()) return {};
    try {
      bytes_ = read_file(dir_ + "/" + it->second, kWalSegmentSize);
    } catch (const Error&) {
      return {};
    }
    loaded_ = true;
    segno_ = segno;
    return {reinterpret_cast<const char*>(bytes_.data()), bytes_.size()};
  }

 private:
  std::string dir_;
  std::map<uint64_t, std::string> names_;
  Bytes bytes_;
  bool loaded_ = false;
  uint64_t segno_ = 0;
};

std::string describe_end(const XactEnd& x) {
  return "transaction " + std::to_string(x.xid) + (x.commit ? " committed" : " aborted") + " at " + plan::format_time_us(x.time_us) +
         " (LSN " + plan::format_lsn(x.lsn) + ")";
}

}  // namespace

std::pair<v1::ErrorCode, std::string> fetch_wal(TaskContext& ctx, const WalCatalog& cat, WalPlan& wal, const repo::Snapshot& base,
                                                const plan::ParsedTarget& target, const std::string& wal_dir, uint64_t memory_budget,
                                                std::atomic<uint64_t>* count) {
  auto t0 = std::chrono::steady_clock::now();
  const std::string bb = "base backup '" + short_id(base.id) + "'";
  // 1. Every file, in replay order; a damaged segment ends the readable run.
  std::string damaged, damage;
  uint64_t damaged_segno = 0;
  for (const auto& name : wal.needed) {
    const repo::Snapshot& ws = cat.by_name.at(name);
    auto wn = parse_wal_name(name);
    const bool segment = wn && wn->kind == WalFileKind::segment;
    if (!damaged.empty() && segment) continue;  // past the damage: not replayable
    std::string problem;
    // A history file read_histories already read (and parsed) into
    // <wal_dir>/.histories is moved into place, not read again.
    std::error_code moved;
    if (!segment) fs::rename(wal_dir + "/.histories/" + name, wal_dir + "/" + name, moved);
    if (!segment && !moved) {
      if (count) ++*count;
      continue;
    }
    try {
      problem = restore_wal_file(*ctx.repo, ws, wal_dir + "/" + name, memory_budget, ctx.cancel);
    } catch (const Error&) {
      return {v1::ERROR_CODE_CANCELLED, "cancelled; nothing was changed"};
    }
    if (problem.empty() && segment)
      if (auto c = check_segment_file(wal_dir + "/" + name, *wn); !c.problem.empty()) problem = c.problem;
    if (!problem.empty()) {
      if (!segment)
        return {v1::ERROR_CODE_REPOSITORY_CORRUPT, "WAL history file '" + name + "' (snapshot '" + short_id(ws.id) +
                                                       "') is damaged in the repository: " + problem + "; nothing was changed"};
      std::error_code ec;
      fs::remove(wal_dir + "/" + name, ec);
      damaged = name;
      damaged_segno = wn->segno;
      damage = "WAL segment '" + name + "' (snapshot '" + short_id(ws.id) + "') is damaged in the repository: " + problem;
      continue;
    }
    if (count) ++*count;
  }

  // 2. The records, from the backup's start: where the target is reached,
  // or how far the intact WAL goes.
  FetchedSegments segs(wal, wal_dir);
  if (!damaged.empty()) segs.forget_from(damaged_segno);
  std::optional<XactEnd> hit, newest;
  auto on_xact = [&](const XactEnd& x) {
    switch (target.kind) {
      case v1::RecoveryTarget::KIND_TIME:
        if (target.exclusive ? x.time_us >= target.time_us : x.time_us > target.time_us) {
          hit = x;
          return false;
        }
        break;
      case v1::RecoveryTarget::KIND_XID:
        if (x.xid == uint32_t(target.xid)) {
          hit = x;
          return false;
        }
        break;
      default:
        break;
    }
    newest = x;
    return true;
  };
  ScanResult scan = scan_wal(wal.start, std::ref(segs), on_xact);
  const uint64_t reach = scan.end_lsn;
  const uint64_t last_start = scan.last_record_lsn;
  // Why the WAL ends where it does, short of the archive's end.
  std::string cut;
  if (!damaged.empty())
    cut = damage;
  else if (scan.end == ScanEnd::bad_record)
    cut = "the WAL is damaged: " + scan.problem;
  else if (!wal.gap.empty() && scan.end == ScanEnd::missing_segment && scan.missing_segno * kWalSegmentSize >= wal.covered_lsn)
    cut = "WAL segment '" + wal.gap + "' is not in the repository, though later segments are (up to '" + wal.newest + "')";
  auto short_of = [&](const std::string& why) {
    std::string out = why + "; recovery from " + bb + " can reach LSN " + plan::format_lsn(reach) + " at most";
    if (reach <= wal.stop) return out + " (not even a consistent state), short of " + target.describe() + "; nothing was changed";
    out += ", short of " + target.describe();
    if (newest) out += " (the last transaction before it: " + describe_end(*newest) + ")";
    return out + "; nothing was changed (restore with --to-lsn " + plan::format_lsn(last_start) + " to accept that point)";
  };
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  auto proven = [&](std::string proof) {
    wal.proof = std::move(proof);
    return std::pair{v1::ERROR_CODE_OK, std::to_string(seconds)};
  };
  switch (target.kind) {
    case v1::RecoveryTarget::KIND_TIME:
    case v1::RecoveryTarget::KIND_XID:
      if (hit) {
        if (hit->lsn < wal.stop)
          return {v1::ERROR_CODE_PREFLIGHT_FAILED, target.describe() + " is reached at " + describe_end(*hit) + ", before " + bb +
                                                       " became consistent (LSN " + plan::format_lsn(wal.stop) +
                                                       "): restore an older set; nothing was changed"};
        return proven(describe_end(*hit));
      }
      if (!cut.empty()) return {v1::ERROR_CODE_REPOSITORY_CORRUPT, short_of(cut)};
      if (target.kind == v1::RecoveryTarget::KIND_XID)
        return {v1::ERROR_CODE_PREFLIGHT_FAILED,
                target.describe() + " does not end (commit or abort) in the WAL archived after " + bb + ": " + wal.covers +
                    (newest ? "; the last transaction in it: " + describe_end(*newest) : std::string()) +
                    "; a transaction still open, or one not archived yet (SELECT pg_switch_wal() archives the current "
                    "segment), cannot be a target; nothing was changed"};
      return {v1::ERROR_CODE_PREFLIGHT_FAILED,
              "no transaction in the WAL archived after " + bb + " ended after " + target.describe() +
                  (newest ? " (the last: " + describe_end(*newest) + ")" : std::string()) +
                  ", so recovery would end before reaching it: " + wal.covers +
                  "; WAL written after that is not archived yet (SELECT pg_switch_wal() archives the current segment), "
                  "or restore --to-latest; nothing was changed"};
    case v1::RecoveryTarget::KIND_LSN:
      if (last_start >= target.lsn && reach > target.lsn) return proven("a whole record at or after " + target.describe());
      return {v1::ERROR_CODE_REPOSITORY_CORRUPT,
              short_of(cut.empty() ? "the archived WAL ends before a whole record at " + target.describe() : cut)};
    case v1::RecoveryTarget::KIND_IMMEDIATE:
      if (reach >= wal.stop) return proven("the base backup's consistent point, LSN " + plan::format_lsn(wal.stop));
      return {v1::ERROR_CODE_REPOSITORY_CORRUPT,
              short_of(cut.empty() ? "the archived WAL ends before the base backup's consistent point" : cut)};
    default: {
      // The latest: every segment up to the newest archived one, read whole.
      const uint64_t end_seg = wal.covered_lsn / kWalSegmentSize;
      const bool to_end = cut.empty() && ((scan.end == ScanEnd::missing_segment && scan.missing_segno >= end_seg) ||
                                          (scan.end == ScanEnd::end_of_wal && segno_of(reach == 0 ? 0 : reach - 1) + 1 >= end_seg));
      if (!to_end) {
        if (cut.empty())
          cut = "the WAL ends at LSN " + plan::format_lsn(reach) + ", inside the archive (" +
                (scan.end == ScanEnd::missing_segment ? "segment " + segment_name(wal.timeline, scan.missing_segno) + " is unreadable"
                                                      : std::string("a record there is not whole")) +
                "), though the archive holds segments up to '" + wal.newest + "'";
        return {v1::ERROR_CODE_REPOSITORY_CORRUPT, short_of(cut)};
      }
      return proven("the end of the archive on " + wal.timeline_said + ", LSN " + plan::format_lsn(reach) +
                    (newest ? " (the last transaction: " + describe_end(*newest) + ")" : std::string()));
    }
  }
}

}  // namespace cairn::agent::postgresql
