#pragma once
// One catalog transaction. Every method that changes state writes its audit
// event through the same Tx, so the change and its event commit together or
// not at all. Reads are const. Get a Tx from Catalog::transaction() or
// Catalog::read(); it lives only as long as the callback.
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "controller/catalog/audit.h"
#include "controller/catalog/types.h"

namespace cairn::catalog {

namespace sqlite {
class Db;
}

class Tx;

namespace sql {
// The statement of Tx::repository_in_use; its query plan is tested
// (tests/unit/controller/catalog/migrations_test.cc).
extern const char* const kRepositoryInUse;
// Whether an agent has another open task of a component in a set (restore):
// read through the agent's index (backups.cc release_task_lock).
extern const char* const kOpenTaskOfAgentInSet;
extern const char* const kOpenTaskOfAgentInRestore;
}  // namespace sql
// Called inside the transaction that ends a task, before its set or restore is
// recomputed: the controller's cluster restore adds the next step's tasks
// there (controller/cluster_restore.h), so a restore never reads finished
// between two steps, whichever path ended the task (a result, a lost agent,
// an expired plan, a cancel).
using TaskEndedHook = std::function<void(Tx&, const Task&)>;

class Tx {
 public:
  Tx(const Tx&) = delete;
  Tx& operator=(const Tx&) = delete;

  // Unix seconds / milliseconds of this transaction (one clock reading).
  int64_t now() const { return now_ms_ / 1000; }
  int64_t now_ms() const { return now_ms_; }
  const std::string& actor() const { return actor_; }
  // For a batch of several agents' messages in one transaction (the fleet's
  // plan acknowledgements): each part is audited as the agent it is for.
  void set_actor(std::string actor) { actor_ = std::move(actor); }

  // -- audit ---------------------------------------------------------------
  // Appends an event to the hash chain; returns its seq. State-changing
  // methods below call this themselves; call it directly for events without a
  // row change (a refused login, a rejected frame).
  int64_t audit(const AuditRecord& record);
  std::vector<AuditEvent> audit_events(int64_t from_seq = 1) const;
  // Retention of the outbox while nothing publishes it (docs/configuration.md
  // § [audit]): deletes the events beyond the newest keep_events and those
  // older than max_age_ms, published or not, but never the newest event (it
  // anchors the chain). Records an `audit.pruned` event naming the range.
  // Returns how many were deleted.
  int64_t prune_audit(int64_t keep_events, int64_t max_age_ms);
  // With a publisher (docs/audit.md): only published events age out as
  // above; unpublished ones stay until Kafka has them, except that beyond
  // max_unpublished the oldest are dropped, recorded by an `audit.dropped`
  // event naming the range (cairn-audit then reports that gap, explained).
  // Returns how many were deleted.
  int64_t prune_published_audit(int64_t keep_events, int64_t max_age_ms, int64_t max_unpublished);
  // The publisher's view: up to limit unpublished events with seq > after_seq,
  // in seq order; marking every event up to upto_seq published.
  std::vector<AuditEvent> unpublished_audit_events(int64_t after_seq, int64_t limit) const;
  int64_t mark_audit_published(int64_t upto_seq);
  // The topic lost what Kafka had acknowledged (cut back, recreated): the
  // events after after_seq still in the outbox are sent again. Returns how many.
  int64_t mark_audit_unpublished_after(int64_t after_seq);
  // The newest event marked published (0 when none), and the oldest event the
  // outbox holds after `after_seq` (0 when none).
  int64_t audit_published_head() const;
  int64_t audit_first_after(int64_t after_seq) const;
  // Where Kafka acknowledged the newest published event (migration 0020):
  // the publisher checks the topic still holds it there before it believes a
  // tail of checkpoints only (docs/audit.md § Exactly once).
  struct AuditTopicMark {
    std::string topic;
    int64_t seq = 0;
    std::string hash;
    int64_t offset = -1;
  };
  void set_audit_topic_mark(const AuditTopicMark& m);
  std::optional<AuditTopicMark> audit_topic_mark() const;
  // outbox_max_events applied as events are added (the publisher's bound,
  // docs/audit.md): beyond max_unpublished the oldest unpublished events are
  // dropped, down to 90% of it, and an `audit.dropped` event names the
  // range. Returns {count, first seq, last seq} dropped (count 0: none).
  struct Dropped {
    int64_t count = 0, first = 0, last = 0;
    int64_t unpublished = 0;  // unpublished events left after the cap
  };
  Dropped cap_audit_outbox(int64_t max_unpublished);
  // Whether this transaction wrote audit events.
  bool wrote_audit() const { return audit_written_ > 0; }
  int64_t audit_written() const { return audit_written_; }
  // One event by seq (the publisher signs checkpoints over its hash).
  std::optional<AuditEvent> audit_event(int64_t seq) const;

