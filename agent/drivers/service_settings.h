#pragma once
// The `service` setting every driver that stops and starts its component
// reads the same way (docs/configuration.md § Service control):
//   service = "prometheus.service"                      (a systemd unit)
//   service = { unit = "prometheus.service", timeout_seconds = 300 }
//   service = { start_command = ["/usr/local/bin/prom-start"],
//               stop_command = ["/usr/local/bin/prom-stop"],
//               reload_command = [...], timeout_seconds = 60,
//               kill_command = ["/usr/local/bin/prom-kill"], kill_after_seconds = 60 }
// kill_after_seconds: a stop not finished by then is escalated to SIGKILL
// (kill_command, else systemd's KillUnit); 0 never escalates.
// Commands are argv lists, run without a shell (agent/platform/process.h).
#include <string>

#include "agent/config_reader.h"
#include "agent/platform/service.h"

namespace cairn::agent {

// Reads `key` from the component's table; an empty ServiceDecl when absent.
// ConfigError names the file and line of what is wrong.
// default_kill_after: the driver's escalation when the table sets no
// kill_after_seconds (none when the service declares no way to kill).
platform::ServiceDecl read_service(TableReader& r, const std::string& key = "service",
                                   std::chrono::seconds default_kill_after = std::chrono::seconds(0));

}  // namespace cairn::agent
