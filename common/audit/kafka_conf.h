#pragma once
// librdkafka client settings shared by the controller's audit publisher and
// cairn-audit: the brokers, TLS and SASL (docs/audit.md), and the client's
// log lines routed to spdlog.
#include <librdkafka/rdkafka.h>

#include <memory>
#include <string>

namespace cairn::audit {

struct KafkaClientSettings {
  std::string brokers;                          // bootstrap.servers
  std::string security_protocol = "plaintext";  // plaintext, ssl, sasl_plaintext, sasl_ssl
  std::string ssl_ca_file, ssl_cert_file, ssl_key_file;
  std::string sasl_mechanism = "SCRAM-SHA-512";
  std::string sasl_username;
  std::string sasl_password;  // the secret itself (read from a 0600 file by the caller)
};

struct RkDeleter {
  void operator()(rd_kafka_t* rk) const;  // purges what is queued, then destroys
};
using Rk = std::unique_ptr<rd_kafka_t, RkDeleter>;

// librdkafka's error events (connection refused, TLS handshake, SASL
// authentication) for a short-lived client: KafkaConf::record_errors points
// the client's error callback here, and `explain` turns a failed request into
// the reason an operator can act on.
struct ErrorTrail {
  std::string last;  // the newest error event's reason
};

// `what` failed with `err`: librdkafka's code, the newest error event the
// client `rk` raised (served here by polling it), and, for the known case,
// what to do: SCRAM against Kafka 4.x brokers fails with librdkafka before
// 2.6.1 (its client-final-message repeats the client nonce; Kafka 4 checks
// nonces strictly: confluentinc/librdkafka#4895).
std::string explain(rd_kafka_t* rk, const ErrorTrail& trail, const KafkaClientSettings& s, rd_kafka_resp_err_t err);

// The topic's `cleanup.policy` (librdkafka's DescribeConfigs through the
// client rk), e.g. "delete" or "compact,delete"; empty (and why) when Kafka
// does not say. Every record of the audit topic has one key: compaction
// would keep only the newest one (docs/audit.md).
std::string topic_cleanup_policy(rd_kafka_t* rk, const std::string& topic, int timeout_ms, std::string& why);

class KafkaConf {
 public:
  // Throws cairn::Error(invalid_input) naming a setting librdkafka refuses.
  KafkaConf(const KafkaClientSettings& s, const std::string& client_id);
  ~KafkaConf();
  KafkaConf(const KafkaConf&) = delete;
  KafkaConf& operator=(const KafkaConf&) = delete;
  void set(const char* key, const std::string& value);
  // The client's error events go to *trail (which must outlive the client).
  void record_errors(ErrorTrail* trail);
  // Hands the configuration to a new client, which owns it from then on.
  Rk make(rd_kafka_type_t type);
  rd_kafka_conf_t* raw() { return c_; }

 private:
  rd_kafka_conf_t* c_;
};

}  // namespace cairn::audit
