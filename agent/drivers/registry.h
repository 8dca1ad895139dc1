#pragma once
// The one explicit list of drivers (registry.cc). Adding a driver is a new
// folder under agent/drivers/ and one line in that list.
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agent/config_reader.h"
#include "agent/driver.h"

namespace cairn::agent {

struct DriverFactory {
  std::string_view name;
  // Reads the driver's settings from the component's table (the reader has
  // already consumed the generic keys) and refuses what it does not know
  // with a ConfigError; builds the driver for this one component.
  std::unique_ptr<Driver> (*make)(TableReader& settings, const std::string& component);
  // The driver's restore drill (agent/drivers/<name>/drill.h), null when it
  // has none: reads its own keys from the agent's [drill] table (their
  // defaults when the table is null) and refuses a bad value with a
  // ConfigError. What the agent can drill is derived from these.
  std::shared_ptr<const DriverDrill> (*drill)(TableReader* drill_table) = nullptr;
};

const std::vector<DriverFactory>& drivers();
const DriverFactory* find_driver(std::string_view name);
std::string driver_names();  // "'files'" etc., for error messages

}  // namespace cairn::agent
