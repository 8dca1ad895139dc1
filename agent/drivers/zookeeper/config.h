#pragma once
// Settings of the zookeeper driver, as declared in a [[component]] table
// (docs/configuration.md § zookeeper):
//   data_dir = "/var/lib/zookeeper"                  (required; zoo.cfg's dataDir)
//   data_log_dir = "/var/lib/zookeeper-log"          (optional; zoo.cfg's dataLogDir, default data_dir)
//   config_file = "/etc/zookeeper/conf/zoo.cfg"      (optional, this default)
//   client_address = "127.0.0.1:2181"                (optional; from zoo.cfg's clientPortAddress/clientPort)
//   cluster_id = "orders-zk"                         (optional; derived from zoo.cfg's server list)
//   service = "zookeeper.service"                    (a systemd unit, or a table:)
//   service = { start_command = ["/usr/local/bin/zk", "start"],   (agent/drivers/service_settings.h)
//               stop_command = ["/usr/local/bin/zk", "stop"], timeout_seconds = 120 }
//   ready_timeout_seconds = 120
#include <chrono>
#include <memory>
#include <string>

#include "agent/config_reader.h"
#include "agent/driver.h"
#include "agent/platform/service.h"

namespace cairn::agent::zookeeper {

struct Settings {
  std::string data_dir;
  std::string data_log_dir;  // = data_dir when not declared
  std::string config_file = "/etc/zookeeper/conf/zoo.cfg";
  std::string client_address;  // empty: from zoo.cfg
  std::string cluster_id;      // empty: derived
  platform::ServiceDecl service;
  std::chrono::seconds ready_timeout{120};
};

Settings parse_settings(TableReader& r);
std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component);

}  // namespace cairn::agent::zookeeper
