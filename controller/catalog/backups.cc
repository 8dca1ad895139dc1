// Backup sets, tasks and their outcomes.
#include <algorithm>
#include <map>

#include "common/util/error.h"
#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"
#include "proto/error_code.h"
#include "proto/restore_step.h"

namespace cairn::catalog {
namespace {

constexpr const char* kTaskColumns =
    "SELECT id, backup_set_id, restore_id, agent_id, component, kind, source_snapshot, plan_id, state,"
    " snapshot_id, manifest_digest, phase, bytes_done, bytes_total, files_done, files_total, current_item,"
    " progress_at, created_at, updated_at, safety_task_id, component_metadata, restore_step, cluster_id, repository,"
    " snapshot_removed_at, storage_requests, storage_retries"
    " FROM tasks ";

std::optional<std::string> opt_text(const sqlite::Stmt& s, int c) {
  if (s.is_null(c)) return std::nullopt;
  return s.text(c);
}

// The catalog keeps a step by its name (proto/restore_step.h), as the
// controller wrote it.
cairn::v1::RestoreStep step_of_text(const std::string& name) {
  auto step = proto::restore_step_from_name(name);
  if (!step) throw Error(Errc::corrupt, "the catalog names restore step '" + name + "', which this build does not know");
  return *step;
}

Task read_task(const sqlite::Stmt& s) {
  Task t;
  t.id = s.text(0);
  t.backup_set_id = opt_text(s, 1);
  t.restore_id = opt_text(s, 2);
  t.agent_id = s.text(3);
  t.component = s.text(4);
  t.kind = s.text(5) == "restore" ? TaskKind::restore : TaskKind::backup;
  t.source_snapshot = opt_text(s, 6);
  t.plan_id = opt_text(s, 7);
  // The CHECK constraint keeps state to known names.
  t.state = parse_task_state(s.text(8)).value_or(TaskState::failed);
  t.snapshot_id = opt_text(s, 9);
  t.manifest_digest = opt_text(s, 10);
  t.progress.phase = cairn::v1::Phase(s.integer(11));
  t.progress.bytes_done = uint64_t(s.integer(12));
  t.progress.bytes_total = uint64_t(s.integer(13));
  t.progress.files_done = uint64_t(s.integer(14));
  t.progress.files_total = uint64_t(s.integer(15));
  t.progress.current_item = s.text(16);
  if (!s.is_null(17)) t.progress.at = s.integer(17);
  t.created_at = s.integer(18);
  t.updated_at = s.integer(19);
  t.safety_task_id = opt_text(s, 20);
  t.component_metadata = opt_text(s, 21);
  t.restore_step = step_of_text(s.text(22));
  t.cluster_id = s.text(23);
  t.repository = s.text(24);
  if (!s.is_null(25)) t.snapshot_removed_at = s.integer(25);
  t.storage_requests = uint64_t(s.integer(26));
  t.storage_retries = uint64_t(s.integer(27));
  return t;
}

std::vector<Reason> read_reasons(sqlite::Db& db, const std::string& task_id) {
  auto s = db.prepare("SELECT code, detail, item FROM task_reasons WHERE task_id = ? ORDER BY ordinal");
  s.bind(1, task_id);
  std::vector<Reason> out;
  while (s.step()) out.push_back({ErrorCode(s.integer(0)), s.text(1), s.text(2)});
  return out;
}

std::vector<Task> read_tasks(sqlite::Db& db, const std::string& where, const std::string& arg) {
  auto s = db.prepare(std::string(kTaskColumns) + where + " ORDER BY created_at, id");
  s.bind(1, arg);
  std::vector<Task> out;
  while (s.step()) out.push_back(read_task(s));
  for (auto& t : out) t.reasons = read_reasons(db, t.id);
  return out;
}

constexpr const char* kSetColumns =
    "SELECT id, created_at, trigger, requested_by, selector, state, finished_at, policy, expired_at, forgotten_at, attested"
    " FROM backup_sets ";

BackupSet read_set(const sqlite::Stmt& s) {
  BackupSet b;
  b.id = s.text(0);
  b.created_at = s.integer(1);
  b.trigger = s.text(2);
  b.requested_by = s.text(3);
  b.selector = nlohmann::json::parse(s.text(4), nullptr, false);
  b.state = parse_set_state(s.text(5)).value_or(SetState::failed);
  if (!s.is_null(6)) b.finished_at = s.integer(6);
  if (!s.is_null(7)) b.policy = s.text(7);
  if (!s.is_null(8)) b.expired_at = s.integer(8);
  if (!s.is_null(9)) b.forgotten_at = s.integer(9);
  b.attested = s.integer(10) != 0;
  return b;
}

nlohmann::json reasons_json(const std::vector<Reason>& reasons) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& r : reasons) out.push_back({{"code", proto::error_code_name(r.code)}, {"detail", r.detail}, {"item", r.item}});
  return out;
}

