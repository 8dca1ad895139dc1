#include "common/audit/kafka_conf.h"

#include <spdlog/spdlog.h>

#include "common/util/error.h"

namespace cairn::audit {
namespace {

void log_cb(const rd_kafka_t*, int level, const char* fac, const char* buf) {
  // librdkafka's own lines (connection refused, broker down): warnings when they
  // are errors, debug otherwise; callers log what it means for them.
  if (level <= 3)
    spdlog::warn("kafka {}: {}", fac, buf);
  else
    spdlog::debug("kafka {}: {}", fac, buf);
}

void trail_cb(rd_kafka_t*, int err, const char* reason, void* opaque) {
  static_cast<ErrorTrail*>(opaque)->last = std::string(reason ? reason : "") + " (" + rd_kafka_err2name(rd_kafka_resp_err_t(err)) + ")";
}

}  // namespace

std::string explain(rd_kafka_t* rk, const ErrorTrail& trail, const KafkaClientSettings& s, rd_kafka_resp_err_t err) {
  if (rk) rd_kafka_poll(rk, 0);  // serves the error events queued while the request waited
  std::string out = rd_kafka_err2str(err);
  if (!trail.last.empty()) out += "; last error: " + trail.last;
  bool auth = err == RD_KAFKA_RESP_ERR__AUTHENTICATION || err == RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED ||
              trail.last.find("uthentication") != std::string::npos;
  if (auth && s.security_protocol.rfind("sasl_", 0) == 0 && s.sasl_mechanism.rfind("SCRAM", 0) == 0 && rd_kafka_version() < 0x020601ff)
    out += std::string(". If the password is right and the broker runs Kafka 4.0 or newer: librdkafka ") + rd_kafka_version_str() +
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

std::string topic_cleanup_policy(rd_kafka_t* rk, const std::string& topic, int timeout_ms, std::string& why) {
  rd_kafka_queue_t* q = rd_kafka_queue_new(rk);
  rd_kafka_ConfigResource_t* res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str());
  rd_kafka_AdminOptions_t* opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
  char err[256];
  rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, err, sizeof err);
  rd_kafka_DescribeConfigs(rk, &res, 1, opts, q);
  std::string policy;
  rd_kafka_event_t* ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
  if (!ev) {
    why = "no answer to DescribeConfigs";
  } else if (rd_kafka_event_error(ev)) {
    why = rd_kafka_event_error_string(ev);
  } else if (const rd_kafka_DescribeConfigs_result_t* r = rd_kafka_event_DescribeConfigs_result(ev)) {
    size_t n = 0;
    const rd_kafka_ConfigResource_t** rs = rd_kafka_DescribeConfigs_result_resources(r, &n);
    for (size_t i = 0; i < n; ++i) {
      if (rd_kafka_ConfigResource_error(rs[i])) {
        why = rd_kafka_ConfigResource_error_string(rs[i]) ? rd_kafka_ConfigResource_error_string(rs[i]) : "error";
        continue;
      }
      size_t m = 0;
      const rd_kafka_ConfigEntry_t** entries = rd_kafka_ConfigResource_configs(rs[i], &m);
      for (size_t j = 0; j < m; ++j)
        if (std::string(rd_kafka_ConfigEntry_name(entries[j])) == "cleanup.policy" && rd_kafka_ConfigEntry_value(entries[j]))
          policy = rd_kafka_ConfigEntry_value(entries[j]);
    }
    if (policy.empty() && why.empty()) why = "the broker did not list cleanup.policy";
  }
  if (ev) rd_kafka_event_destroy(ev);
  rd_kafka_AdminOptions_destroy(opts);
  rd_kafka_ConfigResource_destroy(res);
  rd_kafka_queue_destroy(q);
  return policy;
}

}  // namespace cairn::audit
