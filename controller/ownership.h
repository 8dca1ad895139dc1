#pragma once
// Which agent a message speaks for (docs/protocol.md § Ownership). Every task
// and plan id an agent's message names is checked here, against the catalog,
// before the fleet changes any state for it: the keys of one agent give no
// power over another agent's tasks.
#include <set>
#include <string>
#include <vector>

#include "controller/catalog/tx.h"
#include "proto/cairn.pb.h"

namespace cairn::controller {

// The ids a message names, by kind: Register and Heartbeat running_task_ids,
// Progress and TaskResult task_id (and plan_id when set), PlanAck plan_id
// (when set).
struct Claims {
  std::vector<std::string> tasks;
  std::vector<std::string> plans;
  bool empty() const { return tasks.empty() && plans.empty(); }
};
Claims claims_of(const cairn::v1::AgentMessage& m);

struct Ownership {
  std::set<std::string> foreign;  // ids of another agent's tasks and plans
  std::set<std::string> unknown;  // ids the catalog does not know
  bool owned(const std::string& id) const { return !foreign.count(id) && !unknown.count(id); }
  bool all_owned() const { return foreign.empty() && unknown.empty(); }
};
Ownership check_ownership(const catalog::Tx& tx, const std::string& agent_id, const Claims& claims);

}  // namespace cairn::controller
