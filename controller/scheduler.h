#pragma once
// Backup policies at work: runs each policy when its schedule says, follows
// the sets its runs make, applies the policy's retention after each complete
// run, and has the controller's maintenance worker remove what retention let
// go and prune (docs/operations.md).
//
// - A run due while the controller was not running is run once when it
//   starts (trigger "missed", the reason saying how many were missed), never
//   once per missed time.
// - Two runs of one policy never overlap: a run due while the previous one's
//   set is still running is recorded as "skipped", with the reason.
// - Policies declared in the configuration replace the catalog's policy of
//   the same name at start (logged), and cannot be edited or removed through
//   the operator API; pausing them is allowed (an operator's switch).
//
// Everything runs on the controller's loop thread (the catalog's); only the
// repository work runs on the maintenance worker.
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "controller/catalog/catalog.h"
#include "controller/config.h"
#include "controller/maintenance.h"
#include "controller/orders.h"
#include "controller/retention.h"
#include "controller/set_copy.h"
#include "controller/set_record.h"

namespace cairn::controller {

class Scheduler {
 public:
  Scheduler(catalog::Catalog& catalog, Orders& orders, Maintenance& maintenance, const ControllerConfig& config)
      : catalog_(catalog), orders_(orders), maintenance_(maintenance), config_(config) {}

  // Brings the configuration's policies into the catalog and sets every
  // policy's next run (one already past stays: it runs at the first tick).
  void start(int64_t now);
  // Runs what is due, follows running sets, applies retention, hands
  // repository work to the maintenance worker and records its results.
  // Returns the agents with new plans, for the fleet to deliver.
  std::vector<std::string> tick(int64_t now);

  // cairnctl policy run-now: a run now, outside the schedule (which goes on
  // unchanged). Skipped, like a scheduled run, while the previous one runs.
  catalog::PolicyRun run_now(const std::string& actor, const std::string& name, int64_t now, std::vector<std::string>& agents);
  // The policy's retention over its sets; unless dry_run, the sets not kept
  // are expired (their snapshots are removed by the next maintenance turn).
  // Throws cairn::Error(not_found) for an unknown policy.
  std::vector<SetDecision> retention(const std::string& actor, const std::string& name, bool dry_run);

  // Signed set records (controller/set_record.h): each tick, the records due
  // are signed with `key` (the controller's active key, rotated in place) and
  // handed to `writer`. Without this call no record is written (tests).
  void set_record_writer(SetRecordWriter* writer, const plan::SigningKey* key) {
    records_ = writer;
    key_ = key;
  }

  // Offsite copies (controller/set_copy.h): each tick the copies due are
  // handed to `copier`, one set at a time. Without this call no set is copied.
  void set_copier(SetCopier* copier) { copier_ = copier; }

  // The first run time after `after` of a policy (nullopt: never, or paused).
  static std::optional<int64_t> next_run(const catalog::Policy& p, int64_t after);
  // The policy's next drill after `after`; nullopt without a drill schedule or while paused.
  static std::optional<int64_t> next_drill(const catalog::Policy& p, int64_t after);

 private:
  catalog::PolicyRun run(const std::string& actor, const catalog::Policy& p, const std::string& trigger, int64_t scheduled_for,
                         const std::string& note, std::vector<std::string>& agents);
  void take_maintenance_results(int64_t now);
  // A policy's due drill: its newest set drilled on its drill agent (docs/drills.md).
  void run_drill(const catalog::Policy& p, std::vector<std::string>& agents);
  void submit_forgets(int64_t now);
  void write_set_records(int64_t now);
  // Policies whose retention should run again (a copy landed) join retention_due.
  void copy_sets(int64_t now, std::set<std::string>& retention_due);

  SetCopier* copier_ = nullptr;
  std::string copying_;            // the set whose copy is in flight
  int64_t copies_checked_at_ = 0;  // the last look for copies due (unix seconds)
  int64_t copy_progress_at_ = 0;   // the running copy's progress last written to the catalog

  SetRecordWriter* records_ = nullptr;
  const plan::SigningKey* key_ = nullptr;
  int64_t records_retry_at_ = 0;                  // after a failed write (unix seconds)
  std::map<std::string, int64_t> record_warned_;  // repository -> when a failed write was last logged

  catalog::Catalog& catalog_;
  Orders& orders_;
  Maintenance& maintenance_;
  const ControllerConfig& config_;
  std::map<std::string, std::string> watched_;  // running set -> its policy
  std::map<std::string, int64_t> retry_after_;  // repository -> unix seconds
  // A repository whose expired sets wait: its prune was deferred, failed or
  // held back since it was last cleared.
  struct Waiting {
    int64_t since = 0;      // the first such time (unix seconds)
    int64_t warned = 0;     // when the long wait was last logged
    int locked_streak = 0;  // prunes in a row locked out by a lock no open task holds
  };
  std::map<std::string, Waiting> waiting_;
  Waiting& waiting(const std::string& repo, int64_t now);  // since = now for a new entry
  std::set<std::string> warned_;                           // repositories we said we cannot clear
  std::set<std::string> held_back_;                        // repositories to clear once the tasks using them end
  int64_t last_tick_ = 0, last_forget_pass_ = 0;
  bool forget_pass_due_ = true;
  int64_t started_at_ = 0;  // a run due before this fell due while the controller was not running
};

}  // namespace cairn::controller
