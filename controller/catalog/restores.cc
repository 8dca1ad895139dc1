// Restores and operation locks.
#include <algorithm>
#include <map>

#include "common/util/error.h"
#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"
#include "proto/restore_step.h"

namespace cairn::catalog {

std::string Tx::create_restore(const NewRestore& r) {
  if (!backup_set(r.source_set_id)) throw Error(Errc::not_found, "no backup set '" + r.source_set_id + "'");
  if (r.tasks.empty()) throw Error(Errc::invalid_input, "a restore needs at least one task; the selection matched no component");
  for (const auto& t : r.tasks)
    if (!t.source_snapshot) throw Error(Errc::invalid_input, "restore task for '" + t.component + "' names no snapshot to read");
  std::string id = new_id(r.drill ? "dr" : "rs");
  db_.prepare(
         "INSERT INTO restores (id, source_set_id, safety_set_id, skip_safety_backup, created_at, requested_by,"
         " selector, state, kind) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', ?)")
      .bind_all(id, r.source_set_id, r.safety_set_id, int64_t(r.skip_safety_backup), now(), actor_, r.selector.dump(),
                std::string(r.drill ? "drill" : "restore"))
      .run();
  std::vector<std::string> ids;
  insert_tasks(r.tasks, TaskKind::restore, nullptr, &id, ids);
  nlohmann::json tasks = nlohmann::json::array();
  for (size_t i = 0; i < ids.size(); ++i)
    tasks.push_back({{"task_id", ids[i]},
                     {"agent_id", r.tasks[i].agent_id},
                     {"component", r.tasks[i].component},
                     {"snapshot_id", *r.tasks[i].source_snapshot}});
  nlohmann::json details = {
      {"source_set_id", r.source_set_id}, {"skip_safety_backup", r.skip_safety_backup}, {"selector", r.selector}, {"tasks", tasks}};
  if (r.safety_set_id) details["safety_set_id"] = *r.safety_set_id;
  if (r.drill)
    audit({"drill.create", "drill:" + id, "running", "", details});
  else
    audit({"restore.create", "restore:" + id, "running", "", details});
  return id;
}

std::vector<std::string> Tx::add_restore_tasks(const std::string& restore_id, const std::vector<NewTask>& tasks) {
  auto r = restore(restore_id);
  if (!r) throw Error(Errc::not_found, "no restore '" + restore_id + "'");
  if (r->state != SetState::running) throw Error(Errc::invalid_input, "restore '" + restore_id + "' has ended; no task can be added");
  std::vector<std::string> ids;
  insert_tasks(tasks, TaskKind::restore, nullptr, &restore_id, ids);
  nlohmann::json list = nlohmann::json::array();
  for (size_t i = 0; i < ids.size(); ++i)
    list.push_back({{"task_id", ids[i]},
                    {"agent_id", tasks[i].agent_id},
                    {"component", tasks[i].component},
                    {"step", proto::restore_step_name(tasks[i].restore_step)},
                    {"cluster_id", tasks[i].cluster_id}});
  audit({"restore.step", "restore:" + restore_id, "running", "", {{"tasks", list}}});
  return ids;
}

// A member's rollbacks in an ended restore owe it one when one was cancelled
// while the restore ran (the operator gave the absent member up) and none
// has since run to an end of its own: none open, succeeded, given up for
// good, or failed for a reason of the member's (its rollback ran and said
// why). A try lost with its agent or a plan that expired waiting still owes.
std::vector<Task> Tx::owed_rollbacks(const std::string& agent_id) const {
  std::vector<std::string> restore_ids;
  {
    auto s = db_.prepare(
        "SELECT DISTINCT t.restore_id FROM tasks t INDEXED BY tasks_agent_state JOIN restores r ON r.id = t.restore_id"
        " WHERE t.agent_id = ? AND t.state = 'failed' AND t.restore_step = 'rollback' AND r.state <> 'running'");
    s.bind(1, agent_id);
    while (s.step()) restore_ids.push_back(s.text(0));
  }
  std::vector<std::pair<int64_t, Task>> out;
  for (const auto& rid : restore_ids) {
    std::map<std::string, std::vector<Task>> by_component;
    for (auto& t : tasks_of_restore(rid))
      if (t.agent_id == agent_id && t.restore_step == cairn::v1::RESTORE_STEP_ROLLBACK) by_component[t.component].push_back(std::move(t));
    for (auto& [component, tries] : by_component) {
      bool cancelled = false, settled = false;
      for (const auto& t : tries) {
        auto has = [&](ErrorCode code, const char* detail = nullptr) {
          return std::any_of(t.reasons.begin(), t.reasons.end(),
                             [&](const Reason& r) { return r.code == code && (!detail || r.detail == detail); });
        };
        if (!is_terminal(t.state) || t.state == TaskState::succeeded || t.state == TaskState::partial ||
            has(cairn::v1::ERROR_CODE_CANCELLED, kOwedRollbackGivenUp))
          settled = true;
        else if (has(cairn::v1::ERROR_CODE_CANCELLED))
          cancelled = true;
        else if (t.state == TaskState::failed && !has(cairn::v1::ERROR_CODE_AGENT_LOST))
          settled = true;  // it ran and failed: reported, not made again
      }
      if (!cancelled || settled) continue;
      const Task* newest = &tries.front();
      for (const auto& t : tries)
        if (t.created_at > newest->created_at) newest = &t;
      out.emplace_back(restore(rid)->created_at, *newest);
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<Task> tasks;
  for (auto& [at, t] : out) tasks.push_back(std::move(t));
  return tasks;
}

std::string Tx::add_owed_rollback(const std::string& restore_id, const NewTask& task) {
  std::vector<std::string> ids;
  insert_tasks({task}, TaskKind::restore, nullptr, &restore_id, ids);
  audit({"restore.rollback_owed",
         "restore:" + restore_id,
         "owed",
         "",
         {{"task_id", ids.front()}, {"agent_id", task.agent_id}, {"component", task.component}, {"cluster_id", task.cluster_id}}});
  return ids.front();
}

std::optional<Restore> Tx::restore(const std::string& id) const {
  auto s = db_.prepare(
      "SELECT id, source_set_id, safety_set_id, skip_safety_backup, created_at, requested_by, selector, state,"
      " finished_at, kind FROM restores WHERE id = ?");
  s.bind(1, id);
  if (!s.step()) return std::nullopt;
  Restore r;
  r.id = s.text(0);
  r.source_set_id = s.text(1);
  if (!s.is_null(2)) r.safety_set_id = s.text(2);
  r.skip_safety_backup = s.integer(3) != 0;
  r.created_at = s.integer(4);
  r.requested_by = s.text(5);
  r.selector = nlohmann::json::parse(s.text(6), nullptr, false);
  r.state = parse_set_state(s.text(7)).value_or(SetState::failed);
  if (!s.is_null(8)) r.finished_at = s.integer(8);
  r.kind = s.text(9);
  return r;
}

bool Tx::acquire_lock(const std::string& target, TaskKind kind, const std::string& holder, int64_t ttl_seconds) {
  std::string kind_name = kind == TaskKind::backup ? "backup" : "restore";
  std::optional<std::string> held_by, held_kind;
  int64_t held_until = 0;
  {
    auto s = db_.prepare("SELECT kind, holder, expires_at FROM locks WHERE target = ?");
    s.bind(1, target);
    if (s.step()) {
      held_kind = s.text(0);
      held_by = s.text(1);
      held_until = s.integer(2);
    }
  }
  if (held_by && *held_by != holder) {
    if (held_until > now()) return false;
    // Taking over an expired lock is itself an event worth keeping.
    audit({"lock.expire", "lock:" + target, "expired", "", {{"holder", *held_by}, {"kind", *held_kind}}});
  }
  db_.prepare(
         "INSERT INTO locks (target, kind, holder, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)"
         " ON CONFLICT(target) DO UPDATE SET kind = ?2, holder = ?3, acquired_at = ?4, expires_at = ?5")
      .bind_all(target, kind_name, holder, now(), now() + ttl_seconds)
      .run();
  audit({"lock.acquire", "lock:" + target, "ok", "", {{"holder", holder}, {"kind", kind_name}, {"expires_at", now() + ttl_seconds}}});
  return true;
}

std::optional<std::pair<std::string, std::string>> Tx::lock_holder(const std::string& target) const {
  auto s = db_.prepare("SELECT kind, holder FROM locks WHERE target = ?");
  s.bind(1, target);
  if (!s.step()) return std::nullopt;
  return std::make_pair(s.text(0), s.text(1));
}

void Tx::release_lock(const std::string& target, const std::string& holder) {
  db_.prepare("DELETE FROM locks WHERE target = ? AND holder = ?").bind_all(target, holder).run();
  if (db_.changes() == 0) return;
  audit({"lock.release", "lock:" + target, "ok", "", {{"holder", holder}}});
}

}  // namespace cairn::catalog
