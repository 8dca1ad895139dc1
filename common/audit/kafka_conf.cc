#include "common/audit/kafka_conf.h"

#include <spdlog/spdlog.h>

#include "common/util/error.h"

namespace cairn::audit {
namespace {

void log_cb(const rd_kafka_t*, int level, const char* fac, const char* buf) {
  // librdkafka's own lines (connection refused, broker down): warnings when they
  // are errors, debug otherwise; callers log what it means for them.
  if (level <= 3) spdlog::warn("kafka {}: {}", fac, buf);
  else spdlog::debug("kafka {}: {}", fac, buf);
}

void trail_cb(rd_kafka_t*, int err, const char* reason, void* opaque) {
  static_cast<ErrorTrail*>(opaque)->last =
      std::string(reason ? reason : "") + " (" + rd_kafka_err2name(rd_kafka_resp_err_t(err)) + ")";
}

}  // namespace

std::string explain(rd_kafka_t* rk, const ErrorTrail& trail, const KafkaClientSettings& s, rd_kafka_resp_err_t err) {
  if (rk) rd_kafka_poll(rk, 0);  // serves the error events queued while the request waited
  std::string out = rd_kafka_err2str(err);
  if (!trail.last.empty()) out += "; last error: " + trail.last;
  bool auth = err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED ||
              trail.last.find("uthentication") != std::string::npos;
  if (auth && s.security_protocol.rfind("sasl_", 0) == 0 && s.sasl_mechanism.rfind("SCRAM", 0) == 0 &&
      rd_kafka_version() < 0x020601ff)
    out += std::string(". If the password is right and the broker runs Kafka 4.0 or newer: librdkafka ") +
           rd_kafka_version_str() +
           " cannot complete SCRAM with Kafka 4 (fixed in librdkafka 2.6.1, confluentinc/librdkafka#4895); use "
           "sasl_mechanism = \"PLAIN\" over sasl_ssl, or a client certificate (security_protocol = \"ssl\")";
  return out;
}

void RkDeleter::operator()(rd_kafka_t* rk) const {
  if (!rk) return;
  rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_destroy(rk);
}

KafkaConf::KafkaConf(const KafkaClientSettings& s, const std::string& client_id) : c_(rd_kafka_conf_new()) {
  set("bootstrap.servers", s.brokers);
  set("client.id", client_id);
  set("security.protocol", s.security_protocol);
  if (!s.ssl_ca_file.empty()) set("ssl.ca.location", s.ssl_ca_file);
  if (!s.ssl_cert_file.empty()) set("ssl.certificate.location", s.ssl_cert_file);
  if (!s.ssl_key_file.empty()) set("ssl.key.location", s.ssl_key_file);
  if (s.security_protocol.rfind("sasl_", 0) == 0) {
    set("sasl.mechanisms", s.sasl_mechanism);
    set("sasl.username", s.sasl_username);
    set("sasl.password", s.sasl_password);
  }
  rd_kafka_conf_set_log_cb(c_, log_cb);
}

KafkaConf::~KafkaConf() {
  if (c_) rd_kafka_conf_destroy(c_);
}

void KafkaConf::set(const char* key, const std::string& value) {
  char err[512];
  if (rd_kafka_conf_set(c_, key, value.c_str(), err, sizeof err) != RD_KAFKA_CONF_OK)
    throw Error(Errc::invalid_input, std::string("kafka setting ") + key + ": " + err);
}

void KafkaConf::record_errors(ErrorTrail* trail) {
  rd_kafka_conf_set_error_cb(c_, trail_cb);
  rd_kafka_conf_set_opaque(c_, trail);
}

Rk KafkaConf::make(rd_kafka_type_t type) {
  char err[512];
  rd_kafka_t* rk = rd_kafka_new(type, c_, err, sizeof err);
  if (!rk) throw Error(Errc::invalid_input, std::string("kafka client: ") + err);
  c_ = nullptr;
  return Rk(rk);
}

}  // namespace cairn::audit
