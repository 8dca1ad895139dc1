#pragma once
// Settings of the prometheus driver, as declared in a [[component]] table
// (docs/configuration.md § prometheus):
//   url = "http://127.0.0.1:9090"                       (optional)
//   data_dir = "/var/lib/prometheus/metrics2"           (required: its --storage.tsdb.path)
//   config_files = ["/etc/prometheus/prometheus.yml"]   (optional: rule files, file_sd targets too)
//   service = "prometheus.service"                      (required for restores; see service_settings.h)
#include <memory>
#include <string>
#include <vector>

#include "agent/config_reader.h"
#include "agent/driver.h"
#include "agent/platform/service.h"

namespace cairn::agent::prometheus {

struct Settings {
  std::string url = "http://127.0.0.1:9090";  // no trailing '/'; may carry a --web.route-prefix
  std::string data_dir;                       // absolute, no trailing '/'
  std::vector<std::string> config_files;      // absolute files or directories
  platform::ServiceDecl service;
};

Settings parse_settings(TableReader& r);
std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component);

}  // namespace cairn::agent::prometheus