  // -- agents (agents.cc) ----------------------------------------------------
  // A new agent starts `pending`. Throws cairn::Error(exists) on a known name or key.
  std::string enrol_agent(const std::string& name, const CurveKey& key, const std::string& hostname, const std::string& agent_version);
  // Bounds the pending list (docs/configuration.md, fleet.max_pending_agents):
  // deletes the oldest pending agents beyond keep, with one
  // `agent.pending_dropped` event naming them. Returns the dropped ids.
  std::vector<std::string> drop_oldest_pending_agents(size_t keep);
  // Throws cairn::Error(invalid_input) for a move the state machine refuses
  // (revoked is final).
  void set_agent_state(const std::string& agent_id, AgentState to);
  // Liveness is not audited: a heartbeat is not a change of data or trust.
  void touch_agent(const std::string& agent_id);
  // Audited only when the list differs from the stored one.
  void set_agent_components(const std::string& agent_id, const std::vector<Component>& components);
  std::optional<Agent> agent(const std::string& id_or_name) const;
  std::optional<Agent> agent_by_key(const CurveKey& key) const;
  std::vector<Agent> agents() const;
  std::vector<Component> agent_components(const std::string& agent_id) const;

  std::string add_operator(const std::string& name, const CurveKey& key);
  void revoke_operator(const std::string& name);
  bool is_active_operator(const CurveKey& key) const;

  // Controller signing keys (public halves). Adding an `active` key demotes
  // the previous active one to `standby`.
  void add_controller_key(const std::string& key_id, std::span<const uint8_t> public_key, bool active);
  void retire_controller_key(const std::string& key_id);
  std::optional<std::string> active_controller_key() const;
  std::optional<ControllerKeyRecord> controller_key(const std::string& key_id) const;
  std::optional<std::string> standby_controller_key() const;
  // Rotation's last step: the active key becomes `retired`, key_id (standby) `active`.
  void activate_controller_key(const std::string& key_id);
  // Key announcements, oldest first.
  void add_key_announcement(const KeyAnnouncementRecord& a);
  std::vector<KeyAnnouncementRecord> key_announcements() const;
  // Labels the agent declares (Register); audited when they change.
  void set_agent_labels(const std::string& agent_id, const std::map<std::string, std::string>& labels);
  // What the agent reported it trusts; audited when it changes.
  void set_agent_trusted_keys(const std::string& agent_id, const std::vector<std::string>& key_ids);

