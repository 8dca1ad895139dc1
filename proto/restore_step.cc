#include "proto/restore_step.h"

#include <array>
#include <utility>

namespace cairn::proto {

namespace {

using cairn::v1::RestoreStep;

// Every step and its name, in the order a cluster restore runs them.
constexpr std::array<std::pair<RestoreStep, const char*>, 9> kNames = {{
    {cairn::v1::RESTORE_STEP_ALL, ""},
    {cairn::v1::RESTORE_STEP_PREFLIGHT, "preflight"},
    {cairn::v1::RESTORE_STEP_STOP, "stop"},
    {cairn::v1::RESTORE_STEP_DATA, "data"},
    {cairn::v1::RESTORE_STEP_START, "start"},
    {cairn::v1::RESTORE_STEP_VERIFY, "verify"},
    {cairn::v1::RESTORE_STEP_COMMIT, "commit"},
    {cairn::v1::RESTORE_STEP_ROLLBACK, "rollback"},
    {cairn::v1::RESTORE_STEP_HALT, "halt"},
}};

}  // namespace

const char* restore_step_name(RestoreStep s) {
  for (const auto& [step, name] : kNames)
    if (step == s) return name;
  return "?";
}

int restore_step_rank(RestoreStep step) {
  switch (step) {
    case cairn::v1::RESTORE_STEP_PREFLIGHT:
      return 1;
    case cairn::v1::RESTORE_STEP_STOP:
      return 2;
    case cairn::v1::RESTORE_STEP_DATA:
      return 3;
    case cairn::v1::RESTORE_STEP_START:
      return 4;
    case cairn::v1::RESTORE_STEP_VERIFY:
      return 5;
    case cairn::v1::RESTORE_STEP_COMMIT:
      return 6;
    case cairn::v1::RESTORE_STEP_HALT:
      return 7;
    case cairn::v1::RESTORE_STEP_ROLLBACK:
      return 8;
    default:
      return 0;
  }
}

const char* step_label(RestoreStep s) { return s == cairn::v1::RESTORE_STEP_ALL ? "all" : restore_step_name(s); }

std::optional<RestoreStep> restore_step_from_name(std::string_view name) {
  for (const auto& [step, n] : kNames)
    if (name == n) return step;
  return std::nullopt;
}

}  // namespace cairn::proto
