#pragma once
// The `service` setting every driver that stops and starts its component
// reads the same way (docs/configuration.md § Service control):
//   service = "prometheus.service"                      (a systemd unit)
//   service = { unit = "prometheus.service", timeout_seconds = 300 }
//   service = { start_command = ["/usr/local/bin/prom-start"],
//               stop_command = ["/usr/local/bin/prom-stop"],
//               reload_command = [...], timeout_seconds = 60 }
// Commands are argv lists, run without a shell (agent/platform/process.h).
#include <string>

#include "agent/config_reader.h"
#include "agent/platform/service.h"

namespace cairn::agent {

// Reads `key` from the component's table; an empty ServiceDecl when absent.
// ConfigError names the file and line of what is wrong.
platform::ServiceDecl read_service(TableReader& r, const std::string& key = "service");

}  // namespace cairn::agent
