#include "controller/catalog/outcome.h"

#include <algorithm>
#include <array>

namespace cairn::catalog {
namespace {

constexpr std::array<std::string_view, 9> kTaskNames = {"pending",   "sent",    "accepted", "rejected", "running",
                                                        "succeeded", "partial", "failed",   "missed"};
constexpr std::array<std::string_view, 4> kSetNames = {"running", "complete", "partial", "failed"};

}  // namespace

std::string_view to_string(TaskState s) { return kTaskNames[size_t(s)]; }
std::string_view to_string(SetState s) { return kSetNames[size_t(s)]; }

std::optional<TaskState> parse_task_state(std::string_view s) {
  for (size_t i = 0; i < kTaskNames.size(); ++i)
    if (kTaskNames[i] == s) return TaskState(i);
  return std::nullopt;
}

std::optional<SetState> parse_set_state(std::string_view s) {
  for (size_t i = 0; i < kSetNames.size(); ++i)
    if (kSetNames[i] == s) return SetState(i);
  return std::nullopt;
}

bool is_terminal(TaskState s) {
  switch (s) {
    case TaskState::rejected:
    case TaskState::succeeded:
    case TaskState::partial:
    case TaskState::failed:
    case TaskState::missed:
      return true;
    default:
      return false;
  }
}

bool needs_reason(TaskState s) { return is_terminal(s) && s != TaskState::succeeded; }

bool can_transition(TaskState from, TaskState to) {
  using T = TaskState;
  switch (from) {
    case T::pending:
      return to == T::sent || to == T::missed || to == T::failed;
    case T::sent:
      return to == T::accepted || to == T::rejected || to == T::missed || to == T::failed;
    case T::accepted:
      return to == T::running || to == T::succeeded || to == T::partial || to == T::failed;
    case T::running:
      return to == T::succeeded || to == T::partial || to == T::failed;
    default:
      return false;  // terminal states stay
  }
}

SetState derive_set_state(std::span<const TaskState> tasks) {
  if (tasks.empty()) return SetState::failed;
  if (std::any_of(tasks.begin(), tasks.end(), [](TaskState s) { return !is_terminal(s); })) return SetState::running;
  if (std::all_of(tasks.begin(), tasks.end(), [](TaskState s) { return s == TaskState::succeeded; })) return SetState::complete;
  if (std::any_of(tasks.begin(), tasks.end(), [](TaskState s) { return s == TaskState::succeeded || s == TaskState::partial; }))
    return SetState::partial;
  return SetState::failed;
}

}  // namespace cairn::catalog
