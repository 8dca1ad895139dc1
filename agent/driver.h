#pragma once
// The driver contract: what a component's driver does for the task runner.
// Callers (task runner, tests) see only this header; a driver lives in its own
// folder under agent/drivers/<name>/ and joins the explicit list in
// agent/drivers/registry.cc. A driver reads and writes only what its own
// settings declare: the plan picks a component, never a path.
#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agent/restore_journal.h"
#include "common/util/error.h"
#include "common/util/terminal_text.h"
#include "proto/cairn.pb.h"
#include "proto/restore_step.h"

namespace cairn::repo {
class Repository;
struct Snapshot;
}  // namespace cairn::repo

namespace cairn::agent {

// What a driver can do, as data: admission and the runner read this instead
// of asking which driver it is.
struct DriverCaps {
  bool backup = true;
  bool restore = true;
  bool restore_to_alternate = false;         // has declared alternative restore targets
  std::vector<std::string> restore_targets;  // their names, reported to the controller
  bool needs_service_stop = false;           // a consistent copy needs the service stopped
  bool safety_backup = true;                 // can back up the current state before a restore
  // "node": each agent's copy is its own (files, Prometheus, HAProxy).
  // "cluster": one logical dataset replicated on several members (etcd,
  // ZooKeeper): backed up from one member, restored on all from the same
  // snapshot by the controller's step-by-step restore.
  // "member": each member of a cluster holds its own data (Kafka brokers):
  // backed up on every member, each its own snapshot; a restore of several
  // members of one cluster goes through the same steps, each member from its
  // own snapshot. cluster_id names the cluster.
  std::string scope = "node";
  std::string cluster_id, member_id;   // cluster scope: as declared or as the server reports them
  std::vector<std::string> modes;      // accepted TaskOptions.mode values; the first is the default
  bool restore_stops_service = false;  // a restore stops and starts the service
  // restore_preflight runs before the safety backup of a whole restore too
  // (not only a cluster restore's preflight step): a restore it refuses has
  // written nothing, not even a safety copy.
  bool preflight_whole_restore = false;
  // Replays a log to a recovery target (RestoreSpec::recovery_target):
  // a restore with a target is refused for any other driver.
  bool replays_to_target = false;
};

struct WorkProgress {
  cairn::v1::Phase phase = cairn::v1::PHASE_UNSPECIFIED;
  uint64_t bytes_done = 0, bytes_total = 0;  // total 0 = unknown
  uint64_t files_done = 0, files_total = 0;
  std::string current;
};

// What the runner hands a driver for one task.
struct TaskContext {
  std::string plan_id;
  std::string task_id;
  std::string backup_set_id;
  // A restore task: the restore it belongs to (Task.restore_id; older
  // controllers send none, then the cluster token or the task id). Every
  // on-disk record of a restore names it, and only the same restore acts on
  // such a record (docs/protocol.md § Restore records).
  std::string restore_id;
  std::string component;
  std::string mode;  // the task's mode, validated against DriverCaps::modes ("" when the driver declares none)
  // Opened, index loaded, lock held (shared; none on a read-only repository
  // during a restore). A driver reads snapshots through it (restore); it
  // writes only through the SnapshotSink it is given.
  repo::Repository* repo = nullptr;
  std::function<void(const WorkProgress&)> progress;
  const std::atomic<bool>* cancel = nullptr;
  // What a backup's or restore's buffers may hold (repo/memory.h); 0: the
  // repository code resolves the default. Drivers pass it on in RestoreOptions.
  uint64_t memory_budget = 0;
  // Tells the operator something that is no failure (a parent not used).
  std::function<void(const std::string&)> note;
  // Where an in-place restore keeps its record while the service is stopped
  // or its data is being swapped (restore_journal.h); null: none is kept.
  const RestoreJournal* journal = nullptr;
};

// Where a driver puts what it snapshotted. The runner stores it after
// Driver::snapshot returns: it owns the tags, the parent (the one the plan
// names, when this agent wrote it), the lock check and the "success with
// reasons is partial" rule.
class SnapshotSink {
 public:
  virtual ~SnapshotSink() = default;
  // A file or directory tree on this host, stored at snapshot_path (absolute;
  // empty: real_path itself). Mapping lets a path that changes every run (a
  // per-run snapshot or link-staging directory) be stored at a stable place,
  // so the next backup finds the parent's entries. The parents of
  // snapshot_path must exist on this host (their metadata is recorded).
  virtual void add_path(const std::string& real_path, const std::string& snapshot_path = {}) = 0;
  virtual void exclude(const std::string& glob) = 0;
  // The files added are hard links to files that never change once written
  // (Prometheus blocks, rolled log segments): linking changes an inode's
  // ctime, so an unchanged file is recognised by inode, size and mtime only.
  virtual void immutable_links() = 0;
  // Files that change or vanish while they are read are expected and no
  // reason: a log replayed at restore makes the copy consistent (a
  // PostgreSQL base backup).
  virtual void changes_repaired_by_log() {}
  // The files under dir (a path added, or one below it) are a database's
  // fixed-size pages that change one by one: cut into small chunks
  // (repo::BackupOptions::page_dirs), so an incremental backup stores little
  // more than the pages that changed.
  virtual void pages_under(const std::string& dir) { (void)dir; }
  // Other agents store the same data into the same repository at the same
  // time (a Kafka partition's replicas, on every broker): each finds what the
  // others stored while it runs, and reads its directories from walk_start
  // (a fraction in [0, 1), different per member) on, so that they store
  // different parts first (repo::BackupOptions::share_writes).
  virtual void shared_with_replicas(double walk_start) { (void)walk_start; }
  // A stream stored as one file `name` (a plain name): the runner calls
  // producer(fd) on a thread of its own while it stores what is written to
  // fd; the producer returns only when the stream was complete and checked
  // (throws otherwise, and then nothing is stored as a snapshot). A sink
  // holds either one stream or paths, not both.
  virtual void add_stream(const std::string& name, std::function<void(int fd)> producer) = 0;
  // The component's metadata (version, identities, positions), stored in the
  // snapshot and reported in TaskResult.component_metadata. Small: < 64 KiB.
  // A stream's producer may call it again before it returns (what only the
  // stream's end tells, e.g. its hash): the last call is stored.
  virtual void set_metadata(nlohmann::json metadata) = 0;
  // Something not in the snapshot that should be: makes the task partial.
  virtual void add_reason(cairn::v1::Reason reason) = 0;
  // Runs after the snapshot was stored or failed (removes a per-run snapshot
  // directory, which the server never removes itself).
  virtual void on_done(std::function<void()> cleanup) = 0;
  // Runs after the snapshot was stored or failed and after on_done's
  // cleanups, before the task's result is made: an offline backup starts its
  // service again here. What it returns are reasons of the task.
  virtual void after_store(std::function<std::vector<cairn::v1::Reason>()> fn) {
    on_done([fn] { (void)fn(); });
  }
  // Runs after every path was read and its data stored, before the snapshot
  // record is written: what only the end of the read tells goes into the
  // metadata here (PostgreSQL's pg_backup_stop: the backup label and the
  // WAL the backup needs). A throw fails the snapshot; none is written.
  virtual void before_seal(std::function<void()> fn) { seal_.push_back(std::move(fn)); }
  void run_before_seal() {
    auto fns = std::move(seal_);
    seal_.clear();
    for (auto& fn : fns) fn();
  }