  // -- backup sets and tasks (backups.cc) ------------------------------------
  // Creates the set and one `pending` task per entry. Refuses an empty task
  // list: a set with nothing in it can never be complete.
  std::string create_backup_set(const NewBackupSet& set);
  std::optional<BackupSet> backup_set(const std::string& id) const;
  std::vector<BackupSet> backup_sets(size_t limit) const;
  std::vector<Task> tasks_of_set(const std::string& backup_set_id) const;
  // Every set a policy ran, newest first (expired and forgotten ones included).
  std::vector<BackupSet> policy_sets(const std::string& policy) const;
  // Retention let the set go (audited once); its snapshots were removed from
  // their repositories (audited once, with what was removed).
  void expire_set(const std::string& id, const std::string& reason);
  // Sets expired whose snapshots are not yet removed, oldest first.
  std::vector<BackupSet> expired_sets() const;
  void mark_set_forgotten(const std::string& id, const nlohmann::json& details);
  // Retention removed the set's snapshots from that repository (its tasks'
  // snapshot_removed_at): the set is forgotten once no snapshot is left.
  void mark_snapshots_removed(const std::string& set_id, const std::string& repository);
  // Whether a backup task into this repository (by name), or a restore task
  // reading a snapshot stored there, has not ended.
  bool repository_in_use(const std::string& repository) const;
  std::vector<Task> tasks_of_restore(const std::string& restore_id) const;
  std::optional<Task> task(const std::string& id) const;
  // The parent named in the agent's next backup of the component: the newest
  // snapshot a backup task of that agent and component left (succeeded or
  // partial), outside safety sets. Only the agent's own tasks count, so a
  // snapshot another agent wrote is never chosen (DESIGN.md, trust model).
  // With a repository, one stored there comes first, else one whose
  // repository the catalog does not know; never one stored elsewhere: it
  // saves the agent nothing (it reads every file) and draws a note.
  std::optional<std::string> backup_parent(const std::string& agent_id, const std::string& component,
                                           const std::optional<std::string>& repository = std::nullopt) const;
  // Who wrote this snapshot and where; nullopt for a snapshot the catalog
  // does not hold.
  std::optional<SnapshotOrigin> snapshot_origin(const std::string& snapshot_id) const;

  // Moves a task along the state machine (outcome.h) and records reasons,
  // snapshot and manifest. When the last task of a set or restore ends, the
  // set's state is derived and recorded too. Throws cairn::Error(invalid_input)
  // for a refused transition or a missing reason.
  void update_task(const std::string& task_id, const TaskUpdate& update);
  // What an agent learnt of a task after the task had ended (an in-place
  // restore it was killed in, put right at its next start): the reasons are
  // added after the task's own, its state stays. Audited as `task.amended`.
  void amend_task_reasons(const std::string& task_id, const std::vector<Reason>& reasons);
  // Keeps only the latest progress per task, unaudited (several per second).
  void set_task_progress(const std::string& task_id, const TaskProgress& progress);

  // -- plans (plans.cc) -------------------------------------------------------
  // Allocates the agent's next sequence, records the plan and binds its tasks
  // (which must be `pending` and belong to the agent). Returns the sequence.
  uint64_t issue_plan(const NewPlan& plan);
  // The same for an agent the caller read in this transaction (its id is
  // plan.agent_id): an order over 1,000 agents reads each once, not twice.
  uint64_t issue_plan(const Agent& agent, const NewPlan& plan);
  // The agent's answer: accepted moves the plan's `sent` tasks to `accepted`,
  // rejected moves them to `rejected` with the code and detail as reason.
  void record_plan_ack(const std::string& plan_id, bool accepted, ErrorCode code, const std::string& detail);
  // Plans past expiry without an answer: the plan becomes `expired` and its
  // unanswered tasks `missed`. Returns the plan ids.
  std::vector<std::string> expire_plans();
  uint64_t last_plan_sequence(const std::string& agent_id) const;
  // After a catalog restore an agent may have accepted higher sequences than
  // the catalog knows; raise ours so new plans are not refused as older.
  void raise_plan_sequence(const std::string& agent_id, uint64_t at_least);

