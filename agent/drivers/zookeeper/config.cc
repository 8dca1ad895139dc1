#include "agent/drivers/zookeeper/config.h"

#include "agent/drivers/service_settings.h"
#include "agent/drivers/zookeeper/zookeeper_driver.h"
#include "agent/platform/socket_client.h"
#include "common/util/error.h"

namespace cairn::agent::zookeeper {

namespace {

std::string clean_path(TableReader& r, const std::string& key, const std::string& p) {
  if (p.empty() || p[0] != '/') r.fail(key, "'" + p + "' is not an absolute path");
  size_t i = 0;
  while (i <= p.size()) {
    size_t j = p.find('/', i);
    if (j == std::string::npos) j = p.size();
    if (p.compare(i, j - i, "..") == 0 && j - i == 2) r.fail(key, "'" + p + "' must not contain '..'");
    i = j + 1;
  }
  std::string q = p;
  while (q.size() > 1 && q.back() == '/') q.pop_back();
  if (q == "/") r.fail(key, "'/' is not a ZooKeeper directory");
  return q;
}

}  // namespace

Settings parse_settings(TableReader& r) {
  Settings s;
  auto dd = r.string("data_dir");
  if (!dd) throw ConfigError(r.file(), r.line(), r.where() + " (driver 'zookeeper') needs 'data_dir', zoo.cfg's dataDir");
  s.data_dir = clean_path(r, "data_dir", *dd);
  s.data_log_dir = s.data_dir;
  if (auto d = r.string("data_log_dir")) s.data_log_dir = clean_path(r, "data_log_dir", *d);
  if (auto c = r.string("config_file")) s.config_file = clean_path(r, "config_file", *c);
  if (auto a = r.string("client_address")) {
    try {
      auto addr = platform::parse_socket_address(*a);
      if (!addr.unix_path.empty()) r.fail("client_address", "'" + *a + "' must be host:port (ZooKeeper's client port)");
    } catch (const Error& e) {
      r.fail("client_address", e.what());
    }
    s.client_address = *a;
  }
  if (auto c = r.string("cluster_id")) {
    if (c->empty()) r.fail("cluster_id", "must not be empty");
    s.cluster_id = *c;
  }
  s.service = read_service(r);
  if (auto t = r.integer("ready_timeout_seconds", 1, 3600)) s.ready_timeout = std::chrono::seconds(*t);
  return s;
}

std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component) {
  return std::make_unique<ZooKeeperDriver>(component, parse_settings(settings));
}

}  // namespace cairn::agent::zookeeper
