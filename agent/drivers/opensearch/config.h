#pragma once
// Settings of the opensearch driver, as declared in a [[component]] table
// (docs/configuration.md § Driver `opensearch`):
//   url = "http://127.0.0.1:9200"           (optional; https:// needs ca_file)
//   ca_file, cert_file, key_file            (https: the CA, an optional client certificate)
//   credentials_file = "/etc/cairn/os.cred" (optional: one line user:password, mode 0600)
//   snapshot_repository = "cairn"           (optional: the fs repository the agent registers)
//   snapshot_path = "/mnt/os-snapshots/cairn" (required: below path.repo, shared by every node)
//   indices = ["*"]                         (optional: the patterns snapshotted)
//   include_global_state = true             (optional)
#include <memory>
#include <string>
#include <vector>

#include "agent/config_reader.h"
#include "agent/driver.h"

namespace cairn::agent::opensearch {

struct Settings {
  std::string url = "http://127.0.0.1:9200";  // no trailing '/'
  std::string ca_file, cert_file, key_file;
  std::string credentials_file;
  std::string snapshot_repository = "cairn";
  std::string snapshot_path;  // absolute, no trailing '/'
  std::vector<std::string> indices{"*"};
  bool include_global_state = true;
};

Settings parse_settings(TableReader& r);
std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component);

}  // namespace cairn::agent::opensearch
