#pragma once
// What the running broker says of itself, through librdkafka: which node
// answers at the declared address, the cluster id, the partitions it holds a
// replica of and whether it is in their ISR, and a partition's watermarks.
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "agent/drivers/kafka/config.h"

namespace cairn::agent::kafka {

struct PartitionView {
  std::string topic;
  int32_t partition = 0;
  int32_t leader = -1;
  std::vector<int32_t> replicas, isr;
  std::string error;  // empty when the partition is healthy as far as metadata says
};

struct ClusterView {
  int32_t answered_by = -1;  // the node id of the broker at the bootstrap address
  std::string cluster_id;
  std::vector<int32_t> brokers;
  std::vector<PartitionView> partitions;
};

class BrokerClient {
 public:
  explicit BrokerClient(const Settings& s);
  // Throws cairn::Error (Errc::io) naming the address when the broker does
  // not answer within the timeout.
  ClusterView describe(std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // The partition's log start and high watermark, from its leader.
  std::pair<int64_t, int64_t> watermarks(const std::string& topic, int32_t partition,
                                         std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;

 private:
  const Settings& s_;
};

}  // namespace cairn::agent::kafka
