#pragma once
// Task states, the transitions allowed between them, and the one rule that
// turns task states into a backup set's (or restore's) outcome.
#include <optional>
#include <span>
#include <string_view>

namespace cairn::catalog {

//   pending -> sent -> accepted -> running -> succeeded | partial | failed
//                   -> rejected
//   pending | sent -> missed            (plan expired before an answer)
//   pending | sent | accepted | running -> failed   (agent lost, revoked, ...)
//   accepted -> succeeded | partial     (work finished before any progress)
enum class TaskState { pending, sent, accepted, rejected, running, succeeded, partial, failed, missed };

// complete: every task succeeded. partial: some data was saved (a task
// succeeded or was partial) but not all. failed: no task saved anything.
enum class SetState { running, complete, partial, failed };

std::string_view to_string(TaskState s);
std::string_view to_string(SetState s);
std::optional<TaskState> parse_task_state(std::string_view s);
std::optional<SetState> parse_set_state(std::string_view s);

bool is_terminal(TaskState s);
bool can_transition(TaskState from, TaskState to);
// Terminal states other than succeeded must carry at least one reason.
bool needs_reason(TaskState s);

// The one place the rule lives: `running` while any task is not terminal;
// `complete` only if every task succeeded; `partial` if at least one task
// succeeded or was partial; otherwise `failed`. An empty set is `failed`:
// success is never reported for data that was not saved.
SetState derive_set_state(std::span<const TaskState> tasks);

}  // namespace cairn::catalog
