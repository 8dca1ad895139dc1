#pragma once
// The etcd driver's restore drill (drill.cc; docs/drills.md).
#include <memory>

#include "agent/config_reader.h"
#include "agent/driver.h"

namespace cairn::agent::etcd {

// The drill with its [drill] keys read from `drill_table` (their defaults
// when null); refuses a bad value with a ConfigError.
std::shared_ptr<const DriverDrill> make_drill(TableReader* drill_table);

}  // namespace cairn::agent::etcd
