#pragma once
// The repository's progress (common/repo/progress.h) as a task's progress:
// one translation for the runner and every driver that reads or writes the
// repository itself (a restore extracting a snapshot).
#include <functional>

#include "agent/driver.h"
#include "agent/platform/service.h"
#include "common/repo/progress.h"
#include "common/util/error.h"

namespace cairn::agent {

// Empty when ctx has no progress callback. The repository's "scan" phase is
// reported as preflight and "finalize" as verify, except inside a safety
// backup, which is reported as one phase.
std::function<void(const repo::Progress&)> repo_progress(TaskContext& ctx, cairn::v1::Phase outer);

// A driver's own progress (a phase, what it works on, bytes when known), its
// notes to the operator, and whether the task was cancelled: the same for
// every driver.
void report_phase(TaskContext& ctx, cairn::v1::Phase phase, const std::string& current = {}, uint64_t done = 0, uint64_t total = 0);
void note(TaskContext& ctx, const std::string& text);
bool cancelled(const TaskContext& ctx);

// A restore stages a whole copy beside the live data before it stops
// anything: "" when `dir`'s filesystem takes `need` more bytes and still
// keeps a reserve for the live service that writes there (5 % of the
// filesystem, at most 1 GiB), else the refusal naming both figures. A full
// disk under a running database is an outage the restore would have made.
std::string staging_space_problem(const std::string& dir, uint64_t need);
// staging_space_problem, with the copies earlier restores kept beside each
// of `live` named (kept_copies_hint) when it refuses.
std::string staging_space_problem(const std::string& dir, uint64_t need, const std::vector<std::string>& live);
// The copies earlier restores kept beside `path` (<path>.cairn-old-*,
// <path>.cairn-failed-*), for a refusal to name: "" when there are none.
std::string kept_copies_hint(const std::string& path);
// The reason code of a failure reading a snapshot out of the repository:
// cancelled, the disk written to full, or the repository's own.
cairn::v1::ErrorCode repository_read_code(const Error& e);
// A failure after an in-place restore's swap (the server does not start on
// the restored data, it stops during recovery, a cancel): the service is
// stopped, every move the restore's record holds is put back (the record is
// kept when one cannot be: the agent's next start tries again) and the
// service started on the previous data. Returns what happened, to append to
// the failure's detail.
std::string put_back_and_restart(JournalGuard& journal, const platform::Service& service, const std::string& server,
                                 const std::string& data_dir, const std::atomic<bool>* cancel);
// What a snapshot's files hold (its summary's bytes_total; 0 when it has none).
uint64_t snapshot_bytes(const repo::Snapshot& s);
// The space check of a cluster restore's preflight step, before anything is
// stopped: staging_space_problem for the snapshot `snapshot_id` read out of
// ctx's repository into `dir` (or the nearest directory above it that exists
// yet), `copies` times (etcd: the snapshot file and the data dir made from
// it), with the copies earlier restores kept beside each of `live` named.
// "" when there is room (or when the snapshot cannot be read here: the data
// step says why).
std::string restore_space_problem(TaskContext& ctx, const std::string& snapshot_id, const std::string& dir,
                                  const std::vector<std::string>& live, uint64_t copies = 1);

}  // namespace cairn::agent
