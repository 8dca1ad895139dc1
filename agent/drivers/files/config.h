#pragma once
// Settings of the files driver, as declared in a [[component]] table:
//   paths = ["/etc/kubernetes/*.conf", "/etc/kubernetes/pki"]   (required)
//   exclude = ["*.tmp"]                                         (optional)
//   restore_to = "/var/lib/cairn-agent/restore/pki"             (optional)
//   restore_to_name = "alternate"                               (optional)
#include <memory>
#include <string>
#include <vector>

#include "agent/config_reader.h"
#include "agent/driver.h"

namespace cairn::agent::files {

struct Settings {
  std::vector<std::string> paths;     // absolute; may hold glob characters
  std::vector<std::string> excludes;  // globs, as repo::BackupOptions::excludes
  std::string restore_to;             // empty: no alternative target
  std::string restore_to_name = "alternate";
};

// Parses and checks the settings; ConfigError names the file and line.
Settings parse_settings(TableReader& r);
std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component);

}  // namespace cairn::agent::files
