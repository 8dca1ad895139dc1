// The ownership check of every id an agent names (see ownership.h).
#include "controller/ownership.h"

namespace cairn::controller {

Claims claims_of(const cairn::v1::AgentMessage& m) {
  using M = cairn::v1::AgentMessage;
  Claims c;
  auto plan = [&](const std::string& id) {
    if (!id.empty()) c.plans.push_back(id);
  };
  switch (m.body_case()) {
    case M::kRegister:
      c.tasks.assign(m.register_().running_task_ids().begin(), m.register_().running_task_ids().end());
      break;
    case M::kHeartbeat:
      c.tasks.assign(m.heartbeat().running_task_ids().begin(), m.heartbeat().running_task_ids().end());
      break;
    case M::kProgress:
      c.tasks.push_back(m.progress().task_id());
      plan(m.progress().plan_id());
      break;
    case M::kTaskResult:
      c.tasks.push_back(m.task_result().task_id());
      plan(m.task_result().plan_id());
      break;
    case M::kPlanAck:
      // Empty when the agent refused the bytes before parsing them; the
      // envelope digest is then matched among this agent's own plans only.
      plan(m.plan_ack().plan_id());
      break;
    default:
      break;
  }
  return c;
}

Ownership check_ownership(const catalog::Tx& tx, const std::string& agent_id, const Claims& claims) {
  Ownership o;
  for (const auto& id : claims.tasks) {
    auto t = tx.task(id);
    if (!t)
      o.unknown.insert(id);
    else if (t->agent_id != agent_id)
      o.foreign.insert(id);
  }
  for (const auto& id : claims.plans) {
    auto p = tx.plan(id);
    if (!p)
      o.unknown.insert(id);
    else if (p->agent_id != agent_id)
      o.foreign.insert(id);
  }
  return o;
}

}  // namespace cairn::controller
