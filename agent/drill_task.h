#pragma once
// Restore drills (docs/drills.md): a snapshot restored into a sandbox under
// the agent's [drill] root (agent/sandbox/sandbox.h), the component started
// there in a network namespace of its own with only loopback by its driver's
// drill (DriverDrill, agent/drivers/<name>/drill.cc), checked with its own
// tools against what the backup recorded, and the sandbox torn down.
// Nothing the live service uses is read or written but the repository.
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/driver.h"
#include "agent/sandbox/sandbox.h"  // clean_drill_root

namespace cairn::agent {

// The drivers of the registry that provide a drill (DrillDecl::drills) whose
// tools this host has ("files", "etcd"), in the registry's order: announced
// to the controller as features "drill:<driver>".
std::vector<std::string> drillable_drivers(const DrillDecl& d);

// Runs one drill task (Task.kind DRILL): ctx.repo is open on the snapshot's
// repository. The result's metadata is {"drill": {"phases": {name: seconds},
// "checks": [{"name", "expected", "found", "ok"}], "sandbox": path,
// "verdict": "proven" | "failed" | "not_run"}}; outcome SUCCEEDED only when
// every check passed, FAILED otherwise, with reasons naming what failed and
// where. "not_run": the drill could not run here (disk, deadline, cancel,
// what this agent cannot do): it proves nothing about the backup.
DriverResult run_drill(const DrillDecl& d, TaskContext& ctx, const cairn::v1::Task& task);

// The result of a drill of `driver` that ended before run_drill (its
// repository could not be opened): the same report, no phase run, reasons
// as given (at least one), outcome FAILED.
DriverResult drill_ended_early(const std::string& driver, std::vector<cairn::v1::Reason> reasons);

}  // namespace cairn::agent
