#include "agent/drivers/kafka/broker.h"

#include <librdkafka/rdkafka.h>

#include "common/audit/kafka_conf.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::kafka {

namespace {

audit::KafkaClientSettings client_settings(const Settings& s) {
  if (s.bootstrap.empty()) throw Error(Errc::invalid_input, "no 'bootstrap' declared: the broker cannot be asked");
  audit::KafkaClientSettings k;
  k.brokers = s.bootstrap;
  k.security_protocol = s.security_protocol;
  k.ssl_ca_file = s.ssl_ca_file;
  k.ssl_cert_file = s.ssl_cert_file;
  k.ssl_key_file = s.ssl_key_file;
  k.sasl_mechanism = s.sasl_mechanism;
  k.sasl_username = s.sasl_username;
  if (!s.sasl_password_file.empty()) k.sasl_password = read_secret_file(s.sasl_password_file);
  return k;
}

// `trail` must outlive the client.
audit::Rk connect(const audit::KafkaClientSettings& k, audit::ErrorTrail* trail) {
  audit::KafkaConf conf(k, "cairn-agent");
  conf.record_errors(trail);
  // Only this broker: its metadata answer names it, and nothing else is dialled.
  conf.set("topic.metadata.refresh.interval.ms", "-1");
  conf.set("log.connection.close", "false");
  // A broker that is down is what a stop waits for and a start waits out:
  // the driver says what it means; librdkafka's own connection errors would
  // fill the agent's log every few hundred milliseconds.
  conf.set("log_level", "2");
  return conf.make(RD_KAFKA_PRODUCER);
}

}  // namespace

BrokerClient::BrokerClient(const Settings& s) : s_(s) {}

ClusterView BrokerClient::describe(std::chrono::milliseconds timeout) const {
  audit::KafkaClientSettings k = client_settings(s_);
  audit::ErrorTrail trail;
  audit::Rk rk = connect(k, &trail);
  const rd_kafka_metadata_t* md = nullptr;
  rd_kafka_resp_err_t err = rd_kafka_metadata(rk.get(), 1, nullptr, &md, int(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw Error(Errc::io,
                "the broker at '" + s_.bootstrap + "' did not answer a metadata request: " + audit::explain(rk.get(), trail, k, err));
  ClusterView v;
  v.answered_by = md->orig_broker_id;
  for (int i = 0; i < md->broker_cnt; ++i) v.brokers.push_back(md->brokers[i].id);
  for (int t = 0; t < md->topic_cnt; ++t) {
    const auto& topic = md->topics[t];
    for (int p = 0; p < topic.partition_cnt; ++p) {
      const auto& part = topic.partitions[p];
      PartitionView pv;
      pv.topic = topic.topic;
      pv.partition = part.id;
      pv.leader = part.leader;
      for (int r = 0; r < part.replica_cnt; ++r) pv.replicas.push_back(part.replicas[r]);
      for (int r = 0; r < part.isr_cnt; ++r) pv.isr.push_back(part.isrs[r]);
      if (part.err) pv.error = rd_kafka_err2str(part.err);
      if (topic.err && pv.error.empty()) pv.error = rd_kafka_err2str(topic.err);
      v.partitions.push_back(std::move(pv));
    }
  }
  rd_kafka_metadata_destroy(md);
  if (char* id = rd_kafka_clusterid(rk.get(), int(timeout.count()))) {
    v.cluster_id = id;
    rd_kafka_mem_free(rk.get(), id);
  }
  return v;
}

std::pair<int64_t, int64_t> BrokerClient::watermarks(const std::string& topic, int32_t partition, std::chrono::milliseconds timeout) const {
  audit::KafkaClientSettings k = client_settings(s_);
  audit::ErrorTrail trail;
  audit::Rk rk = connect(k, &trail);
  int64_t lo = -1, hi = -1;
  rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk.get(), topic.c_str(), partition, &lo, &hi, int(timeout.count()));
  if (err != RD_KAFKA_RESP_ERR_NO_ERROR)
    throw Error(Errc::io, "the watermarks of '" + topic + "-" + std::to_string(partition) +
                              "' could not be read: " + audit::explain(rk.get(), trail, k, err));
  return {lo, hi};
}

}  // namespace cairn::agent::kafka