// The details of a task's step in the audit trail, the same whichever path
// moved it (update_task, move_plan_tasks).
nlohmann::json task_step_details(const Task& t, TaskState from, const std::vector<Reason>& reasons) {
  nlohmann::json details = {
      {"from", to_string(from)}, {"agent_id", t.agent_id}, {"component", t.component}, {"reasons", reasons_json(reasons)}};
  if (t.backup_set_id) details["backup_set_id"] = *t.backup_set_id;
  if (t.restore_id) details["restore_id"] = *t.restore_id;
  return details;
}

}  // namespace

void Tx::insert_tasks(const std::vector<NewTask>& tasks, TaskKind kind, const std::string* set_id, const std::string* restore_id,
                      std::vector<std::string>& ids) {
  auto ins = db_.prepare(
      "INSERT INTO tasks (id, backup_set_id, restore_id, agent_id, component, kind, source_snapshot, state,"
      " created_at, updated_at, safety_task_id, restore_step, cluster_id, repository, repository_named)"
      " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)");
  for (const auto& t : tasks) {
    if (t.component.empty()) throw Error(Errc::invalid_input, "a task needs a component");
    std::string id = new_id("tk");
    ins.reset();
    ins.bind(1, id);
    set_id ? ins.bind(2, *set_id) : ins.bind_null(2);
    restore_id ? ins.bind(3, *restore_id) : ins.bind_null(3);
    ins.bind(4, t.agent_id).bind(5, t.component).bind(6, kind == TaskKind::backup ? "backup" : "restore");
    ins.bind(7, t.source_snapshot).bind(8, now()).bind(9, now()).bind(10, t.safety_task_id);
    ins.bind(11, std::string(proto::restore_step_name(t.restore_step)))
        .bind(12, t.cluster_id)
        .bind(13, t.repository)
        .bind(14, int64_t(t.repository_named));
    ins.run();
    ids.push_back(std::move(id));
  }
}

std::string Tx::create_backup_set(const NewBackupSet& set) {
  if (set.tasks.empty()) throw Error(Errc::invalid_input, "a backup set needs at least one task; the selection matched no component");
  std::string id = new_id("bs");
  db_.prepare(
         "INSERT INTO backup_sets (id, created_at, trigger, requested_by, selector, state, policy)"
         " VALUES (?, ?, ?, ?, ?, 'running', ?)")
      .bind_all(id, now(), set.trigger, actor_, set.selector.dump(),
                set.policy.empty() ? std::optional<std::string>() : std::optional<std::string>(set.policy))
      .run();
  std::vector<std::string> ids;
  insert_tasks(set.tasks, TaskKind::backup, &id, nullptr, ids);
  nlohmann::json tasks = nlohmann::json::array();
  for (size_t i = 0; i < ids.size(); ++i)
    tasks.push_back({{"task_id", ids[i]}, {"agent_id", set.tasks[i].agent_id}, {"component", set.tasks[i].component}});
  nlohmann::json details = {{"trigger", set.trigger}, {"selector", set.selector}, {"tasks", tasks}};
  if (!set.policy.empty()) details["policy"] = set.policy;
  audit({"backup.create", "backup_set:" + id, "running", "", details});
  return id;
}

std::optional<BackupSet> Tx::backup_set(const std::string& id) const {
  auto s = db_.prepare((std::string(kSetColumns) + "WHERE id = ?").c_str());
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  return read_set(s);
}

