#pragma once
// The zookeeper driver's restore drill (drill.cc; docs/drills.md), and the
// standalone server it starts, which a Kafka drill in ZooKeeper mode starts
// beside the brokers.
#include <atomic>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "agent/config.h"
#include "agent/config_reader.h"
#include "agent/drill_support.h"
#include "agent/driver.h"
#include "agent/drivers/zookeeper/four_letter.h"
#include "agent/sandbox/sandbox.h"

namespace cairn::agent::zookeeper {

// The drill with its [drill] keys read from `drill_table` (their defaults
// when null); refuses a bad value with a ConfigError.
std::shared_ptr<const DriverDrill> make_drill(TableReader* drill_table);

// The ZooKeeper jar the drills of this agent start ([drill] zookeeper_jar).
std::string drill_jar(const DrillDecl& d);

}  // namespace cairn::agent::zookeeper

namespace cairn::agent::drill_internal {

// A standalone ZooKeeper server on a ZooKeeper backup's restored snapshot
// and transaction logs, at 127.0.0.1:2181 of the sandbox's namespace. Its
// status once it serves; nullopt when it did not (rep says why). `recorded`
// gets the zxid the backup recorded.
std::optional<zookeeper::ServerStatus> start_zookeeper(const DrillDecl& d, Sandbox& box, const nlohmann::json& rec,
                                                       const std::string& restored, DrillReport& rep, const std::atomic<bool>* cancel,
                                                       Clock::time_point started, uint64_t* recorded);

}  // namespace cairn::agent::drill_internal
