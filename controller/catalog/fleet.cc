// Helpers for the controller's fleet socket and operator API: plan delivery,
// agent identity at Register, and the counts `cairnctl status` shows.
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"

namespace cairn::catalog {
namespace {

PlanRecord read_plan(const sqlite::Stmt& s) {
  PlanRecord p;
  p.id = s.text(0);
  p.agent_id = s.text(1);
  p.sequence = uint64_t(s.integer(2));
  p.key_id = s.text(3);
  p.expires_at = s.integer(4);
  p.state = s.text(5);
  if (!s.is_null(6)) p.envelope = s.blob(6);
  return p;
}

constexpr const char* kPlanColumns = "SELECT id, agent_id, sequence, key_id, expires_at, state, envelope FROM plans ";

}  // namespace

std::optional<std::string> Tx::active_operator_name(const CurveKey& key) const {
  auto s = db_.prepare("SELECT name FROM operators WHERE curve_public_key = ? AND state = 'active'");
  s.bind(1, std::span<const uint8_t>(key));
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

void Tx::update_agent_identity(const std::string& agent_id, const std::string& name, const std::string& hostname,
                               const std::string& agent_version) {
  auto a = agent(agent_id);
  if (!a) throw Error(Errc::not_found, "no agent '" + agent_id + "'");
  if (name.empty()) throw Error(Errc::invalid_input, "an agent needs a name");
  if (a->name != name) {
    auto other = agent(name);
    if (other && other->id != a->id) throw Error(Errc::exists, "an agent named '" + name + "' is already enrolled with another key");
  }
  if (a->name == name && a->hostname == hostname && a->agent_version == agent_version) return;
  db_.prepare("UPDATE agents SET name = ?, hostname = ?, agent_version = ? WHERE id = ?")
      .bind_all(name, hostname, agent_version, a->id)
      .run();
  if (a->name != name) audit({"agent.rename", "agent:" + a->id, "ok", "", {{"from", a->name}, {"to", name}, {"hostname", hostname}}});
}

void Tx::set_plan_envelope(const std::string& plan_id, std::span<const uint8_t> envelope) {
  db_.prepare("UPDATE plans SET envelope = ? WHERE id = ?").bind_all(envelope, plan_id).run();
  if (db_.changes() != 1) throw Error(Errc::not_found, "no plan '" + plan_id + "'");
}

std::optional<PlanRecord> Tx::plan(const std::string& plan_id) const {
  auto s = db_.prepare(std::string(kPlanColumns) + "WHERE id = ?");
  s.bind(1, plan_id);
  if (!s.step()) return std::nullopt;
  return read_plan(s);
}

std::vector<PlanRecord> Tx::undelivered_plans(const std::string& agent_id) const {
  // "+expires_at": not an index term, so the agent's own plans are searched
  // (plans_agent_open), not every issued plan of the fleet (plans_open).
  auto s = db_.prepare(std::string(kPlanColumns) +
                       "WHERE agent_id = ? AND state = 'issued' AND +expires_at > ? AND envelope IS NOT NULL"
                       " AND EXISTS (SELECT 1 FROM tasks WHERE tasks.plan_id = plans.id AND tasks.state = 'pending')"
                       " ORDER BY sequence");
  s.bind_all(agent_id, now());
  std::vector<PlanRecord> out;
  while (s.step()) out.push_back(read_plan(s));
  return out;
}

std::vector<PlanRecord> Tx::issued_plans(const std::string& agent_id) const {
  auto s = db_.prepare(std::string(kPlanColumns) + "WHERE agent_id = ? AND state = 'issued' ORDER BY sequence");
  s.bind(1, agent_id);
  std::vector<PlanRecord> out;
  while (s.step()) out.push_back(read_plan(s));
  return out;
}

std::vector<PlanRecord> Tx::all_issued_plans() const {
  auto s = db_.prepare(std::string(kPlanColumns) + "WHERE state = 'issued' ORDER BY agent_id, sequence");
  std::vector<PlanRecord> out;
  while (s.step()) out.push_back(read_plan(s));
  return out;
}

void Tx::resign_plan(const std::string& plan_id, const std::string& key_id, std::span<const uint8_t> envelope) {
  db_.prepare("UPDATE plans SET envelope = ?, key_id = ? WHERE id = ? AND state = 'issued'").bind_all(envelope, key_id, plan_id).run();
  if (db_.changes() != 1) throw Error(Errc::not_found, "no issued plan '" + plan_id + "'");
  audit({"plan.resign", "plan:" + plan_id, "ok", "", {{"key_id", key_id}}});
}

std::vector<Task> Tx::agent_tasks(const std::string& agent_id, std::span<const TaskState> states) const {
  std::vector<std::string> ids;
  {
    auto s = db_.prepare("SELECT id, state FROM tasks WHERE agent_id = ? ORDER BY created_at, id");
    s.bind(1, agent_id);
    while (s.step()) {
      auto st = parse_task_state(s.text(1));
      for (auto want : states)
        if (st && *st == want) ids.push_back(s.text(0));
    }
  }
  std::vector<Task> out;
  for (const auto& id : ids)
    if (auto t = task(id)) out.push_back(std::move(*t));
  return out;
}

int64_t Tx::audit_outbox_pending() const {
  auto s = db_.prepare("SELECT count(*) FROM audit_outbox WHERE published_at IS NULL");
  return s.step() ? s.integer(0) : 0;
}

size_t Tx::running_backup_sets() const {
  auto s = db_.prepare("SELECT count(*) FROM backup_sets WHERE state = 'running'");
  return s.step() ? size_t(s.integer(0)) : 0;
}

std::optional<std::string> Tx::restore_of_safety_set(const std::string& backup_set_id) const {
  auto s = db_.prepare("SELECT id FROM restores WHERE safety_set_id = ?");
  s.bind(1, backup_set_id);
  if (!s.step()) return std::nullopt;
  return s.text(0);
}

std::vector<Restore> Tx::restores_of_set(const std::string& backup_set_id) const {
  std::vector<std::string> ids;
  {
    auto s = db_.prepare("SELECT id FROM restores WHERE source_set_id = ? ORDER BY created_at, id");
    s.bind(1, backup_set_id);
    while (s.step()) ids.push_back(s.text(0));
  }
  std::vector<Restore> out;
  for (const auto& id : ids)
    if (auto r = restore(id)) out.push_back(std::move(*r));
  return out;
}

}  // namespace cairn::catalog