std::vector<BackupSet> Tx::backup_sets(size_t limit) const {
  auto s = db_.prepare(std::string(kSetColumns) + "ORDER BY created_at DESC, rowid DESC LIMIT ?");
  s.bind(1, int64_t(limit));
  std::vector<BackupSet> out;
  while (s.step()) out.push_back(read_set(s));
  return out;
}

std::vector<BackupSet> Tx::policy_sets(const std::string& policy) const {
  auto s = db_.prepare(std::string(kSetColumns) + "WHERE policy = ? ORDER BY created_at DESC, rowid DESC");
  s.bind(1, policy);
  std::vector<BackupSet> out;
  while (s.step()) out.push_back(read_set(s));
  return out;
}

std::vector<BackupSet> Tx::expired_sets() const {
  auto s = db_.prepare(std::string(kSetColumns) + "WHERE expired_at IS NOT NULL AND forgotten_at IS NULL ORDER BY created_at, id");
  std::vector<BackupSet> out;
  while (s.step()) out.push_back(read_set(s));
  return out;
}

void Tx::expire_set(const std::string& id, const std::string& reason) {
  db_.prepare("UPDATE backup_sets SET expired_at = ? WHERE id = ? AND expired_at IS NULL").bind_all(now(), id).run();
  if (db_.changes() == 0) return;
  audit({"backup.expire", "backup_set:" + id, "expired", reason, nlohmann::json::object()});
}

void Tx::mark_snapshots_removed(const std::string& set_id, const std::string& repository) {
  db_.prepare(
         "UPDATE tasks SET snapshot_removed_at = ? WHERE backup_set_id = ? AND repository = ?"
         " AND snapshot_id IS NOT NULL AND snapshot_removed_at IS NULL")
      .bind_all(now(), set_id, repository)
      .run();
}

void Tx::mark_set_forgotten(const std::string& id, const nlohmann::json& details) {
  db_.prepare("UPDATE backup_sets SET forgotten_at = ? WHERE id = ? AND forgotten_at IS NULL").bind_all(now(), id).run();
  if (db_.changes() == 0) return;
  audit({"backup.forget", "backup_set:" + id, "forgotten", "", details});
}

// A restore reads from the repository its source snapshot's backup wrote to.
const char* const sql::kOpenTaskOfAgentInSet =
    "SELECT 1 FROM tasks INDEXED BY tasks_agent_state WHERE agent_id = ?3"
    " AND state IN ('pending', 'sent', 'accepted', 'running') AND component = ?2 AND backup_set_id = ?1 LIMIT 1";
const char* const sql::kOpenTaskOfAgentInRestore =
    "SELECT 1 FROM tasks INDEXED BY tasks_agent_state WHERE agent_id = ?3"
    " AND state IN ('pending', 'sent', 'accepted', 'running') AND component = ?2 AND restore_id = ?1 LIMIT 1";

const char* const sql::kRepositoryInUse =
    "SELECT EXISTS (SELECT 1 FROM tasks WHERE kind = 'backup' AND repository = ?1"
    "               AND state IN ('pending', 'sent', 'accepted', 'running'))"
    " OR EXISTS (SELECT 1 FROM tasks r JOIN snapshots s ON s.id = r.source_snapshot"
    "            JOIN tasks b ON b.id = s.task_id"
    "            WHERE r.kind = 'restore' AND r.state IN ('pending', 'sent', 'accepted', 'running')"
    "            AND b.repository = ?1)";

bool Tx::repository_in_use(const std::string& repository) const {
  auto s = db_.prepare(sql::kRepositoryInUse);
  s.bind(1, repository);
  s.step();
  return s.integer(0) != 0;
}

std::vector<Task> Tx::tasks_of_set(const std::string& backup_set_id) const {
  return read_tasks(db_, "WHERE backup_set_id = ?", backup_set_id);
}

std::vector<Task> Tx::tasks_of_restore(const std::string& restore_id) const { return read_tasks(db_, "WHERE restore_id = ?", restore_id); }

std::optional<Task> Tx::task(const std::string& id) const {
  auto v = read_tasks(db_, "WHERE id = ?", id);
  if (v.empty()) return std::nullopt;
  return std::move(v.front());
}