  // -- fleet and operator API helpers (fleet.cc) -------------------------------
  // The name of the active operator holding key, if any.
  std::optional<std::string> active_operator_name(const CurveKey& key) const;
  // What an agent says about itself at Register. A changed name is audited
  // (agents enrolled at the handshake carry a placeholder name until then).
  // Throws cairn::Error(exists) when the name belongs to another agent.
  void update_agent_identity(const std::string& agent_id, const std::string& name, const std::string& hostname,
                             const std::string& agent_version);
  // Stores the signed bytes of an issued plan, for delivery when its agent is connected.
  void set_plan_envelope(const std::string& plan_id, std::span<const uint8_t> envelope);
  std::optional<PlanRecord> plan(const std::string& plan_id) const;
  // Issued, unexpired plans of the agent that still have `pending` tasks: not yet delivered.
  std::vector<PlanRecord> undelivered_plans(const std::string& agent_id) const;
  // Every plan of the agent still waiting for its answer (delivered or not).
  std::vector<PlanRecord> issued_plans(const std::string& agent_id) const;
  // Every plan of every agent still waiting for its answer (rotation re-signs them).
  std::vector<PlanRecord> all_issued_plans() const;
  // Replaces an issued plan's signed bytes after a key rotation.
  void resign_plan(const std::string& plan_id, const std::string& key_id, std::span<const uint8_t> envelope);
  // Tasks of the agent in the given states.
  std::vector<Task> agent_tasks(const std::string& agent_id, std::span<const TaskState> states) const;
  // The plan's tasks in state `from` move to `to`, each audited as
  // update_task audits it, in one statement: a delivered plan's tasks become
  // `sent`, an accepted plan's `accepted` (a set over every agent does each
  // for 1,000 plans at once). Only for a step update_task allows that needs
  // no reason and ends nothing (Errc::invalid_input otherwise). Returns how
  // many tasks moved.
  size_t move_plan_tasks(const std::string& plan_id, TaskState from, TaskState to);
  // Audit events not yet published.
  int64_t audit_outbox_pending() const;
  size_t running_backup_sets() const;
  std::vector<Restore> restores_of_set(const std::string& backup_set_id) const;
  // The restore a safety backup set was taken for, if it is one.
  std::optional<std::string> restore_of_safety_set(const std::string& backup_set_id) const;

  // -- policies (policies.cc) ----------------------------------------------------
  // Adds (create) or replaces a policy; audited as policy.add / policy.edit.
  // Throws cairn::Error(exists) when create finds the name taken, (not_found)
  // when an edit finds none.
  void put_policy(const Policy& p, bool create);
  // Audited; false when there is none by that name.
  bool remove_policy(const std::string& name);
  std::optional<Policy> policy(const std::string& name) const;
  std::vector<Policy> policies() const;
  void set_policy_paused(const std::string& name, bool paused);
  // The scheduler's bookkeeping: unaudited (the runs are).
  void set_policy_next_run(const std::string& name, std::optional<int64_t> at);
  void set_policy_next_drill(const std::string& name, std::optional<int64_t> at);
  // Component -> the newest set of the policy a drill proved restorable.
  std::map<std::string, std::string> newest_proven_sets(const std::string& policy) const;
  // The policy's sets a drill is reading now (a drill not yet ended): as
  // good as proven to retention until it ends (keep_proven).
  std::vector<std::string> sets_being_drilled(const std::string& policy) const;
  // A run started, skipped or refused: audited (policy.run).
  void record_policy_run(const PolicyRun& run);
  std::vector<PolicyRun> policy_runs(const std::string& name, size_t limit) const;

  // -- catalog rebuild (rebuild.cc; controller/catalog_rebuild.h) ---------------
  // The agent holding key, or a new `pending` one: an operator approves it
  // when it connects again (a repository proves nothing about trust).
  std::string rebuilt_agent(const std::string& name, const CurveKey& key);
  // A backup set with its tasks and snapshots, ids as the repository names
  // them. Throws cairn::Error(exists) for a set the catalog has.
  void rebuilt_set(const RebuiltSet& set);
  bool task_exists(const std::string& id) const;
  // Runs fn inside a SAVEPOINT: what fn wrote is undone when it throws (the
  // exception goes on), so one bad set of a rebuild is left out alone.
  void savepoint(const std::function<void()>& fn);

