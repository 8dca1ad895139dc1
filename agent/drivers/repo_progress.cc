#include "agent/drivers/repo_progress.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "common/repo/memory.h"
#include "common/repo/snapshot.h"

namespace cairn::agent {

namespace v1 = cairn::v1;

std::function<void(const repo::Progress&)> repo_progress(TaskContext& ctx, v1::Phase outer) {
  if (!ctx.progress) return {};
  return [&ctx, outer](const repo::Progress& p) {
    WorkProgress w;
    w.phase = outer;
    if (outer != v1::PHASE_SAFETY_BACKUP && p.phase == "scan") w.phase = v1::PHASE_PREFLIGHT;
    if (outer != v1::PHASE_SAFETY_BACKUP && p.phase == "finalize") w.phase = v1::PHASE_VERIFY;
    w.bytes_done = p.bytes_done;
    w.bytes_total = p.totals_known ? p.bytes_total : 0;
    w.files_done = p.files_done;
    w.files_total = p.totals_known ? p.files_total : 0;
    w.current = p.current;
    ctx.progress(w);
  };
}

void report_phase(TaskContext& ctx, v1::Phase phase, const std::string& current, uint64_t done, uint64_t total) {
  if (!ctx.progress) return;
  WorkProgress w;
  w.phase = phase;
  w.bytes_done = done;
  w.bytes_total = total;
  w.current = current;
  ctx.progress(w);
}

void note(TaskContext& ctx, const std::string& text) {
  if (ctx.note) ctx.note(text);
}

bool cancelled(const TaskContext& ctx) { return ctx.cancel && ctx.cancel->load(); }

v1::ErrorCode repository_read_code(const Error& e) {
  return e.code() == Errc::interrupted ? v1::ERROR_CODE_CANCELLED
         : e.code() == Errc::no_space  ? v1::ERROR_CODE_NO_SPACE
                                       : v1::ERROR_CODE_REPOSITORY_ERROR;
}

std::string kept_copies_hint(const std::string& path) {
  const std::filesystem::path p(path);
  const std::string base = p.filename().string();
  std::vector<std::string> kept;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(p.parent_path(), ec)) {
    std::string n = e.path().filename().string();
    if (n.starts_with(base + ".cairn-old-") || n.starts_with(base + ".cairn-failed-")) kept.push_back(e.path().string());
  }
  if (kept.empty()) return {};
  std::sort(kept.begin(), kept.end());
  std::string list;
  for (size_t i = 0; i < kept.size() && i < 5; ++i) list += (list.empty() ? "'" : ", '") + kept[i] + "'";
  if (kept.size() > 5) list += " and " + std::to_string(kept.size() - 5) + " more";
  return "; earlier restores kept " + std::to_string(kept.size()) + " cop" + (kept.size() == 1 ? "y" : "ies") + " there (" + list +
         "), which can be removed once they are no longer needed";
}

std::string put_back_and_restart(JournalGuard& journal, const platform::Service& service, const std::string& server,
                                 const std::string& data_dir, const std::atomic<bool>* cancel) {
  try {
    service.stop(cancel);
  } catch (const Error&) {
  }
  std::string left = put_back_moves(journal.record());
  if (!left.empty()) journal.keep();  // the agent's next start tries again
  std::string detail = left.empty() ? "; the previous data is back in '" + data_dir + "' (the restored copy is in '" + data_dir +
                                          ".cairn-failed-" + journal.record().stamp + "')"
                                    : "; could not put the previous data back:" + left;
  try {
    service.start(cancel);
    detail += " and " + server + " was started on it";
  } catch (const Error& e) {
    detail += "; starting " + server + " on it failed: " + e.what();
  }
  return detail;
}

uint64_t snapshot_bytes(const repo::Snapshot& s) {
  auto it = s.summary.find("bytes_total");
  if (it == s.summary.end() || !it->is_number_integer()) return 0;
  return it->is_number_unsigned() ? it->get<uint64_t>() : uint64_t(std::max<int64_t>(0, it->get<int64_t>()));
}

std::string staging_space_problem(const std::string& dir, uint64_t need) {
  struct statvfs sv {};
  std::filesystem::path at(dir);  // a staging dir made later: the filesystem it will be made on
  std::error_code ec;
  while (!std::filesystem::exists(at, ec) && at.has_parent_path() && at.parent_path() != at) at = at.parent_path();
  if (::statvfs(at.c_str(), &sv) != 0) return {};  // the restore's own writes say what is wrong
  const uint64_t free_bytes = uint64_t(sv.f_bavail) * sv.f_frsize, size = uint64_t(sv.f_blocks) * sv.f_frsize;
  const uint64_t reserve = std::min<uint64_t>(size / 20, 1ull << 30);
  if (free_bytes >= need && free_bytes - need >= reserve) return {};
  using repo::byte_size_text;
  return "not enough space in '" + dir + "' to stage the restore beside the live data: " + byte_size_text(need, repo::ByteText::tenths) +
         " needed, " + byte_size_text(free_bytes, repo::ByteText::tenths) + " free, and " +
         byte_size_text(reserve, repo::ByteText::tenths) +
         " must stay free for the running service; free space there (or restore elsewhere) and try again; nothing was "
         "changed";
}

std::string restore_space_problem(TaskContext& ctx, const std::string& snapshot_id, const std::string& dir,
                                  const std::vector<std::string>& live, uint64_t copies) {
  if (!ctx.repo) return {};
  uint64_t need = 0;
  try {
    need = snapshot_bytes(repo::load_snapshot(*ctx.repo, repo::resolve_snapshot(*ctx.repo, snapshot_id)));
  } catch (const Error&) {
    return {};
  }
  return staging_space_problem(dir, need * copies, live);
}

std::string staging_space_problem(const std::string& dir, uint64_t need, const std::vector<std::string>& live) {
  std::string p = staging_space_problem(dir, need);
  if (!p.empty())
    for (const auto& l : live) p += kept_copies_hint(l);
  return p;
}

}  // namespace cairn::agent
