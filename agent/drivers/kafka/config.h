#pragma once
// Settings of the kafka driver, as declared in a [[component]] table
// (docs/configuration.md § Driver `kafka`):
//   log_dirs = ["/var/lib/kafka/data"]            (required; the broker's log.dirs)
//   config_file = "/etc/kafka/server.properties"  (optional; stored with every backup, never written by a restore)
//   bootstrap = "127.0.0.1:9092"                  (the broker's own listener: preflight, offline mode, verify)
//   staging_dir = "/var/lib/kafka/.cairn-staging" (optional; default <parent of the first log dir>/.cairn-kafka-staging;
//                                                  on the log dirs' filesystem, outside them)
//   libs_dir = "/opt/kafka/libs"                  (optional; where kafka_<scala>-<version>.jar says the version)
//   security_protocol = "ssl"                     (plaintext (default), ssl, sasl_plaintext, sasl_ssl)
//   ssl_ca_file, ssl_cert_file, ssl_key_file, sasl_mechanism, sasl_username,
//   sasl_password_file = "/etc/cairn/kafka.pass"  (mode 0600)
//   service = "kafka.service"                     (agent/drivers/service_settings.h; a stop not done in
//                                                  kill_after_seconds, 60 by default, is escalated to SIGKILL)
//   ready_timeout_seconds = 300                   (a broker back in the ISR of its partitions)
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "agent/config_reader.h"
#include "agent/driver.h"
#include "agent/platform/service.h"

namespace cairn::agent::kafka {

// A broker that has not stopped 60 s after it was asked is killed (the last
// KRaft nodes of a cluster stopped for a restore wait for a quorum that is
// gone; their log dirs are replaced or recovered by Kafka's log recovery).
constexpr std::chrono::seconds kKillAfter{60};

struct Settings {
  std::vector<std::string> log_dirs;
  std::string config_file;
  std::string bootstrap;
  std::string staging_dir;
  std::string libs_dir;
  std::string security_protocol = "plaintext";
  std::string ssl_ca_file, ssl_cert_file, ssl_key_file;
  std::string sasl_mechanism = "SCRAM-SHA-512", sasl_username, sasl_password_file;
  platform::ServiceDecl service;
  std::chrono::seconds ready_timeout{300};
};

Settings parse_settings(TableReader& r);
std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component);

}  // namespace cairn::agent::kafka