  // -- signed set records (set_records.cc; controller/set_record.h) ------------
  // Sets whose record is due (ended, or re-signed after a key rotation), oldest first.
  std::vector<std::string> set_records_due(size_t limit) const;
  // The repositories (by the agents' names) holding a snapshot of the set.
  std::vector<std::string> set_snapshot_repositories(const std::string& set_id) const;
  void set_record_written(const std::string& set_id, const std::string& repository, const std::string& key_id);
  void set_record_not_due(const std::string& set_id);
  // Every ended set with no record signed by key_id due again: at start (a
  // repository declared since, a write that failed before a restart), and
  // after a key rotation (none is signed by the new key yet). Never a set the
  // controller did not see end (a rebuilt set no record covered).
  void set_records_due_unwritten(const std::string& key_id);
  // The repositories holding the set's record, signed by key_id ("" = any key).
  std::vector<std::string> set_record_repositories(const std::string& set_id, const std::string& key_id = {}) const;

  // -- offsite copies by policy (set_copies.cc; controller/set_copy.h) --------------
  // Queues a copy of every ended (complete or partial) set of a policy with
  // copy_to that has none to that repository yet; then the copies due
  // (pending, or failed and past their next attempt) of sets not expired,
  // oldest set first.
  std::vector<SetCopy> set_copies_due(int64_t now, size_t limit);
  // A copy's end: copied (with each task's snapshot id there) or failed
  // (tried again after a backoff: 1, 2, 4 ... minutes, at most an hour).
  void set_copy_copied(const std::string& set_id, const std::string& repository, int64_t snapshots, int64_t bytes, int64_t blobs_new,
                       const std::map<std::string, std::string>& task_snapshots);
  // task_snapshots: what it stored there before it failed (retention removes those too).
  // first_delay: seconds before the first retry (doubled per attempt, at most an hour).
  void set_copy_failed(const std::string& set_id, const std::string& repository, const std::string& reason,
                       const std::map<std::string, std::string>& task_snapshots = {}, int64_t first_delay = 60);
  // The copy running now, as far as it got (written every few seconds while
  // it runs); cleared by its end, or by clear_copy_progress when none runs.
  void set_copy_progress(const std::string& set_id, const std::string& repository, int64_t started_at, int64_t snapshots_done,
                         int64_t snapshots_total, int64_t bytes_done, int64_t bytes_total);
  void clear_copy_progress();
  std::vector<SetCopy> set_copies(const std::string& set_id) const;
  // The copied snapshots of a set in one repository not removed yet: task id -> snapshot id.
  std::map<std::string, std::string> task_copies(const std::string& set_id, const std::string& repository) const;
  void mark_copy_removed(const std::string& set_id, const std::string& repository);
  // Per destination: copies by state, and the newest copy's end (/metrics, the status page).
  struct CopyStat {
    std::string repository;
    int64_t copied = 0, pending = 0, failed = 0;
    std::optional<int64_t> last_copied_at;
    std::string last_failure;        // the newest failed copy's reason
    std::optional<SetCopy> copying;  // the copy running now there: set_id, snapshots/bytes done and totals
  };
  std::vector<CopyStat> copy_stats() const;

  // -- aggregates for /metrics (stats.cc) ----------------------------------------
  std::vector<BackupStat> backup_stats() const;
  std::vector<DrillStat> drill_stats() const;
  std::vector<ComponentHealth> component_health() const;
  // labels: component, agent name, state
  std::vector<CountStat> restore_stats() const;
  // labels: repository, component, agent name (snapshots retention has not removed)
  std::vector<CountStat> snapshot_stats() const;
  // By repository: expired sets with a snapshot there not yet removed.
  std::vector<ExpiredStat> expired_stats() const;
  // The snapshots repository holds by the catalog's word: every backup
  // task's snapshot there, and every landed copy there, of a set retention
  // has not expired (an expired set's snapshots may be going: maintenance
  // removes them). Ordered by set, then task.
  std::vector<StoredSnapshot> snapshots_in(const std::string& repository) const;

  // -- lookups for the operator API (lookup.cc) ---------------------------------
  // Ids of backup sets, restores or agents that start with prefix, in id
  // order, at most limit of them (cairnctl accepts unique prefixes).
  enum class IdKind { backup_set, restore, agent };
  std::vector<std::string> ids_with_prefix(IdKind kind, const std::string& prefix, size_t limit) const;
  // Restores, newest first.
  // The newest restores (kind "restore") or drills ("drill").
  std::vector<Restore> restores(size_t limit, const std::string& kind = "restore") const;

