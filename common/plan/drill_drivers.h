#pragma once
// The drivers a restore drill can start and check (docs/drills.md): the
// controller orders drills of these only, and an agent admits drill tasks of
// these only (it runs one when it also finds the driver's tools).
#include <algorithm>
#include <array>
#include <string_view>

namespace cairn::plan {

inline constexpr std::array<std::string_view, 7> kDrillDrivers = {"files",   "etcd",       "zookeeper", "prometheus",
                                                                  "haproxy", "postgresql", "kafka"};

inline bool is_drill_driver(std::string_view driver) {
  return std::find(kDrillDrivers.begin(), kDrillDrivers.end(), driver) != kDrillDrivers.end();
}

}  // namespace cairn::plan
