#pragma once
// Runs admitted tasks one after another on a worker thread, so the connection
// keeps heartbeating while a backup streams. One task at a time is also the
// agent's operation lock: no backup runs during a restore of the same data.
// Progress and results leave through `emit`, called from the worker thread.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/driver.h"
#include "agent/own_snapshots.h"
#include "agent/set_aside.h"
#include "agent/task_admission.h"
#include "proto/cairn.pb.h"

namespace cairn::repo {
struct StorageCounters;
}

namespace cairn::agent {

// The undo of an in-place restore that writes over the live paths with no
// service to stop (the files driver), for its record (restore_journal.h) at
// the agent's next start: the restore's safety snapshot (tagged safety,
// component:<c> and restore-task:<r.task_id>), found in the first of
// `repositories` that holds it, handed to `restore` with the paths the
// interrupted restore wrote (those of the snapshot it restored: its safety
// snapshot's tag restore-of:<id>). Returns the account, also when not all
// came back (a repeat would put the paths back over what was written
// since); throws cairn::Error when no safety snapshot is found or nothing
// was written (the record is kept; the next start tries again).
using SafetyRestore =
    std::function<DriverResult(TaskContext& ctx, const std::string& safety_snapshot, const std::vector<std::string>& paths)>;
std::string undo_from_safety_snapshot(const InPlaceRestore& r, const std::vector<RepositoryDecl>& repositories, uint64_t memory_budget,
                                      const SafetyRestore& restore);

class TaskRunner {
 public:
  using Emit = std::function<void(cairn::v1::AgentMessage)>;
  // own_snapshots_path: the record of the snapshots this agent wrote (parents
  // are taken only from it); empty: kept in memory (tests).
  explicit TaskRunner(Emit emit, std::string own_snapshots_path = {});
  ~TaskRunner();
  TaskRunner(const TaskRunner&) = delete;
  TaskRunner& operator=(const TaskRunner&) = delete;

  // Tags naming this agent ("agent:NAME", "agent-key:HEX") on every snapshot
  // it writes; set before start().
  void set_identity_tags(std::vector<std::string> tags) { identity_tags_ = std::move(tags); }
  // Maintenance mode for components that declare it (maintenance_mode.h); set before start().
  void set_maintenance(MaintenanceMode* m) { maintenance_ = m; }
  // The memory budget of every backup and restore it runs (bytes; 0: the default); set before start().
  void set_memory_budget(uint64_t bytes) { memory_budget_ = bytes; }
  // The [drill] section drills run under (docs/drills.md); null: drills are refused. Set before start().
  void set_drill(const DrillDecl* d) { drill_ = d; }
  // Where in-place restores keep their record (restore_journal.h); set before start().
  void set_restore_journal(const RestoreJournal* j) { journal_ = j; }
  // What restores set aside, kept by its rule after each restore task and
  // every `every_s` seconds without a task (set_aside.h); set before start().
  void set_set_aside(SetAsideKeeper* k, int64_t every_s) {
    set_aside_ = k;
    set_aside_every_s_ = every_s;
  }
  // What the keeper last found, for the heartbeat.
  void report_set_aside(cairn::v1::Heartbeat& hb) const {
    if (set_aside_) set_aside_->report(hb);
  }
  // Whether `repository` holds snapshot `id` now; nullopt: could not be told.
  std::optional<bool> holds_snapshot(const RepositoryDecl& repository, const std::string& id);

  void start();
  void submit(AdmittedTask t);
  // Cancels the running task, drops the queued ones and joins the worker.
  void stop();
  // Queued and running task ids (Register, Heartbeat).
  std::vector<std::string> task_ids() const;

  // Runs one task on the calling thread and returns its result (also emitted).
  cairn::v1::TaskResult run(const AdmittedTask& t);

  // Stores one file of this host as a snapshot of its own in `repository`
  // (BackupContext::store_file: a WAL segment), tagged with `tags` and this
  // agent's identity; returns the snapshot id once it is durable. Safe to call
  // from any thread while tasks run. Throws cairn::Error.
  std::string store_file(const RepositoryDecl& repository, const std::string& path, const std::string& read_from,
                         std::vector<std::string> tags);
  // Runs `fn` on `repository`, opened for reading (BackgroundContext::read_repository).
  void read_repository(const RepositoryDecl& repository, const std::string& purpose, const std::function<void(repo::Repository&)>& fn);

 private:
  // What the runner decides for every snapshot it stores.
  struct Storing {
    std::vector<std::string> tags;
    std::string parent;  // the plan's parent when this agent wrote it
    std::function<void()> check_lock;
  };
  std::vector<std::string> identity_tags_;
  MaintenanceMode* maintenance_ = nullptr;
  uint64_t memory_budget_ = 0;
  const DrillDecl* drill_ = nullptr;
  DriverResult run_drill_task(const AdmittedTask& t, const std::function<void(const WorkProgress&)>& progress,
                              repo::StorageCounters& storage);
  DriverResult run_backup(Driver& driver, TaskContext& ctx, const Storing& st);
  DriverResult run_restore(Driver& driver, TaskContext& ctx, const cairn::v1::Task& task, const Storing& st);
  bool safety_backup(Driver& driver, TaskContext& ctx, const RestoreSpec& spec, const repo::Snapshot& snap, const Storing& st,
                     DriverResult& res);
  void loop();
  std::string own_parent(const RepositoryDecl& repository, const cairn::v1::Task& task) const;
  void remember_own(const RepositoryDecl& repository, const cairn::v1::Task& task, const DriverResult& dr);

  Emit emit_;
  const RestoreJournal* journal_ = nullptr;
  SetAsideKeeper* set_aside_ = nullptr;
  int64_t set_aside_every_s_ = 3600;
  OwnSnapshots own_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<AdmittedTask> queue_;
  std::string running_;
  bool stop_ = false;
  std::atomic<bool> cancel_{false};
  std::thread worker_;
};

}  // namespace cairn::agent
