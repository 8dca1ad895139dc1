#include "agent/drivers/registry.h"

#include "agent/drivers/etcd/config.h"
#include "agent/drivers/files/config.h"
#include "agent/drivers/haproxy/config.h"
#include "agent/drivers/kafka/config.h"
#include "agent/drivers/postgresql/config.h"
#include "agent/drivers/prometheus/config.h"
#include "agent/drivers/zookeeper/config.h"

namespace cairn::agent {

const std::vector<DriverFactory>& drivers() {
  // Every driver the agent knows, in one place.
  static const std::vector<DriverFactory> list = {
      {"files", &files::make_driver},
      {"etcd", &etcd::make_driver},
      {"haproxy", &haproxy::make_driver},
      {"kafka", &kafka::make_driver},
      {"postgresql", &postgresql::make_driver},
      {"prometheus", &prometheus::make_driver},
      {"zookeeper", &zookeeper::make_driver},
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
