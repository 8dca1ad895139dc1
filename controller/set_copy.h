#pragma once
// Offsite copies by policy (docs/operations.md § Offsite copies): after each
// complete or partial set of a policy with `copy_to`, the controller copies
// the set's snapshots into that repository itself, on a thread of its own,
// re-encrypting every blob under the destination's keys
// (common/repo/copy.h). Both repositories are ones the controller declares
// ([[repository]]): it needs their passphrases to read and write them, which
// the agents never need to share.
//
// A copy holds a shared lock on each source (read, like a restore) and on the
// destination (written, like a backup), so retention's exclusive prune of
// either waits for it. A snapshot the destination holds already for the same
// set and task (tags `set:`, `task:`; an earlier attempt that stopped midway)
// is not copied again: a copy is safe to repeat.
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "controller/config.h"
#include "controller/job_worker.h"

namespace cairn::controller {

class SetCopier {
 public:
  struct Task {
    std::string task_id, repository, snapshot_id;  // repository: the declared name the agent wrote to
  };
  struct Job {
    std::string set_id;
    std::string destination;  // a declared repository
    std::vector<Task> tasks;
  };
  struct Result {
    Job job;
    bool ok = false;
    std::string error;                             // what failed, where, what to do
    std::map<std::string, std::string> snapshots;  // task id -> snapshot id in the destination
    uint64_t bytes = 0, blobs_new = 0;
  };
  // config: the controller's, alive as long as the copier.
  explicit SetCopier(const ControllerConfig& config) : config_(config), worker_([this](const Job& j) { return run_job(j); }) {}

  // The copy running now, as far as it got (the scheduler writes it to the
  // catalog: backup show and the status page say "copying").
  struct Progress {
    std::string set_id, destination;
    int64_t started_at = 0;
    uint64_t snapshots_done = 0, snapshots_total = 0;
    uint64_t bytes_done = 0, bytes_total = 0;  // the snapshots' file bytes (their summaries' bytes_total)
  };
  std::optional<Progress> progress() const {
    std::lock_guard<std::mutex> l(progress_mu_);
    return progress_;
  }

  void submit(Job job) { worker_.submit(std::move(job)); }
  size_t in_flight() const { return worker_.in_flight(); }
  std::vector<Result> take_results() { return worker_.take_results(); }

 private:
  Result run_job(const Job& job);  // never throws: a failure is the result's error
  // Throws on a failure; res.snapshots then holds what was copied before it.
  void run(const Job& job, Result& res);

  void set_progress(std::optional<Progress> p) {
    std::lock_guard<std::mutex> l(progress_mu_);
    progress_ = std::move(p);
  }

  const ControllerConfig& config_;
  mutable std::mutex progress_mu_;
  std::optional<Progress> progress_;
  JobWorker<Job, Result> worker_;  // last: its thread uses the members above
};

}  // namespace cairn::controller
