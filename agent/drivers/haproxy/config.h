#pragma once
// Settings of the haproxy driver, as declared in a [[component]] table:
//   config = ["/etc/haproxy/haproxy.cfg", "/etc/haproxy/conf.d"]   (required; as given to haproxy -f)
//   stats_socket = "/run/haproxy/admin.sock"                      (required; declared with 'level admin')
//   haproxy = "/usr/sbin/haproxy"                                 (optional)
//   service = "haproxy.service"  or a table (agent/drivers/service_settings.h)
//   extra_files = ["/etc/haproxy/secrets/x.pem"]                  (optional)
//   working_dir = "/"              (haproxy's working directory: relative paths without a base)
//   staging_dir = "/tmp"           (per-run staging of runtime state and of a restore)
#include <memory>
#include <string>
#include <vector>

#include "agent/config_reader.h"
#include "agent/driver.h"
#include "agent/platform/service.h"

namespace cairn::agent::haproxy {

struct Settings {
  std::vector<std::string> config;  // absolute files or directories, in haproxy's -f order
  std::string stats_socket;         // absolute path of a Unix socket
  std::string haproxy = "/usr/sbin/haproxy";
  platform::ServiceDecl service;         // empty: restores refuse (nothing can reload haproxy)
  std::vector<std::string> extra_files;  // absolute files or directories
  std::string working_dir = "/";
  std::string staging_dir;  // default: $TMPDIR or /tmp
};

// Parses and checks the settings; ConfigError names the file and line.
Settings parse_settings(TableReader& r);
std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component);

}  // namespace cairn::agent::haproxy