  // -- restores and locks (restores.cc) ----------------------------------------
  std::string create_restore(const NewRestore& restore);
  // The next step of a cluster restore: more tasks of a running restore.
  std::vector<std::string> add_restore_tasks(const std::string& restore_id, const std::vector<NewTask>& tasks);
  std::optional<Restore> restore(const std::string& id) const;
  // A rollback an ended restore still owes the agent's member (docs/protocol.md
  // § A rollback owed to a member that was away): its rollback was cancelled
  // while the agent was away and has not run since. Newest restore first.
  std::vector<Task> owed_rollbacks(const std::string& agent_id) const;
  // Makes the owed rollback's task again in its ended restore (its state stays).
  std::string add_owed_rollback(const std::string& restore_id, const NewTask& task);
  // False when another holder's lock on target has not expired.
  // Approves every pending cluster membership of the agent; how many.
  size_t approve_memberships(const std::string& agent_id);
  // -- site recovery (agents.cc; migration 0021) -----------------------------
  // The agent names of a cluster's approved members when a backup task of it
  // was made (docs/protocol.md § The cluster restore): what a restore needs.
  void set_task_cluster_members(const std::string& task_id, const std::vector<std::string>& names);
  std::vector<std::string> task_cluster_members(const std::string& task_id) const;
  // The approved members of a logical cluster now, by agent name.
  std::vector<std::string> cluster_member_names(const std::string& driver, const std::string& cluster) const;
  // The logical cluster whose newest backup of `component` names agent_name
  // as a member; nullopt when none does.
  std::optional<std::string> cluster_naming_member(const std::string& component, const std::string& agent_name) const;
  // The agents whose name this agent took after they were revoked (their
  // backups restore here), oldest first.
  std::vector<std::string> predecessors(const std::string& agent_id) const;
  // Whether a revoked agent gave this name up (and no agent took it since).
  bool name_released(const std::string& name) const;
  // Who holds the lock on target: {kind ("backup"/"restore"), holder (a set
  // or restore id)}; nullopt when nobody does.
  std::optional<std::pair<std::string, std::string>> lock_holder(const std::string& target) const;
  bool acquire_lock(const std::string& target, TaskKind kind, const std::string& holder, int64_t ttl_seconds);
  void release_lock(const std::string& target, const std::string& holder);

 private:
  friend class Catalog;
  Tx(sqlite::Db& db, std::string actor, int64_t now_ms, const TaskEndedHook* on_ended = nullptr)
      : db_(db), actor_(std::move(actor)), now_ms_(now_ms), on_ended_(on_ended) {}

  std::string new_id(std::string_view prefix) const;
  // Recomputes the state of the set or restore that owns task_id and records
  // it when every task has ended.
  void finish_owner_if_done(const Task& task);
  void resolve_memberships(const std::string& agent_id, std::vector<Component>& components);
  std::string cluster_to_join(const std::string& agent_id, const Component& c);
  void release_task_lock(const Task& task);
  void insert_tasks(const std::vector<NewTask>& tasks, TaskKind kind, const std::string* set_id, const std::string* restore_id,
                    std::vector<std::string>& ids);

  sqlite::Db& db_;
  std::string actor_;
  int64_t now_ms_;
  const TaskEndedHook* on_ended_ = nullptr;
  // The audit chain's head as this transaction last wrote it: a set over
  // 1,000 agents writes thousands of events, each chained to the one before,
  // without reading the head back each time.
  std::optional<std::pair<int64_t, std::string>> audit_head_;
  int64_t audit_written_ = 0;
  // Random bytes for event ids, drawn in blocks (one RAND_bytes call per 64 events).
  std::array<uint8_t, 1024> id_pool_{};
  size_t id_pool_used_ = sizeof(id_pool_);
};

}  // namespace cairn::catalog
