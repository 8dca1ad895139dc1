#pragma once
// Which tasks of an accepted plan this agent will run. A signed plan proves
// who sent it, not that it is sensible: a task may only pick among the
// components, repositories and restore targets this agent declares. A task
// naming anything else is refused with a reason and never reaches a driver.
#include <optional>
#include <string>

#include "agent/config.h"
#include "proto/cairn.pb.h"

namespace cairn::agent {

struct AdmittedTask {
  std::string plan_id;
  cairn::v1::Task task;
  const ComponentDecl* component = nullptr;
  const RepositoryDecl* repository = nullptr;  // backup: where to; restore: where from
};

struct Admission {
  std::optional<AdmittedTask> task;  // set when admitted
  cairn::v1::Reason refusal;         // set otherwise
};

Admission admit_task(const AgentConfig& config, const std::string& plan_id, const cairn::v1::Task& task);

}  // namespace cairn::agent
