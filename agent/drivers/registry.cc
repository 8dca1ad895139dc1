#include "agent/drivers/registry.h"

#include "agent/drivers/etcd/config.h"
#include "agent/drivers/etcd/drill.h"
#include "agent/drivers/files/config.h"
#include "agent/drivers/files/drill.h"
#include "agent/drivers/haproxy/config.h"
#include "agent/drivers/haproxy/drill.h"
#include "agent/drivers/kafka/config.h"
#include "agent/drivers/kafka/drill.h"
#include "agent/drivers/opensearch/config.h"
#include "agent/drivers/opensearch/drill.h"
#include "agent/drivers/postgresql/config.h"
#include "agent/drivers/postgresql/drill.h"
#include "agent/drivers/prometheus/config.h"
#include "agent/drivers/prometheus/drill.h"
#include "agent/drivers/zookeeper/config.h"
#include "agent/drivers/zookeeper/drill.h"

namespace cairn::agent {

const std::vector<DriverFactory>& drivers() {
  // Every driver the agent knows, in one place.
  static const std::vector<DriverFactory> list = {
      {"files", &files::make_driver, &files::make_drill},
      {"etcd", &etcd::make_driver, &etcd::make_drill},
      {"haproxy", &haproxy::make_driver, &haproxy::make_drill},
      {"kafka", &kafka::make_driver, &kafka::make_drill},
      {"opensearch", &opensearch::make_driver, &opensearch::make_drill},
      {"postgresql", &postgresql::make_driver, &postgresql::make_drill},
      {"prometheus", &prometheus::make_driver, &prometheus::make_drill},
      {"zookeeper", &zookeeper::make_driver, &zookeeper::make_drill},
  };
  return list;
}

const DriverFactory* find_driver(std::string_view name) {
  for (const auto& d : drivers())
    if (d.name == name) return &d;
  return nullptr;
}

std::string driver_names() {
  std::string s;
  for (const auto& d : drivers()) s += (s.empty() ? "'" : ", '") + std::string(d.name) + "'";
  return s;
}

}  // namespace cairn::agent
