#include "agent/drivers/prometheus/config.h"

#include "agent/drivers/prometheus/prometheus_driver.h"
#include "agent/drivers/service_settings.h"
#include "common/util/fs.h"

namespace cairn::agent::prometheus {

namespace {

std::string strip_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

}  // namespace

Settings parse_settings(TableReader& r) {
  Settings s;
  if (auto u = r.string("url")) {
    if (u->rfind("http://", 0) != 0 && u->rfind("https://", 0) != 0) r.fail("url", "'" + *u + "' must start with http:// or https://");
    s.url = *u;
    while (!s.url.empty() && s.url.back() == '/') s.url.pop_back();
  }
  s.data_dir = strip_slashes(r.required_string("data_dir"));
  if (!is_clean_absolute_path(s.data_dir))
    r.fail("data_dir", "'" + s.data_dir +
                           "' must be an absolute directory other than '/', without '..' "
                           "(the server's --storage.tsdb.path)");
  if (auto cf = r.string_list("config_files")) {
    for (const auto& p : *cf) {
      if (!is_clean_absolute_path(p)) r.fail("config_files", "'" + p + "' is not an absolute path without '..'");
      std::string q = strip_slashes(p);
      if (q == s.data_dir || q.rfind(s.data_dir + "/", 0) == 0)
        r.fail("config_files", "'" + p + "' lies in data_dir, which is backed up through the server's snapshot");
      s.config_files.push_back(q);
    }
  }
  s.service = read_service(r, "service");
  return s;
}

std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component) {
  return std::make_unique<PrometheusDriver>(component, parse_settings(settings));
}

}  // namespace cairn::agent::prometheus
