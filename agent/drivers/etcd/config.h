#pragma once
// Settings of the etcd driver, as declared in a [[component]] table
// (docs/configuration.md § etcd):
//   endpoint = "https://127.0.0.1:2379"             (required; exactly one)
//   ca_file / cert_file / key_file = "/etc/etcd/pki/..."     (TLS, optional)
//   auth_file = "/etc/cairn/etcd.auth"               (0600, "user:password")
//   data_dir = "/var/lib/etcd"                       (required)
//   member_name = "node-1"                           (required: etcd's --name)
//   initial_advertise_peer_urls = "https://10.0.0.1:2380"   (required)
//   service = "etcd.service"  or  { start_command = [...], stop_command = [...] }
//   etcdctl = "etcdctl"                              (or an etcdutl)
//   cluster_id / member_id = "..."                   (hex, optional)
#include <memory>
#include <string>
#include <vector>

#include "agent/config_reader.h"
#include "agent/driver.h"
#include "agent/platform/service.h"

namespace cairn::agent::etcd {

struct Settings {
  std::string endpoint;
  std::string ca_file, cert_file, key_file;
  std::string auth_file;  // empty: no authentication
  std::string data_dir;   // absolute, no trailing '/'
  std::string name;
  std::vector<std::string> peer_urls;  // initial_advertise_peer_urls
  platform::ServiceDecl service;       // empty: restores refuse (the member must be stopped)
  std::string etcdctl = "etcdctl";
  std::string cluster_id, member_id;    // declared (lowercase hex); empty: as the member reports
  int64_t timeout_seconds = 10;         // each API call
  int64_t start_timeout_seconds = 120;  // after a start: until the member answers
};

// Parses and checks the settings; ConfigError names the file and line.
Settings parse_settings(TableReader& r);
std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component);

// "user:password" (one line, the first ':' splits; a trailing newline is
// dropped) from a 0600 file. Throws cairn::Error naming the file.
std::pair<std::string, std::string> read_auth_file(const std::string& path);

}  // namespace cairn::agent::etcd