 private:
  std::vector<std::function<void()>> seal_;
};

// What a driver's background service may use (the postgresql driver's WAL
// archive socket): it runs from the agent's start to its stop, beside tasks.
struct BackgroundContext {
  // Stores one file of this host as a snapshot of its own, tagged with `tags`
  // and the agent's identity, in the component's repository, durably: under
  // `real_path`, its bytes read from `read_from` (a private copy of what was
  // checked). Returns the snapshot id. Throws cairn::Error.
  std::function<std::string(const std::string& real_path, const std::string& read_from, const std::vector<std::string>& tags)> store_file;
  // Runs `fn` on the component's repository, opened for reading (a lock for
  // reading held meanwhile). Throws cairn::Error.
  std::function<void(const std::function<void(repo::Repository&)>& fn)> read_repository;
  // A directory of the agent's own (0700, under its state directory) for
  // scratch files; emptied as the agent starts. "" in unit tests.
  std::string private_dir;
};

// Why Driver::snapshot is called.
struct SnapshotPurpose {
  bool safety = false;                        // the state a restore is about to overwrite
  std::string target_name;                    // safety of an alternative restore target: its name
  const repo::Snapshot* restoring = nullptr;  // safety: the snapshot being restored
};

// The steps of a restore. A node-scoped component's restore is one task
// (RESTORE_STEP_ALL). A cluster-scoped one is restored by the controller in steps, one
// task per member per step, each started only when every member finished the
// one before (docs/protocol.md § Cluster restore): preflight (read-only
// checks and the safety backup: nothing is stopped), stop, data, start,
// verify, then commit (every member verified: the restore's on-disk record is
// removed, what it set aside is kept) or rollback (any failure after
// preflight: the data this restore set aside goes back). halt stops the
// service again before a rollback, on every member of a component whose
// members would mix the restored and the previous data if some rolled back
// while others still ran (rollback_needs_halt): no member starts on its
// previous data until every member's restored service is stopped.
using RestoreStep = cairn::v1::RestoreStep;  // its names: proto/restore_step.h

struct RestoreSpec {
  std::string snapshot_id;
  std::string target_name;  // empty: in place; otherwise a declared target
  bool skip_safety_backup = false;
  std::string safety_task_id;  // recorded in the safety snapshot's tags
  // Mirror: the target ends as in the snapshot (entries added since are
  // removed; the safety backup holds them). Merge: other entries are left.
  cairn::v1::RestoreWriteMode write_mode = cairn::v1::RESTORE_WRITE_MODE_MIRROR;
  RestoreStep step = cairn::v1::RESTORE_STEP_ALL;
  // Cluster restores: what every member must agree on (e.g. "cluster_token"
  // for etcd), chosen by the controller, the same in every member's task.
  std::map<std::string, std::string> cluster_options;
  // The operator forces a restore onto a target of another identity (a Kafka
  // broker whose meta.properties names another cluster.id).
  bool force_identity = false;
  // Point-in-time recovery (the postgresql driver); KIND_UNSPECIFIED: none asked.
  cairn::v1::RecoveryTarget recovery_target;
};

struct DriverResult {
  cairn::v1::TaskOutcome outcome = cairn::v1::TASK_OUTCOME_FAILED;
  std::vector<cairn::v1::Reason> reasons;  // every reason; empty only when succeeded
  std::string snapshot_id;
  std::string manifest_digest;
  std::string safety_snapshot_id;  // restore: the snapshot of what was there before
  nlohmann::json safety_metadata;  // restore: that snapshot's component metadata
  // restore with a safety backup asked for: SUCCEEDED when taken (or nothing
  // existed to save), FAILED when it failed; UNSPECIFIED when it did not run.
  cairn::v1::TaskOutcome safety_outcome = cairn::v1::TASK_OUTCOME_UNSPECIFIED;
  std::string safety_detail;
  uint64_t bytes = 0, files = 0;
  nlohmann::json metadata;  // backup: the component's metadata; restore/verify: what was checked
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual std::string name() const = 0;
  virtual DriverCaps capabilities() const = 0;
  // True when target_name names a restore target this component declares.
  virtual bool has_restore_target(const std::string& target_name) const = 0;
  // What `cairn-agent --check-config` warns about: declared things that do not
  // exist now (they may appear later, so these are warnings, not errors).
  virtual std::vector<std::string> config_warnings() const { return {}; }
  // The host paths the component's backups read and its restores write (its
  // data, configuration and scratch directories; a glob's fixed part): the
  // agent refuses a drill root that overlaps any (docs/drills.md § Safety).
  virtual std::vector<std::string> data_paths() const { return {}; }
  // The paths an in-place restore replaces whole, beside which it sets the
  // replaced data aside as <path>.cairn-old-<stamp> (<path>.cairn-failed-*
  // after a rollback, <path>.cairn-restore-* while it works): the agent's
  // set-aside keeper (set_aside.h) finds those by name beside these paths.
  virtual std::vector<std::string> set_aside_paths() const { return data_paths(); }
  // The file where a driver restored in steps keeps a member's record of a
  // restore in progress, one a driver (docs/protocol.md § Restore records;
  // its one format: restore_record.h; "state": "rolled_back" marks one that
  // ended). While one exists, nothing that restore set aside is removed.
  virtual std::vector<std::string> restore_record_files() const { return {}; }
  // Read-only checks before a task starts: the service is reachable, the
  // admin API is on, the data directory is the one the server uses, there is
  // room for an in-place snapshot. Empty when the task may run. The mode is
  // already validated against DriverCaps::modes.
  virtual std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task& task) const = 0;
  // Takes the in-place snapshot and hands it to the sink. Neither this nor
  // restore throws for per-item problems (they become reasons); a thrown
  // cairn::Error is a failure of the whole task, mapped by the runner.
  virtual void snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) = 0;
  // Refuses a snapshot this component cannot restore (one holding paths it
  // does not declare, another driver's): called by the runner before the
  // safety backup and before any step, so nothing is read or written for it.
  virtual std::vector<cairn::v1::Reason> check_snapshot(const repo::Snapshot& snap) const {
    (void)snap;
    return {};
  }
  // Restores spec.snapshot_id (already checked by the runner to be a snapshot
  // of this component), or runs one step of a cluster restore. The safety
  // backup has been taken by the runner before (step all or data).
  virtual DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) = 0;
  // The preflight step of a cluster restore: read-only checks that the steps
  // after it can run here (tools present, the data dir's parent writable),
  // after the runner checked the snapshot and took the safety backup.
  // Nothing is stopped or written. Empty when the member is ready.
  virtual std::vector<cairn::v1::Reason> restore_preflight(TaskContext& ctx, const RestoreSpec& spec) {
    (void)ctx;
    (void)spec;
    return {};
  }
  // Which wave of a cluster restore's stop step this member is stopped in:
  // the controller stops every member of wave 0 first, then wave 1, so a
  // component that needs some members up while others stop (Kafka KRaft:
  // brokers before the controller quorum) survives the stop. Reported in the
  // preflight step's metadata ("stop_wave").
  virtual int stop_wave() const { return 0; }
  // Whether a cluster restore's rollback must stop every member before any
  // member starts on its previous data (the halt step; reported in the
  // preflight step's metadata, "rollback_halt"). True where a member rolled
  // back would rejoin members still running the restored data and the two
  // histories would mix: the restore keeps the cluster's identity (Kafka's
  // cluster.id and KRaft quorum, a ZooKeeper ensemble). False for etcd,
  // whose restore makes a new cluster (a new cluster id) that members on
  // their previous data refuse: each member rolls back on its own, and the
  // members that can serve again do while a lost one is away.
  virtual bool rollback_needs_halt() const { return false; }
  // The commit step: every member verified the restored data. Removes this
  // restore's on-disk record (ctx.restore_id) and reports what it set aside
  // (kept as the safety copy) in the metadata. A record of another restore
  // is left as it is. Needs no repository (ctx.repo may be null).
  virtual DriverResult restore_commit(TaskContext& ctx, const RestoreSpec& spec) {
    (void)ctx;
    (void)spec;
    DriverResult r;
    r.outcome = cairn::v1::TASK_OUTCOME_SUCCEEDED;
    return r;
  }
  // Checks the running component against what a snapshot recorded (after a
  // restore, or on demand). Empty metadata: only health.
  virtual std::vector<cairn::v1::Reason> verify(TaskContext& ctx, const nlohmann::json& recorded) {
    (void)ctx;
    (void)recorded;
    return {};
  }
  // A service the driver runs for as long as the agent does (the postgresql
  // driver's WAL archive socket); stop_background ends it. Throws
  // cairn::Error when it cannot start (the agent logs it and goes on).
  virtual void start_background(BackgroundContext ctx) { (void)ctx; }
  virtual void stop_background() {}
  // What the background service reports in every heartbeat (the WAL
  // archive's progress and lag); called from the session's thread.
  virtual void report_background(cairn::v1::Heartbeat& hb) const { (void)hb; }
  // An in-place restore of this driver's was interrupted (the agent killed
  // between stopping the service and the restore's end; restore_journal.h):
  // put the previous data back and the service running on it. Returns what
  // was done, for the operator; throws cairn::Error when it could not (the
  // record is kept, and the next start tries again).
  virtual std::string recover_interrupted_restore(const InPlaceRestore& r) {
    (void)r;
    throw Error(Errc::unsupported, "driver '" + name() + "' keeps no record of an in-place restore");
  }
};

