#pragma once
// The agent's configuration (one TOML file, --config). Every key and its
// default is documented in docs/configuration.md (## cairn-agent). A wrong key
// or value is refused at start with ConfigError ("FILE:LINE: reason").
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/config_reader.h"
#include "agent/driver.h"
#include "agent/maintenance_mode.h"
#include "agent/set_aside.h"

namespace cairn::agent {

struct RepositoryDecl {
  std::string name;
  std::string path;
  std::string password_file;       // mode 0600, checked at start and at each use
  std::string credentials_file{};  // a remote repository's credentials (mode 0600); empty: the store's standard sources
  // Back up into a remote store even when neither the store keeps earlier versions
  // nor these credentials are limited to creating objects (one stolen agent
  // credential could then destroy every backup in it): warned at every backup.
  bool accept_unprotected_store = false;
};

struct ComponentDecl {
  std::string name;
  std::string driver_name;
  std::string repository;                      // default repository of its backups
  std::optional<MaintenanceDecl> maintenance;  // HAProxy servers set to maint during its restores
  std::shared_ptr<Driver> driver;
};

// Every drillable driver's drill with its [drill] keys' defaults
// (registry.cc).
std::vector<std::pair<std::string, std::shared_ptr<const DriverDrill>>> default_drills();

// [drill]: this agent runs restore drills in sandboxes under root
// (docs/drills.md).
struct DrillDecl {
  std::string root;                     // absolute; sandboxes are ROOT/drill-<task>
  uint64_t disk_budget = 0;             // bytes a drill may need; 0: the free space alone bounds it
  std::optional<uint64_t> memory_max;   // the sandbox's cgroup; nullopt: memory_max = "none" (unbounded)
  uint32_t cpus = 1;                    // CPUs the sandbox's processes may use (cgroup cpu quota)
  int64_t deadline_seconds = 1800;      // a drill running longer is stopped and fails
  int64_t start_timeout_seconds = 120;  // until the started component answers
  // Java, for the drills whose servers are Java programs (ZooKeeper's,
  // Kafka's), each with this heap.
  std::string java = "java";
  uint32_t java_heap_mb = 512;
  // The user etcd's, ZooKeeper's, Prometheus' and Kafka's servers run as in
  // a drill's sandbox (never root), the host read-only to them.
  std::string user = "nobody";
  // Each drillable driver's drill (DriverFactory::drill, in the registry's
  // order), holding its own [drill] keys (etcd's etcdctl, Kafka's
  // kafka_libs_dir, ...): what this agent can drill is what these are.
  std::vector<std::pair<std::string, std::shared_ptr<const DriverDrill>>> drills = default_drills();

  // The drill of `driver`; null when it has none.
  const DriverDrill* drill(std::string_view driver) const;
};

struct AgentConfig {
  std::string source;  // the file it was read from
  std::string name;    // default: the host name
  std::string state_dir = "/var/lib/cairn-agent";
  std::string key_dir;         // default: <state_dir>/keys
  std::string replay_journal;  // default: <state_dir>/replay-journal.json
  std::string trust_store;     // default: <state_dir>/trusted-keys.json
  std::string log_level = "info";
  std::map<std::string, std::string> labels;  // [labels]: policies select agents by them
  // What each backup's and restore's buffers may hold ("512M"); none: half the
  // cgroup memory limit, else 512 MiB (common/repo/memory.h).
  std::optional<uint64_t> memory_budget;

  std::string controller_endpoint;
  std::string controller_public_key;  // Z85, 40 characters
  std::string signing_keys_file;      // "ed25519:<base64>" per line
  uint32_t heartbeat_interval_ms = 2000;
  uint32_t liveness = 5;

  std::vector<RepositoryDecl> repositories;
  std::vector<ComponentDecl> components;
  std::optional<DrillDecl> drill;
  // [set_aside]: what in-place restores set aside is kept by this rule (docs/set-aside.md).
  SetAsideRule set_aside;

  const ComponentDecl* component(std::string_view name) const;
  const RepositoryDecl* repository(std::string_view name) const;
};

// Parses text read from `source` (used in messages). Throws ConfigError.
AgentConfig parse_config(std::string_view text, const std::string& source);
// Reads `keys` (TOML lines of a [drill] table: the drivers' drills' own
// keys, e.g. `prometheus = "/usr/bin/prometheus"`) into d's drills, as the
// [drill] section would (tests). Throws ConfigError.
void read_drill_keys(DrillDecl& d, std::string_view keys, const std::string& source);
// Reads and parses the file. Throws ConfigError (line 0 when unreadable).
AgentConfig load_config(const std::string& path);

// Declared things that do not exist now, one line each: repositories with no
// repository at their path, and what each component's driver reports (declared
// paths). `cairn-agent --check-config` prints them as warnings.
std::vector<std::string> config_warnings(const AgentConfig& c);

// Refuses a secret file that is missing, not a regular file, or readable or
// writable by group or others. Returns an empty string when fine, else why.
std::string check_secret_file_mode(const std::string& path);

}  // namespace cairn::agent