// A partial snapshot is a good parent: what it could not read is absent from
// its tree and is read next time; every entry it has was read by this agent.
// Safety backups are left out: one of an alternative restore target covers
// other paths, and the agent would then read everything. With a repository,
// the parent is one the backup wrote there, else one whose repository the
// catalog does not know (older rows, agents that do not say); when the
// agent's configuration moved the repository, the agent finds no such parent
// there and reads everything.
std::optional<std::string> Tx::backup_parent(const std::string& agent_id, const std::string& component,
                                             const std::optional<std::string>& repository) const {
  auto s = db_.prepare(
      "SELECT s.id FROM snapshots s JOIN tasks t ON t.id = s.task_id JOIN backup_sets b ON b.id = s.backup_set_id"
      " WHERE s.agent_id = ?1 AND s.component = ?2 AND t.agent_id = s.agent_id AND t.kind = 'backup'"
      " AND t.state IN ('succeeded', 'partial') AND b.trigger <> 'safety' AND b.expired_at IS NULL"
      " AND (?3 IS NULL OR t.repository = ?3 OR t.repository = '')"
      " ORDER BY CASE WHEN t.repository = ?3 THEN 0 ELSE 1 END, s.created_at DESC, s.rowid DESC LIMIT 1");
  s.bind_all(agent_id, component);
  repository ? s.bind(3, *repository) : s.bind_null(3);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

std::optional<SnapshotOrigin> Tx::snapshot_origin(const std::string& snapshot_id) const {
  auto s =
      db_.prepare("SELECT t.agent_id, t.repository, t.repository_named FROM snapshots s JOIN tasks t ON t.id = s.task_id WHERE s.id = ?");
  s.bind(1, snapshot_id);
  if (s.step()) return SnapshotOrigin{s.text(0), s.text(1), s.integer(2) != 0};
  // A copy of a backup's snapshot (a policy's copy_to): in the copy's
  // repository, by the controller's name for it.
  auto c = db_.prepare("SELECT t.agent_id, c.repository FROM task_copies c JOIN tasks t ON t.id = c.task_id WHERE c.snapshot_id = ?");
  c.bind(1, snapshot_id);
  if (!c.step()) return std::nullopt;
  return SnapshotOrigin{c.text(0), c.text(1), true};
}

void Tx::amend_task_reasons(const std::string& task_id, const std::vector<Reason>& reasons) {
  auto t = task(task_id);
  if (!t) throw Error(Errc::not_found, "no task '" + task_id + "'");
  auto ins = db_.prepare("INSERT INTO task_reasons (task_id, ordinal, code, detail, item) VALUES (?, ?, ?, ?, ?)");
  int64_t ordinal = int64_t(t->reasons.size());
  for (const auto& r : reasons) {
    ins.reset();
    ins.bind_all(task_id, ordinal++, int64_t(r.code), r.detail, r.item).run();
  }
  db_.prepare("UPDATE tasks SET updated_at = ? WHERE id = ?").bind_all(now(), task_id).run();
  audit({"task.amended", "task:" + task_id, std::string(to_string(t->state)),
         reasons.empty() ? "" : proto::error_code_name(reasons.front().code), task_step_details(*t, t->state, reasons)});
}

void Tx::update_task(const std::string& task_id, const TaskUpdate& u) {
  auto t = task(task_id);
  if (!t) throw Error(Errc::not_found, "no task '" + task_id + "'");
  if (!can_transition(t->state, u.to))
    throw Error(Errc::invalid_input, "task '" + task_id + "' cannot go from '" + std::string(to_string(t->state)) + "' to '" +
                                         std::string(to_string(u.to)) + "'");
  if (needs_reason(u.to) && u.reasons.empty())
    throw Error(Errc::invalid_input, "task '" + task_id + "' cannot become '" + std::string(to_string(u.to)) + "' without a reason");
  // A safety backup that found nothing at the restore's destination saved
  // nothing (and nothing was overwritten there): it succeeds without a snapshot.
  auto saved_nothing = [&] {
    if (!t->backup_set_id) return false;
    auto set = backup_set(*t->backup_set_id);
    return set && set->trigger == "safety" && !u.reasons.empty();
  };
  if (t->kind == TaskKind::backup && u.to == TaskState::succeeded && (!u.snapshot_id || !u.manifest_digest) && !saved_nothing())
    throw Error(Errc::invalid_input, "backup task '" + task_id + "' cannot succeed without a snapshot id and a manifest digest");

  db_.prepare(
         "UPDATE tasks SET state = ?, updated_at = ?, snapshot_id = coalesce(?, snapshot_id),"
         " manifest_digest = coalesce(?, manifest_digest), component_metadata = coalesce(?, component_metadata)"
         " WHERE id = ?")
      .bind_all(to_string(u.to), now(), u.snapshot_id, u.manifest_digest, u.component_metadata, task_id)
      .run();
  // A task that stored or restored its data ends with its final totals, not
  // the last progress report that happened to arrive (after a controller
  // restart that was all a user saw: "1.2 GiB/2.4 GiB" for a finished task).
  if (u.to == TaskState::succeeded || u.to == TaskState::partial)
    db_.prepare(
           "UPDATE tasks SET phase = 0,"
           " bytes_done = CASE WHEN ?1 > 0 THEN ?1 ELSE max(bytes_done, bytes_total) END,"
           " bytes_total = CASE WHEN ?1 > 0 THEN ?1 ELSE max(bytes_done, bytes_total) END,"
           " files_done = CASE WHEN ?2 > 0 THEN ?2 ELSE max(files_done, files_total) END,"
           " files_total = CASE WHEN ?2 > 0 THEN ?2 ELSE max(files_done, files_total) END WHERE id = ?3")
        .bind_all(int64_t(u.bytes), int64_t(u.files), task_id)
        .run();
  if (u.storage_requests || u.storage_retries)
    db_.prepare("UPDATE tasks SET storage_requests = ?, storage_retries = ? WHERE id = ?")
        .bind_all(int64_t(u.storage_requests), int64_t(u.storage_retries), task_id)
        .run();
  auto ins = db_.prepare("INSERT INTO task_reasons (task_id, ordinal, code, detail, item) VALUES (?, ?, ?, ?, ?)");
  int64_t ordinal = int64_t(t->reasons.size());
  for (const auto& r : u.reasons) {
    ins.reset();
    ins.bind_all(task_id, ordinal++, int64_t(r.code), r.detail, r.item).run();
  }
  // A backup that saved data leaves a snapshot, even a partial one.
  if (t->kind == TaskKind::backup && u.snapshot_id && u.manifest_digest && (u.to == TaskState::succeeded || u.to == TaskState::partial)) {
    db_.prepare(
           "INSERT INTO snapshots (id, task_id, backup_set_id, agent_id, component, manifest_digest, created_at,"
           " bytes, files) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
        .bind_all(*u.snapshot_id, task_id, *t->backup_set_id, t->agent_id, t->component, *u.manifest_digest, now(), int64_t(u.bytes),
                  int64_t(u.files))
        .run();
  }

  nlohmann::json details = task_step_details(*t, t->state, u.reasons);
  if (u.snapshot_id) details["snapshot_id"] = *u.snapshot_id;
  if (u.manifest_digest) details["manifest_digest"] = *u.manifest_digest;
  std::string reason = u.reasons.empty() ? "" : proto::error_code_name(u.reasons.front().code);
  audit({"task." + std::string(to_string(u.to)), "task:" + task_id, std::string(to_string(u.to)), reason, details});

  if (is_terminal(u.to)) {
    t->state = u.to;
    if (on_ended_ && *on_ended_) (*on_ended_)(*this, *t);
    release_task_lock(*t);
    finish_owner_if_done(*t);
  }
}

size_t Tx::move_plan_tasks(const std::string& plan_id, TaskState from, TaskState to) {
  if (!can_transition(from, to) || needs_reason(to) || is_terminal(to))
    throw Error(Errc::invalid_input,
                "a plan's tasks cannot all go from '" + std::string(to_string(from)) + "' to '" + std::string(to_string(to)) + "' at once");
  // Read, then one UPDATE: an UPDATE ... RETURNING would build a temporary
  // b-tree for every plan, which cost more than the update itself (a set over
  // 1,000 agents moves 1,000 plans in one transaction).
  std::vector<Task> moved;  // the columns the audit event names
  {
    auto s = db_.prepare("SELECT id, agent_id, component, backup_set_id, restore_id FROM tasks WHERE plan_id = ? AND state = ?");
    s.bind_all(plan_id, to_string(from));
    while (s.step()) {
      Task& t = moved.emplace_back();
      t.id = s.text(0);
      t.agent_id = s.text(1);
      t.component = s.text(2);
      if (!s.is_null(3)) t.backup_set_id = s.text(3);
      if (!s.is_null(4)) t.restore_id = s.text(4);
    }
  }
  if (moved.empty()) return 0;
  db_.prepare("UPDATE tasks SET state = ?, updated_at = ? WHERE plan_id = ? AND state = ?")
      .bind_all(to_string(to), now(), plan_id, to_string(from))
      .run();
  if (db_.changes() != int64_t(moved.size()))
    throw Error(Errc::io, "plan '" + plan_id + "': " + std::to_string(db_.changes()) + " task(s) moved where " +
                              std::to_string(moved.size()) + " were read; the transaction is rolled back");
  std::sort(moved.begin(), moved.end(), [](const Task& a, const Task& b) { return a.id < b.id; });
  for (const auto& t : moved)
    audit({"task." + std::string(to_string(to)), "task:" + t.id, std::string(to_string(to)), "", task_step_details(t, from, {})});
  return moved.size();
}

// Locks follow tasks: the lock a task worked under goes when the task ends
// and no other open task of its set or restore works under it (a set with one
// task queued for an offline agent blocks nothing else). A cluster restore
// keeps its lock from step to step: the next step's tasks are made (by the
// ended hook, before this runs) in the transaction that ends the last one.
void Tx::release_task_lock(const Task& task) {
  // A restore in steps holds its locks (the cluster's, or each broker's)
  // from its first step to its end: between two steps a member has no open
  // task, and a backup or another restore must not slip in there.
  if (task.restore_step != cairn::v1::RESTORE_STEP_ALL) return;
  const bool is_set = task.backup_set_id.has_value();
  const std::string& owner = is_set ? *task.backup_set_id : *task.restore_id;
  std::string target;
  if (!task.cluster_id.empty()) {
    std::string driver;
    for (const auto& c : agent_components(task.agent_id))
      if (c.name == task.component) driver = c.driver;
    auto s = db_.prepare("SELECT target FROM locks WHERE holder = ? AND target = ?");
    s.bind_all(owner, "cluster:" + driver + "/" + task.cluster_id);
    if (s.step()) target = s.text(0);
  }
  if (target.empty()) target = task.agent_id + "/" + task.component;
  const bool cluster = target.rfind("cluster:", 0) == 0;
  // An agent's open tasks are found through its own index: through the
  // set's (backup_set_id, state) index, SQLite 3.40 read every open task of
  // the set for every task that ended, 50 million rows for a set over 10,000
  // agents, and the controller fell so far behind that agents' messages went
  // unread past their liveness (docs/benchmarks.md, the fleet on 16 CPUs).
  // A cluster's tasks are a few per set: the set's index is right for them.
  auto open = db_.prepare(cluster ? std::string("SELECT 1 FROM tasks WHERE ") + (is_set ? "backup_set_id" : "restore_id") +
                                        " = ?1 AND state IN ('pending', 'sent', 'accepted', 'running') AND component = ?2"
                                        " AND cluster_id = ?3 LIMIT 1"
                                  : std::string(is_set ? sql::kOpenTaskOfAgentInSet : sql::kOpenTaskOfAgentInRestore));
  open.bind_all(owner, task.component, cluster ? task.cluster_id : task.agent_id);
  if (open.step()) return;
  // Members waiting for their cluster (a restore's after_clusters) are not
  // tasks yet; their own locks are theirs, not this task's.
  release_lock(target, owner);
}

void Tx::finish_owner_if_done(const Task& task) {
  bool is_set = task.backup_set_id.has_value();
  const std::string& owner = is_set ? *task.backup_set_id : *task.restore_id;
  // Most results leave other tasks open: say so from the index, without
  // reading the set's tasks (a result each from 1,000 agents would read a
  // million rows).
  auto open =
      db_.prepare(is_set ? "SELECT 1 FROM tasks WHERE backup_set_id = ? AND state IN ('pending', 'sent', 'accepted', 'running') LIMIT 1"
                         : "SELECT 1 FROM tasks WHERE restore_id = ? AND state IN ('pending', 'sent', 'accepted', 'running') LIMIT 1");
  if (open.bind(1, owner).step()) return;
  std::vector<TaskState> states;
  std::map<std::string, int> counts;
  bool cluster_step_failed = false;
  const bool drill = !is_set && owner.rfind("dr-", 0) == 0;
  nlohmann::json drill_failures = nlohmann::json::array();
  for (const auto& t : is_set ? tasks_of_set(owner) : tasks_of_restore(owner)) {
    if (drill && t.state != TaskState::succeeded)
      drill_failures.push_back({{"task_id", t.id},
                                {"component", t.component},
                                {"reason", t.reasons.empty() ? std::string(to_string(t.state)) : t.reasons.front().detail}});
    states.push_back(t.state);
    ++counts[std::string(to_string(t.state))];
    // A commit that failed on a member leaves its record of this restore
    // there, which no other restore acts on: every member was verified on
    // the restored data, so the restore still reads complete.
    if (t.restore_step == cairn::v1::RESTORE_STEP_COMMIT && is_terminal(t.state) && t.state != TaskState::succeeded) {
      states.back() = TaskState::succeeded;
      continue;
    }
    if (t.restore_step != cairn::v1::RESTORE_STEP_ALL && is_terminal(t.state) && t.state != TaskState::succeeded &&
        t.state != TaskState::partial)
      cluster_step_failed = true;
  }
  SetState state = derive_set_state(states);
  if (state == SetState::running) return;
  // A cluster restore is one operation: a step that failed on one member
  // fails it, even when the other members (and the rollback) succeeded.
  if (cluster_step_failed) state = SetState::failed;
  std::string table = is_set ? "backup_sets" : "restores";
  db_.prepare("UPDATE " + table + " SET state = ?, finished_at = ? WHERE id = ? AND state = 'running'")
      .bind_all(to_string(state), now(), owner)
      .run();
  if (db_.changes() == 0) return;
  // The work under these locks is over; a stale lock would block the next run.
  db_.prepare("DELETE FROM locks WHERE holder = ?").bind(1, owner).run();
  int64_t released = db_.changes();
  if (drill) {
    // Loud when it failed: the audit trail names what failed and why (docs/drills.md).
    audit({"drill.finish", "drill:" + owner, std::string(to_string(state)), "", {{"tasks", counts}, {"failures", drill_failures}}});
    return;
  }
  audit({is_set ? "backup.finish" : "restore.finish",
         (is_set ? "backup_set:" : "restore:") + owner,
         std::string(to_string(state)),
         "",
         {{"tasks", counts}, {"locks_released", released}}});
  // Its signed record is written to its repositories (set_records.cc).
  if (is_set) db_.prepare("INSERT OR IGNORE INTO set_records_due (set_id) VALUES (?)").bind(1, owner).run();
}

void Tx::set_task_progress(const std::string& task_id, const TaskProgress& p) {
  db_.prepare(
         "UPDATE tasks SET phase = ?, bytes_done = ?, bytes_total = ?, files_done = ?, files_total = ?,"
         " current_item = ?, progress_at = ?, updated_at = ? WHERE id = ? AND state IN ('accepted', 'running')")
      .bind_all(int64_t(p.phase), int64_t(p.bytes_done), int64_t(p.bytes_total), int64_t(p.files_done), int64_t(p.files_total),
                p.current_item, p.at.value_or(now_ms_), now(), task_id)
      .run();
  // The store's counts so far, shown while the task runs (its result sets the final ones).
  if (p.storage_requests || p.storage_retries)
    db_.prepare("UPDATE tasks SET storage_requests = ?, storage_retries = ? WHERE id = ? AND state IN ('accepted', 'running')")
        .bind_all(int64_t(p.storage_requests), int64_t(p.storage_retries), task_id)
        .run();
}

}  // namespace cairn::catalog