// A restore drill of a driver's snapshots (docs/drills.md): optional; a
// driver that provides one (DriverFactory::drill, registry.cc) is drillable.
// The generic part (agent/drill_task.cc) restores the snapshots into a
// sandbox (agent/sandbox/sandbox.h), bounded and under a deadline; the
// driver's drill starts the component there and checks it.
struct DrillDecl;
class Sandbox;
struct DrillReport;

// One drill as a driver's drill runs it.
struct DrillRun {
  const DrillDecl& decl;  // the [drill] section's generic keys (root, user, java, timeouts)
  Sandbox& box;
  TaskContext& ctx;
  // The snapshots restored side by side, each into roots[i] (one snapshot:
  // the sandbox's "restored"). The first `members` are the drilled
  // component's; a cluster drill's companion (the set's ZooKeeper for Kafka
  // brokers in ZooKeeper mode) follows them.
  const std::vector<repo::Snapshot>& snaps;
  const std::vector<std::string>& roots;
  size_t members = 1;
  DrillReport& rep;
  const std::atomic<bool>* cancel = nullptr;      // the deadline's or the task's stop
  std::function<void(const std::string&)> phase;  // "start", "check": progress
};

class DriverDrill {
 public:
  virtual ~DriverDrill() = default;
  // "" when this host has what the drill runs (its tools, jars, user);
  // else why not: the driver is not drillable here.
  virtual std::string tools_missing(const DrillDecl& d) const = 0;
  // Its own [drill] keys as read (defaults included): {"etcdctl": "etcdctl"}.
  virtual nlohmann::json keys() const { return nlohmann::json::object(); }
  // Bytes the sandbox needs for these snapshots (refused over the disk
  // budget or the free space before anything is restored). By default twice
  // their size + 128 MiB (a server unpacks or writes beside the data).
  virtual uint64_t disk_needed(const std::vector<repo::Snapshot>& snaps) const;
  // Whether a server of the drill runs on the host's filesystem (not
  // confined to the restored tree as its root): then no symbolic link of the
  // restored tree may lead out of the sandbox, checked before run.
  virtual bool runs_on_host_files() const { return true; }
  // Whether run needs a network namespace of its own (it starts a server).
  virtual bool starts_servers() const { return true; }
  // Whether one drill takes every member's snapshot of a cluster (the
  // task's drill_members, and a companion ZooKeeper in drill_zookeeper),
  // the first member's task running it and the others reporting its result.
  virtual bool cluster_drill() const { return false; }
  // Starts the component on the restored data and checks it, recording in
  // r.rep; throws cairn::Error for what stops the drill (interrupted:
  // cancelled, unsupported: not run here, else failed).
  virtual void run(DrillRun& r) const = 0;
};

// Builds a Reason in one line.
inline cairn::v1::Reason make_reason(cairn::v1::ErrorCode code, const std::string& detail, const std::string& item = {}) {
  cairn::v1::Reason r;
  r.set_code(code);
  // File names are bytes; the wire's strings must be UTF-8 or the controller
  // cannot parse the whole result (docs/protocol.md § Messages).
  r.set_detail(utf8_or_escaped(detail));
  r.set_item(utf8_or_escaped(item));
  return r;
}

// The pipe between a stream's producer and the archiver: {read end, write
// end}, close-on-exec, 1 MiB where the host allows it (fs.pipe-max-size, the
// default ceiling) instead of 64 KiB: with etcd's 32 KiB messages the two
// sides wake each other a sixteenth as often. Throws cairn::Error (io).
std::array<int, 2> stream_pipe();

}  // namespace cairn::agent
