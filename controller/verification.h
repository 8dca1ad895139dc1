#pragma once
// The controller's periodic verification of its repositories
// (docs/operations.md § Verification): for each declared [[repository]],
// every `[verify] interval` (6 h by default) and once right after start, the
// repository's snapshots are listed (read-only: no lock) and compared with
// the catalog. Every snapshot the catalog holds there (a backup task's, or a
// copy the controller made there) of a set retention has not expired must be
// listed; one that is not was deleted behind the controller's back (or lost
// by the store) and is reported: on the status page, in /metrics
// (cairn_repository_snapshots_missing), by an audit event
// (repository.snapshots_missing) and in `cairnctl status`. The same turn asks
// the store what protects its objects (Backend::protection()).
//
// Nothing is reported missing that retention removes: an expired set's
// snapshots are not looked for, a repository is not listed while its
// maintenance job is queued or runs (Maintenance::busy), and what was looked
// for is read from the catalog both before the listing and after it, a
// snapshot counting as missing only when both say it must be there (a set
// expired, or a backup recorded, meanwhile is not a false alarm).
//
// The listing runs on a worker thread of its own (a remote store's listing
// takes as long as it takes); tick() runs on the controller's loop thread,
// which owns the catalog.
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/repo/storage/backend.h"
#include "controller/catalog/catalog.h"
#include "controller/config.h"
#include "controller/job_worker.h"
#include "controller/maintenance.h"

namespace cairn::repo {
class Repository;
}

namespace cairn::controller {

// What the catalog said must be there both before and after the listing,
// and the listing does not hold.
std::vector<catalog::StoredSnapshot> missing_snapshots(const std::vector<catalog::StoredSnapshot>& before,
                                                       const std::set<std::string>& listed,
                                                       const std::vector<catalog::StoredSnapshot>& after);

// One line naming a missing snapshot: "<id> (set S, task T, agent A, component C, made <UTC time>)".
std::string missing_line(const catalog::StoredSnapshot& s);

// "store protection: versioning (bucket versioning Enabled)": the status page's line.
std::string protection_line(const repo::StoreProtection& p);

// A repository as the last verification found it.
struct RepositoryVerification {
  std::string repository;
  bool remote = false;      // in an object store (not a filesystem path)
  int64_t verified_at = 0;  // when the last verification that listed it began (unix seconds; 0: none yet)
  int64_t tried_at = 0;     // the last attempt
  std::string error;        // that attempt failed: why ("" when it listed the repository)
  size_t expected = 0;      // snapshots the catalog holds there, at the last verification
  size_t listed = 0;        // snapshots the store listed then
  std::vector<catalog::StoredSnapshot> missing;
  bool protection_known = false;  // asked at least once
  repo::StoreProtection protection;
  int64_t protection_at = 0;
};

class Verifier {
 public:
  // config and maintenance outlive this object. The interval is
  // config.verify_interval_seconds, or CAIRN_VERIFY_INTERVAL_SECONDS_FOR_TESTS.
  Verifier(catalog::Catalog& catalog, const Maintenance& maintenance, const ControllerConfig& config);
  ~Verifier();
  Verifier(const Verifier&) = delete;
  Verifier& operator=(const Verifier&) = delete;

  // Records what the worker found (audit events, the log) and starts the
  // verifications due. On the loop thread.
  void tick(int64_t now);
  // Each declared repository, as last found (loop thread).
  std::vector<RepositoryVerification> states() const;
  int64_t interval_seconds() const { return interval_; }

 private:
  struct Job {
    std::string repository;
    std::vector<catalog::StoredSnapshot> expected;  // the catalog's word before the listing
    int64_t started_at = 0;
  };
  struct Result {
    Job job;
    bool ok = false;
    std::string error;
    std::set<std::string> listed;
    bool protection_known = false;
    repo::StoreProtection protection;
  };
  Result run(const Job& job);  // worker thread
  void record(Result res, int64_t now);

  catalog::Catalog& catalog_;
  const Maintenance& maintenance_;
  const ControllerConfig& config_;
  int64_t interval_;
  std::map<std::string, RepositoryVerification> state_;  // loop thread
  std::map<std::string, int64_t> next_at_;               // repository -> when it is due (0: now)
  std::set<std::string> in_flight_;
  std::map<std::string, std::unique_ptr<repo::Repository>> open_;  // worker thread only
  JobWorker<Job, Result> worker_;                                  // last: its thread uses the members above
};

}  // namespace cairn::controller
