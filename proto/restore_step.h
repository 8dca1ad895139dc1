#pragma once
// The steps of a restore (RestoreStep in restore_step.proto) and their names: the
// one table between the enum the agent and the controller work with and the
// text the wire (TaskOptions.restore_step, TaskInfo.restore_step), the
// catalog (tasks.restore_step) and the agent's failpoints carry.
#include <optional>
#include <string>
#include <string_view>

#include "proto/restore_step.pb.h"

namespace cairn::proto {

// The name a step travels and is stored by: "preflight", "stop", ...; ""
// for RESTORE_STEP_ALL (no step: the whole restore in one task).
const char* restore_step_name(cairn::v1::RestoreStep s);
// The name for logs, metrics and failpoints: as restore_step_name, but
// "all" for RESTORE_STEP_ALL.
const char* step_label(cairn::v1::RestoreStep s);
// "stop" -> RESTORE_STEP_STOP; "" -> RESTORE_STEP_ALL; nullopt for a name
// this build does not know (from a newer peer, or not a step at all).
std::optional<cairn::v1::RestoreStep> restore_step_from_name(std::string_view name);
// Steps in the order they run, commit, halt and rollback last (1 for
// preflight ... 8 for rollback); 0 for RESTORE_STEP_ALL. Of a member's
// tasks made within one second, the highest rank is its latest step.
int restore_step_rank(cairn::v1::RestoreStep s);

}  // namespace cairn::proto
