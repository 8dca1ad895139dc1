#pragma once
// Retention of a policy's backup sets: which sets go and which rule keeps
// each of the others. A pure function of the sets and the rules, so tests
// pin the times.
//
// The rules are restic's forget rules (common/repo/policy.h: last, hourly,
// daily, weekly, monthly, yearly, within), counted over backup sets, with the
// periods in the policy's time zone. Complete, partial and failed sets are
// three groups counted apart: a run of partial sets never uses up "last 7"
// and lets a complete set expire. `min` complete sets are always kept,
// whatever the rules say (the newest ones). A set still running, or one
// already forgotten, is not considered.
#include <cctz/time_zone.h>

#include <string>
#include <vector>

#include "controller/catalog/types.h"

namespace cairn::controller {

struct SetDecision {
  catalog::BackupSet set;
  std::string group;  // "complete", "partial" or "failed"
  bool keep = false;
  std::vector<std::string> reasons;  // why it is kept; empty when it goes
};

// Sets come newest first (sets of the same second in the order they were
// made, newest first) and go out in the same order. Throws
// cairn::Error(invalid_input) when the rules keep nothing at all (no rule set).
std::vector<SetDecision> decide_retention(const std::vector<catalog::BackupSet>& sets, const catalog::PolicyRetention& rules,
                                          const cctz::time_zone& tz);

// "last 7, daily 14, within 2d, min 7"
std::string describe(const catalog::PolicyRetention& rules);

}  // namespace cairn::controller
