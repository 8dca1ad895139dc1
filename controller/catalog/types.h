#pragma once
// Rows of the catalog as callers see them.
#include <array>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/plan/restore_outcome.h"
#include "common/util/encoding.h"
#include "controller/catalog/outcome.h"
#include "proto/cairn.pb.h"
#include "proto/restore_step.pb.h"

namespace cairn::catalog {

using CurveKey = std::array<uint8_t, 32>;
using ErrorCode = cairn::v1::ErrorCode;

enum class AgentState { pending, approved, revoked };
std::string_view to_string(AgentState s);
std::optional<AgentState> parse_agent_state(std::string_view s);

struct Agent {
  std::string id;
  std::string name;
  CurveKey curve_public_key{};
  AgentState state = AgentState::pending;
  std::string hostname;
  std::string agent_version;
  int64_t created_at = 0;
  int64_t state_changed_at = 0;
  std::optional<int64_t> last_seen_at;
  std::vector<std::string> trusted_key_ids;   // controller keys the agent last said it trusts
  std::map<std::string, std::string> labels;  // declared in the agent's configuration (0008)
};

struct Component {
  Component() = default;
  Component(std::string name_, std::string driver_, bool can_restore_ = false, std::vector<std::string> restore_targets_ = {})
      : name(std::move(name_)), driver(std::move(driver_)), can_restore(can_restore_), restore_targets(std::move(restore_targets_)) {}
  std::string name;
  std::string driver;
  bool can_restore = false;
  std::vector<std::string> restore_targets;  // declared alternative restore targets, by name
  std::string scope = "node";                // "node", "cluster" (migration 0006) or "member" (0007)
  // Cluster scope: cluster_id is cairn's logical cluster (0014 cluster_members),
  // not what the agent declared; member_pending while an operator has not
  // approved the membership (then it takes part in no backup or restore).
  std::string cluster_id, member_id;
  bool member_pending = false;
  std::string declared_cluster_id;  // what the agent declares (the component's own id)
  std::vector<std::string> modes;   // the driver's modes, the default first
  bool restore_stops_service = false;
  std::string repository;  // its default repository, as the agent declares it (0008)
  bool has_drill = true;   // its driver has a restore drill (0022)
  bool operator==(const Component&) const = default;
};

using plan::kOwedRollbackGivenUp;

struct Reason {
  ErrorCode code = cairn::v1::ERROR_CODE_OK;
  std::string detail;
  std::string item;
};

enum class TaskKind { backup, restore };

struct TaskProgress {
  cairn::v1::Phase phase = cairn::v1::PHASE_UNSPECIFIED;
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
  uint64_t files_done = 0;
  uint64_t files_total = 0;
  std::string current_item;
  std::optional<int64_t> at;
  uint64_t storage_requests = 0, storage_retries = 0;  // the store's so far (0: a local disk, or not reported)
};

struct Task {
  std::string id;
  std::optional<std::string> backup_set_id;
  std::optional<std::string> restore_id;
  std::string agent_id;
  std::string component;
  TaskKind kind = TaskKind::backup;
  std::optional<std::string> source_snapshot;
  std::optional<std::string> safety_task_id;  // restore: the task of its safety backup
  std::optional<std::string> plan_id;
  std::optional<std::string> component_metadata;                      // JSON object the driver reported
  cairn::v1::RestoreStep restore_step = cairn::v1::RESTORE_STEP_ALL;  // a cluster restore's step; ALL otherwise (stored by name)
  std::string cluster_id;                                             // a cluster-scoped component's cluster; "" otherwise
  std::string repository;                              // backup: the repository it writes to ("" = unknown, the agent's default)
  std::optional<int64_t> snapshot_removed_at;          // backup: retention removed its snapshot (0013)
  uint64_t storage_requests = 0, storage_retries = 0;  // its repository's store (0016)
  TaskState state = TaskState::pending;
  std::vector<Reason> reasons;
  std::optional<std::string> snapshot_id;
  std::optional<std::string> manifest_digest;
  TaskProgress progress;
  int64_t created_at = 0;
  int64_t updated_at = 0;
};

struct BackupSet {
  std::string id;
  int64_t created_at = 0;
  std::string trigger;  // manual, schedule, safety
  std::string requested_by;
  nlohmann::json selector;
  SetState state = SetState::running;
  std::optional<int64_t> finished_at;
  std::optional<std::string> policy;    // the policy that ran it (0008)
  std::optional<int64_t> expired_at;    // a retention rule let it go
  std::optional<int64_t> forgotten_at;  // its snapshots were removed from the repository
  // False for a set a catalog rebuild (or an import) took from snapshot tags
  // no signed set record covered (0015): restored only with --accept-unattested.
  bool attested = true;
};

// What a policy keeps (restic's forget rules, over backup sets): see
// controller/retention.h. `min` complete sets are kept whatever the rules say.
struct PolicyRetention {
  int last = 0, hourly = 0, daily = 0, weekly = 0, monthly = 0, yearly = 0;
  int64_t within = 0;  // seconds
  int min = 0;
  bool empty() const { return !last && !hourly && !daily && !weekly && !monthly && !yearly && !within; }
  nlohmann::json to_json() const;
  static PolicyRetention from_json(const nlohmann::json& j);
  bool operator==(const PolicyRetention&) const = default;
};

struct Policy {
  std::string name;
  std::string source = "catalog";                      // or "config": declared in the controller's configuration
  nlohmann::json selector = nlohmann::json::object();  // {"components": [...], "nodes": [...], "labels": {...}}
  std::string repository;
  std::string mode;
  std::string schedule;
  std::string time_zone = "UTC";
  PolicyRetention retention;
  bool paused = false;
  int64_t created_at = 0, updated_at = 0;
  std::optional<int64_t> next_run_at;
  // Restore drills of the policy's newest set (docs/drills.md, migration 0017).
  std::string drill_schedule;  // "" = none
  std::string drill_on;        // the drill agent; "" = any that can
  bool keep_proven = true;     // retention keeps each component's newest proven set
  std::optional<int64_t> drill_next_at;
  // An offsite copy of each complete or partial set (migration 0018): a
  // repository the controller declares; "" = none.
  std::string copy_to;
};

// A set's copy to a second repository (copy_to; controller/set_copy.h).
struct SetCopy {
  std::string set_id, repository;
  std::string state;  // pending, copied, failed
  std::string reason;
  int64_t attempts = 0, next_attempt_at = 0, created_at = 0;
  std::optional<int64_t> finished_at, removed_at;
  int64_t snapshots = 0, bytes = 0, blobs_new = 0;  // copied; while it runs: done so far
  std::optional<int64_t> started_at;                // a copy running now (0019)
  int64_t snapshots_total = 0, bytes_total = 0;     // what the running copy measures against
};

struct PolicyRun {
  int64_t seq = 0;
  std::string policy;
  int64_t scheduled_for = 0;
  int64_t at = 0;
  std::string trigger;  // schedule, missed, run-now
  std::string outcome;  // started, skipped, refused
  std::optional<std::string> backup_set_id;
  std::string reason;
};

// Ended backup tasks (outside safety sets) grouped by policy, component,
// agent, repository and state: the counters and histogram of /metrics.
struct BackupStat {
  std::string policy, component, agent, repository, state;
  int64_t count = 0;
  std::optional<int64_t> last_success_at;
  std::optional<int64_t> last_bytes;  // of the newest succeeded backup
  // Tasks that took at most 1, 10, 60, 300, 900, 3600, 14400 s; the sum of all.
  static constexpr int64_t kBuckets[7] = {1, 10, 60, 300, 900, 3600, 14400};
  int64_t duration_le[7] = {};
  int64_t duration_sum = 0;
};

struct RebuiltTask {
  std::string id, agent_id, component, repository, snapshot_id;
  std::string cluster_id;            // the logical cluster of a cluster-scoped backup (tag cluster:<id>)
  std::vector<std::string> members;  // its members then, by agent name (tags member:<name>)
  TaskState state = TaskState::succeeded;
  int64_t created_at = 0;
  std::optional<std::string> component_metadata;
  uint64_t bytes = 0, files = 0;
  std::vector<std::string> reasons;  // a partial snapshot's errors
};

struct RebuiltSet {
  std::string id;
  int64_t created_at = 0, finished_at = 0;
  SetState state = SetState::complete;
  std::optional<std::string> policy;
  std::string note;  // why the state is what it is
  std::string requested_by = "catalog rebuild";
  std::vector<RebuiltTask> tasks;
  bool attested = false;  // a signed set record covers it (controller/set_record.h)
};

// What an on-call operator asks first, per component and cluster (or agent,
// for a node's own component): the newest backup, the newest proven restore
// and what it measured (docs/drills.md).
struct ComponentHealth {
  std::string component;
  std::string where;  // "cluster <id>" or the agent's name
  std::optional<int64_t> newest_backup_at, proven_at;
  double rto_seconds = 0;          // the newest proving drill's phases, summed
  std::string last_drill_failure;  // the newest drill that ran failed: its first reason
  std::string last_drill_not_run;  // drills since could not run (drill_verdict): the newest one's first reason
  // The newest ended backup did not succeed: "<state>: <first reason>" and
  // when it ended; "" and 0 when it succeeded.
  std::string newest_backup_failure;
  int64_t newest_backup_failed_at = 0;
};

// A drill task's verdict (docs/drills.md § Outcomes): "proven" (it
// succeeded), "not_run" (the drill could not run: missed, rejected, its
// agent lost or revoked, cancelled, or the agent's verdict says so: the
// drill host's disk, its deadline, what it cannot do) or "failed" (the
// backup did not restore or check out). stopped: a reason says the agent was
// lost or revoked, or the drill cancelled.
std::string drill_verdict(std::string_view state, std::string_view metadata, bool stopped);
struct Task;
std::string drill_verdict(const Task& t);  // the same, of a task read from the catalog
// A drill's verdict from its tasks once it ended: "proven" when every one
// was; "failed" when one failed; else "not_run". "" while one runs.
std::string drill_verdict(const std::vector<Task>& tasks);

// Restore drills of one component (docs/drills.md).
struct DrillStat {
  std::string component;
  int64_t proven = 0, failed = 0, not_run = 0;  // by drill_verdict
  std::optional<int64_t> last_proven_at;
  nlohmann::json last_metadata;  // the newest proving drill's result
};

struct CountStat {
  std::vector<std::string> labels;
  int64_t count = 0;
};

// The backup task that left a snapshot.
struct SnapshotOrigin {
  std::string agent_id;
  std::string repository;  // by the writer's name ("" when the catalog does not know: older tasks)
  bool named = false;      // the plan named it (a policy's --repository), not the component's default
  bool operator==(const SnapshotOrigin&) const = default;
};

// A snapshot the catalog says a repository holds (Tx::snapshots_in): a
// backup task's, or its copy there (a policy's copy_to). What the
// controller's verification looks for (controller/verification.h).
struct StoredSnapshot {
  std::string snapshot_id, set_id, task_id;
  std::string agent;  // the agent's name (its id when the catalog has no such agent)
  std::string component;
  int64_t made_at = 0;  // unix seconds: when the task stored it
  bool copy = false;    // a copy of the task's snapshot, made by the controller
  bool operator==(const StoredSnapshot&) const = default;
};

// Sets retention expired whose snapshots in a repository wait to be removed.
struct ExpiredStat {
  std::string repository;
  int64_t sets = 0;
  int64_t oldest_expired_at = 0;  // unix seconds
};

struct Restore {
  std::string id;
  std::string source_set_id;
  std::optional<std::string> safety_set_id;
  bool skip_safety_backup = false;
  int64_t created_at = 0;
  std::string requested_by;
  nlohmann::json selector;
  SetState state = SetState::running;
  std::optional<int64_t> finished_at;
  std::string kind = "restore";  // or "drill" (docs/drills.md)
};

struct PlanRecord {
  std::string id;
  std::string agent_id;
  uint64_t sequence = 0;
  std::string key_id;
  int64_t expires_at = 0;
  std::string state;  // issued, accepted, rejected, expired
  Bytes envelope;     // empty for plans issued before migration 0002
};

struct ControllerKeyRecord {
  std::string key_id;
  Bytes public_key;
  std::string state;  // active, standby, retired
  int64_t created_at = 0;
};

// A signed announcement of a new controller signing key (key rotation).
struct KeyAnnouncementRecord {
  std::string id;
  std::string new_key_id;
  std::string signed_by;
  std::vector<std::string> retires;
  int64_t issued_at = 0;
  int64_t expires_at = 0;
  Bytes envelope;
};

// Inputs of the write operations.

struct NewTask {
  NewTask() = default;
  NewTask(std::string agent_id_, std::string component_, std::optional<std::string> source_snapshot_ = std::nullopt,
          std::optional<std::string> safety_task_id_ = std::nullopt)
      : agent_id(std::move(agent_id_)),
        component(std::move(component_)),
        source_snapshot(std::move(source_snapshot_)),
        safety_task_id(std::move(safety_task_id_)) {}
  std::string agent_id;
  std::string component;
  std::optional<std::string> source_snapshot;                         // restore only
  std::optional<std::string> safety_task_id;                          // restore only: the safety backup's task
  cairn::v1::RestoreStep restore_step = cairn::v1::RESTORE_STEP_ALL;  // a cluster restore's step
  std::string cluster_id;                                             // a cluster-scoped component's cluster
  std::string repository;                                             // backup: where it writes ("" = the agent's default)
  bool repository_named = false;                                      // backup: the plan names it (a policy's --repository)
};

struct NewBackupSet {
  std::string trigger = "manual";
  std::string policy;  // the policy that runs it, if any
  nlohmann::json selector = nlohmann::json::object();
  std::vector<NewTask> tasks;
};

struct NewRestore {
  std::string source_set_id;
  bool skip_safety_backup = false;
  std::optional<std::string> safety_set_id;
  nlohmann::json selector = nlohmann::json::object();
  std::vector<NewTask> tasks;
  bool drill = false;  // a restore drill (docs/drills.md): id "dr-...", kind 'drill'
};

struct NewPlan {
  std::string plan_id;
  std::string agent_id;
  std::string key_id;
  int64_t issued_at = 0;
  int64_t not_before = 0;
  int64_t expires_at = 0;
  std::vector<std::string> task_ids;
};

// A task's move to a new state, as an agent or the controller reports it.
struct TaskUpdate {
  // Not an aggregate, so `{TaskState::sent}` reads well without -Wextra noise.
  TaskUpdate(TaskState to_state = TaskState::running, std::vector<Reason> why = {}) : to(to_state), reasons(std::move(why)) {}

  TaskState to;
  std::vector<Reason> reasons;  // required for rejected, partial, failed, missed
  std::optional<std::string> snapshot_id;
  std::optional<std::string> manifest_digest;
  std::optional<std::string> component_metadata;  // a JSON object (checked by controller/wire.cc)
  uint64_t bytes = 0;
  uint64_t files = 0;
  uint64_t storage_requests = 0, storage_retries = 0;
};

}  // namespace cairn::catalog
