#pragma once
// The opensearch driver's restore drill (drill.cc; docs/drills.md).
#include <memory>

#include "agent/config_reader.h"
#include "agent/driver.h"

namespace cairn::agent::opensearch {

// The drill with its [drill] key `opensearch` (the distribution's
// bin/opensearch launcher) read from `drill_table` (its default when null).
std::shared_ptr<const DriverDrill> make_drill(TableReader* drill_table);

}  // namespace cairn::agent::opensearch
