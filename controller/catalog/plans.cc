// Plans: per-agent sequences, issue, acknowledgement and expiry.
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"
#include "proto/error_code.h"

namespace cairn::catalog {

uint64_t Tx::last_plan_sequence(const std::string& agent_id) const {
  auto s = db_.prepare("SELECT last_sequence FROM plan_sequences WHERE agent_id = ?");
  s.bind(1, agent_id);
  return s.step() ? uint64_t(s.integer(0)) : 0;
}

uint64_t Tx::issue_plan(const NewPlan& p) {
  auto a = agent(p.agent_id);
  if (!a) throw Error(Errc::not_found, "no agent '" + p.agent_id + "'");
  return issue_plan(*a, p);
}

uint64_t Tx::issue_plan(const Agent& a, const NewPlan& p) {
  if (a.id != p.agent_id)
    throw Error(Errc::invalid_input, "plan '" + p.plan_id + "' is for agent '" + p.agent_id + "', not '" + a.id + "'");
  if (a.state != AgentState::approved)
    throw Error(Errc::invalid_input,
                "agent '" + a.name + "' is " + std::string(to_string(a.state)) + ", not approved; no plan is issued to it");
  if (p.task_ids.empty()) throw Error(Errc::invalid_input, "plan '" + p.plan_id + "' has no tasks");
  if (p.expires_at <= p.not_before) throw Error(Errc::invalid_input, "plan '" + p.plan_id + "' expires before it becomes valid");

  uint64_t seq = last_plan_sequence(a.id) + 1;
  db_.prepare(
         "INSERT INTO plan_sequences (agent_id, last_sequence) VALUES (?1, ?2)"
         " ON CONFLICT(agent_id) DO UPDATE SET last_sequence = ?2")
      .bind_all(a.id, int64_t(seq))
      .run();
  db_.prepare(
         "INSERT INTO plans (id, agent_id, sequence, key_id, issued_at, not_before, expires_at, state)"
         " VALUES (?, ?, ?, ?, ?, ?, ?, 'issued')")
      .bind_all(p.plan_id, a.id, int64_t(seq), p.key_id, p.issued_at, p.not_before, p.expires_at)
      .run();
  auto bind_task = db_.prepare(
      "UPDATE tasks SET plan_id = ?, updated_at = ? WHERE id = ? AND agent_id = ? AND state = 'pending'"
      " AND plan_id IS NULL");
  for (const auto& id : p.task_ids) {
    bind_task.reset();
    bind_task.bind_all(p.plan_id, now(), id, a.id).run();
    if (db_.changes() != 1)
      throw Error(Errc::invalid_input, "task '" + id + "' is not a pending, unplanned task of agent '" + a.name + "'");
  }
  audit({"plan.issue",
         "plan:" + p.plan_id,
         "issued",
         "",
         {{"agent_id", a.id},
          {"sequence", seq},
          {"key_id", p.key_id},
          {"not_before", p.not_before},
          {"expires_at", p.expires_at},
          {"task_ids", p.task_ids}}});
  return seq;
}

void Tx::record_plan_ack(const std::string& plan_id, bool accepted, ErrorCode code, const std::string& detail) {
  auto s = db_.prepare("SELECT state FROM plans WHERE id = ?");
  s.bind(1, plan_id);
  if (!s.step()) throw Error(Errc::not_found, "no plan '" + plan_id + "'");
  if (s.text(0) != "issued")
    throw Error(Errc::invalid_input, "plan '" + plan_id + "' was already answered or expired ('" + s.text(0) + "')");
  if (!accepted && code == cairn::v1::ERROR_CODE_OK) code = cairn::v1::ERROR_CODE_MALFORMED_MESSAGE;
  db_.prepare("UPDATE plans SET state = ?, error_code = ?, detail = ? WHERE id = ?")
      .bind_all(std::string(accepted ? "accepted" : "rejected"), int64_t(accepted ? 0 : int(code)), detail, plan_id)
      .run();
  audit({accepted ? "plan.accept" : "plan.reject",
         "plan:" + plan_id,
         accepted ? "accepted" : "rejected",
         accepted ? "" : proto::error_code_name(code),
         {{"detail", detail}}});

  if (accepted) {
    move_plan_tasks(plan_id, TaskState::sent, TaskState::accepted);
    return;
  }
  // A rejection ends the tasks (with the reason; their set or restore may end too).
  std::vector<std::string> ids;
  {
    auto t = db_.prepare("SELECT id FROM tasks WHERE plan_id = ? AND state = 'sent' ORDER BY id");
    t.bind(1, plan_id);
    while (t.step()) ids.push_back(t.text(0));
  }
  for (const auto& id : ids) {
    TaskUpdate u;
    u.to = TaskState::rejected;
    u.reasons.push_back({code, detail, ""});
    update_task(id, u);
  }
}

std::vector<std::string> Tx::expire_plans() {
  std::vector<std::string> plans;
  {
    auto s = db_.prepare("SELECT id FROM plans WHERE state = 'issued' AND expires_at <= ? ORDER BY expires_at, id");
    s.bind(1, now());
    while (s.step()) plans.push_back(s.text(0));
  }
  for (const auto& plan_id : plans) {
    db_.prepare("UPDATE plans SET state = 'expired' WHERE id = ?").bind(1, plan_id).run();
    audit({"plan.expire", "plan:" + plan_id, "expired", "plan_missed", {}});
    std::vector<std::string> ids;
    {
      auto t = db_.prepare("SELECT id FROM tasks WHERE plan_id = ? AND state IN ('pending', 'sent') ORDER BY id");
      t.bind(1, plan_id);
      while (t.step()) ids.push_back(t.text(0));
    }
    for (const auto& id : ids) {
      TaskUpdate u;
      u.to = TaskState::missed;
      u.reasons.push_back(
          {cairn::v1::ERROR_CODE_PLAN_MISSED, "plan '" + plan_id + "' expired before the agent accepted it (agent offline?)", ""});
      update_task(id, u);
    }
  }
  return plans;
}

void Tx::raise_plan_sequence(const std::string& agent_id, uint64_t at_least) {
  uint64_t current = last_plan_sequence(agent_id);
  if (at_least <= current) return;
  db_.prepare(
         "INSERT INTO plan_sequences (agent_id, last_sequence) VALUES (?1, ?2)"
         " ON CONFLICT(agent_id) DO UPDATE SET last_sequence = ?2")
      .bind_all(agent_id, int64_t(at_least))
      .run();
  audit({"plan.sequence_raise", "agent:" + agent_id, "ok", "", {{"from", current}, {"to", at_least}}});
}

}  // namespace cairn::catalog
