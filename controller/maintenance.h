#pragma once
// Repository maintenance the controller runs itself, in one worker thread:
// removing the snapshots of the backup sets retention let go, then prune.
// Jobs run one at a time, so a repository is never pruned twice at once; the
// scheduler submits a repository's job only while no backup into it and no
// restore from it is open in the catalog, and the job takes the repository's
// exclusive lock, so one an agent started anyway makes it wait for a later
// turn (Errc::locked: the scheduler asks again once that task ends), never
// both at once. One ordered while the job runs makes it stop (yield).
//
// The repositories are the controller's own [[repository]] declarations
// (docs/configuration.md); one it does not declare is never touched.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "controller/config.h"

namespace cairn::repo {
class Repository;
}

namespace cairn::controller {

// Opens a filesystem repository the controller reads itself (a declared
// [[repository]], a catalog rebuild's source) with its passphrase file;
// Errc::no_repo naming the path when none is there.
std::unique_ptr<repo::Repository> open_controller_repository(const ControllerConfig::Repository& r);

struct ForgetJob {
  std::string repository;                 // a declared name
  std::vector<std::string> set_ids;       // sets whose snapshots these are
  std::vector<std::string> snapshot_ids;  // repository snapshot names; absent ones count as removed
  std::vector<std::string> copy_set_ids;  // sets whose offsite copies here (copy_to) are among snapshot_ids
};

struct ForgetResult {
  ForgetJob job;
  bool ok = false;
  bool locked = false;  // another process held a conflicting lock, or it gave way (yield): try again later
  bool interrupted = false;
  bool yielded = false;  // stopped, or dropped from the queue, to give way (yield)
  std::string error;
  uint64_t snapshots_removed = 0;
  uint64_t size_before = 0, size_after = 0;  // bytes of pack data, before and after prune
  uint64_t packs_deleted = 0, packs_written = 0;
};

class Maintenance {
 public:
  // before_prune, for tests: called in the worker, under the exclusive lock,
  // after the snapshots are removed and before prune starts.
  explicit Maintenance(std::vector<ControllerConfig::Repository> repositories, std::function<void(const ForgetJob&)> before_prune = {});
  ~Maintenance();
  Maintenance(const Maintenance&) = delete;
  Maintenance& operator=(const Maintenance&) = delete;

  bool declared(const std::string& repository) const;
  // Whether a job for this repository is queued or running.
  bool busy(const std::string& repository) const;
  void submit(ForgetJob job);
  // Backups and restores come before retention: the repository's jobs give way. A queued
  // one is dropped, a running one stops at its next check (at each snapshot
  // removed, each tree prune walks, each blob it repacks; once the new index
  // is written the few deletions left are finished). Either ends as a result
  // with `locked` set and `why` in its error, and nothing is deleted that a
  // later job would not have deleted. False when there was nothing new to stop.
  bool yield(const std::string& repository, const std::string& why);
  // The repositories with a job queued or running.
  std::vector<std::string> busy_repositories() const;
  std::vector<ForgetResult> take_results();
  // Bytes of pack data, as last measured (0 = not yet): at start, after each
  // prune, every 10 minutes, and within kMeasureAfterBackup of a backup
  // into it ending. For /metrics and the status page.
  // nullopt until the first measurement (an empty repository measures 0).
  std::optional<uint64_t> size_of(const std::string& repository) const;
  // A backup into the repository ended: measure it again soon (at most one
  // measurement per kMeasureAfterBackup, however many backups end).
  void measure_soon(const std::string& repository);
  static constexpr std::chrono::seconds kMeasureAfterBackup{15};

 private:
  void loop();
  void measure_all();
  void measure(const ControllerConfig::Repository& r);
  ForgetResult run(const ForgetJob& job);

  std::vector<ControllerConfig::Repository> repositories_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<ForgetJob> queue_;
  std::string running_;  // repository of the job in progress
  std::vector<ForgetResult> results_;
  std::map<std::string, uint64_t> sizes_;
  std::set<std::string> measure_due_;  // measure_soon's, not yet measured
  std::map<std::string, std::chrono::steady_clock::time_point> measured_at_;
  bool stop_ = false;
  std::string yield_why_;            // why the running job was asked to stop ("" = it was not)
  std::atomic<bool> cancel_{false};  // the running job stops: the controller stops, or yield()
  std::function<void(const ForgetJob&)> before_prune_;
  std::thread worker_;
};

}  // namespace cairn::controller
