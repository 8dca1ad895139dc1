#pragma once
// The controller's configuration: one TOML file given with --config. Every key
// is documented with its default in docs/configuration.md (controller
// section). A key this build does not know, or a value out of range, is
// refused at start with file:line:column and the reason: a typo must not
// silently fall back to a default (an open enrolment, a public listen address).
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "controller/catalog/types.h"

namespace cairn::controller {

struct ControllerConfig {
  std::string source;  // the file it was read from, for messages

  // [controller]
  std::string controller_id;  // names the plan sequence stream; default: host name
  std::string cluster;        // names exports (cairn-<cluster>-<time>.tar.gz); default: controller_id
  const std::string& cluster_name() const { return cluster.empty() ? controller_id : cluster; }
  std::string data_dir = "/var/lib/cairn";
  std::string key_dir = "/etc/cairn/keys";
  std::string log_level = "info";

  // [fleet]
  std::string fleet_listen = "tcp://0.0.0.0:7420";
  bool enrolment_open = false;
  uint32_t heartbeat_interval_ms = 2000;
  uint32_t liveness = 5;
  int backlog = 4096;
  uint32_t io_threads = 0;            // ZeroMQ I/O threads; 0: from the usable CPUs (io_threads_for)
  uint32_t max_pending_agents = 100;  // oldest pending agents dropped beyond it

  // [operator]
  std::string operator_listen = "tcp://127.0.0.1:7421";
  std::map<std::string, std::string> operator_key_files;  // operator name -> Z85 public key file

  // [plans]
  int64_t plan_validity_seconds = 3600;
  int64_t lock_ttl_seconds = 86400;

  // [audit] retention of the outbox while nothing publishes it, and the
  // audit budget of refused keys at the handshake
  int64_t audit_retention_events = 1000000;
  int64_t audit_retention_days = 90;
  uint32_t audit_refusals_per_minute = 60;

  // [audit.kafka] the audit publisher (docs/audit.md); off while brokers is empty
  struct AuditKafka {
    std::string brokers;  // bootstrap.servers, "host:port,host:port"
    std::string topic = "cairn.audit";
    std::string security_protocol = "plaintext";  // plaintext, ssl, sasl_plaintext, sasl_ssl
    std::string ssl_ca_file, ssl_cert_file, ssl_key_file;
    std::string sasl_mechanism = "SCRAM-SHA-512";  // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    std::string sasl_username;
    std::string sasl_password_file;        // mode 0600, read at start
    int64_t checkpoint_every = 100;        // events between signed checkpoints
    int64_t checkpoint_interval_s = 60;    // and at least this often while events are published
    int64_t outbox_warn_events = 100000;   // log line (and status) past this many unpublished events
    int64_t outbox_max_events = 10000000;  // beyond it the oldest unpublished are dropped, with an audit event
    bool enabled() const { return !brokers.empty(); }
  } audit_kafka;

  // [http] /metrics and the status page (http_server.h); listen "" turns it off
  std::string http_listen = "127.0.0.1:7422";
  bool http_listen_given = false;  // a port in use is then fatal, not a warning
  std::string http_token_file;     // mode 0600: every request needs "Authorization: Bearer <token>"

  // [scheduler]
  std::string time_zone = "UTC";  // of policies that name none

  // [verify] the controller's periodic verification of its repositories
  // (controller/verification.h): every interval, and once at start
  int64_t verify_interval_seconds = 6 * 3600;

  // [[repository]]: repositories the controller opens itself, to remove the
  // snapshots retention lets go and to prune (the names agents use).
  struct Repository {
    std::string name, path, password_file;
    std::string credentials_file{};  // a remote repository's credentials (mode 0600); empty: the store's standard sources
  };
  std::vector<Repository> repositories;
  const Repository* repository(const std::string& name) const {
    for (const auto& r : repositories)
      if (r.name == name) return &r;
    return nullptr;
  }

  // [[policy]]: policies declared here (source "config"); they replace the
  // catalog's of the same name at every start.
  std::vector<catalog::Policy> policies;

  std::string catalog_path() const { return data_dir + "/catalog.db"; }
};

// Thrown with a message "<file>:<line>:<column>: <reason>" (line and column
// omitted when the problem has no place in the file, e.g. it cannot be read).
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

ControllerConfig load_config(const std::string& path);
// Parses TOML text; source names it in messages. Used by load_config and tests.
ControllerConfig parse_config(const std::string& text, const std::string& source);

}  // namespace cairn::controller
