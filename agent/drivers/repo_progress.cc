#include "agent/drivers/repo_progress.h"

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

}  // namespace cairn::agent
