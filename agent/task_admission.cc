#include "agent/task_admission.h"

#include <algorithm>

namespace cairn::agent {

namespace v1 = cairn::v1;

namespace {
Admission refuse(v1::ErrorCode code, const std::string& detail) {
  Admission a;
  a.refusal.set_code(code);
  a.refusal.set_detail(detail);
  return a;
}
}  // namespace

Admission admit_task(const AgentConfig& config, const std::string& plan_id, const v1::Task& task) {
  if (task.kind() == v1::TASK_KIND_DRILL) {
    // A drill names no component of this agent: it restores into a sandbox
    // under [drill] root, and only there (docs/drills.md).
    if (!config.drill)
      return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "agent '" + config.name + "' declares no [drill] section: it runs no drills");
    // A driver of this build that provides a drill (the registry's); whether
    // this host has its tools is the drill's to say.
    if (!config.drill->drill(task.drill_driver()))
      return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "this agent cannot drill driver '" + task.drill_driver() + "'");
    if (task.snapshot().snapshot_id().empty()) return refuse(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "the drill task names no snapshot");
    const RepositoryDecl* r = task.snapshot().repository().empty() ? (config.repositories.empty() ? nullptr : &config.repositories.front())
                                                                   : config.repository(task.snapshot().repository());
    if (!r)
      return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "repository '" + task.snapshot().repository() + "' is not declared on agent '" +
                                                         config.name + "': a drill agent declares the repositories it drills from");
    // A Kafka cluster's brokers are read from the task's repository, this
    // task's snapshot among them.
    bool self_listed = task.drill_members().empty();
    for (const auto& m : task.drill_members()) {
      if (m.repository() != task.snapshot().repository())
        return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "the drill's brokers are in more than one repository ('" +
                                                           task.snapshot().repository() + "', '" + m.repository() +
                                                           "'): a cluster is drilled from one");
      self_listed = self_listed || m.snapshot_id() == task.snapshot().snapshot_id();
    }
    for (const auto& z : task.drill_zookeeper())
      if (z.repository() != task.snapshot().repository())
        return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "the drill's ZooKeeper snapshot is in repository '" + z.repository() +
                                                           "', its brokers in '" + task.snapshot().repository() +
                                                           "': a cluster is drilled from one");
    if (!self_listed) return refuse(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "the drill task's snapshot is not among the brokers it lists");
    Admission a;
    a.task = AdmittedTask{plan_id, task, nullptr, r};
    return a;
  }
  const ComponentDecl* c = config.component(task.component());
  if (!c)
    return refuse(v1::ERROR_CODE_UNKNOWN_COMPONENT, "component '" + task.component() + "' is not declared on agent '" + config.name + "'");
  DriverCaps caps = c->driver->capabilities();
  // The mode is one the driver declares (the first is its default).
  const std::string& mode = task.options().mode();
  if (!mode.empty() && std::find(caps.modes.begin(), caps.modes.end(), mode) == caps.modes.end()) {
    std::string known;
    for (const auto& m : caps.modes) known += (known.empty() ? "'" : ", '") + m + "'";
    return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + c->name + "' (driver '" + c->driver_name + "') has no mode '" + mode +
                                                       "'" + (known.empty() ? std::string(" (it takes none)") : "; it takes " + known));
  }
  std::string repo_name;
  if (task.kind() == v1::TASK_KIND_BACKUP) {
    if (!caps.backup) return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "driver '" + c->driver_name + "' cannot back up");
    if (!task.options().restore_target().empty() || task.options().skip_safety_backup())
      return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "a backup task takes no restore options");
    repo_name = task.options().repository().empty() ? c->repository : task.options().repository();
  } else if (task.kind() == v1::TASK_KIND_RESTORE) {
    if (!caps.restore) return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "driver '" + c->driver_name + "' cannot restore");
    if (task.snapshot().snapshot_id().empty()) return refuse(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "the restore task names no snapshot");
    const std::string& step = task.options().restore_step();
    if (!step.empty() && !proto::restore_step_from_name(step))
      return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "unknown restore step '" + step + "'");
    if (!step.empty() && caps.scope != "cluster" && caps.scope != "member")
      return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK,
                    "component '" + c->name + "' (driver '" + c->driver_name + "') is restored in one task, not in cluster steps");
    const std::string& target = task.options().restore_target();
    if (!target.empty() && !c->driver->has_restore_target(target))
      return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + c->name + "' declares no restore target '" + target + "'");
    repo_name = task.snapshot().repository().empty() ? c->repository : task.snapshot().repository();
  } else {
    return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "task '" + task.task_id() + "' has no known kind");
  }
  const RepositoryDecl* r = config.repository(repo_name);
  if (!r) return refuse(v1::ERROR_CODE_UNSUPPORTED_TASK, "repository '" + repo_name + "' is not declared on agent '" + config.name + "'");
  Admission a;
  a.task = AdmittedTask{plan_id, task, c, r};
  return a;
}

}  // namespace cairn::agent
