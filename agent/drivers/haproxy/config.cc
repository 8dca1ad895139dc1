#include "agent/drivers/haproxy/config.h"

#include <cstdlib>

#include "agent/drivers/haproxy/haproxy_driver.h"
#include "agent/drivers/service_settings.h"
#include "common/util/fs.h"

namespace cairn::agent::haproxy {

namespace {

std::string trimmed(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

std::vector<std::string> paths(TableReader& r, const std::string& key, const std::vector<std::string>& in) {
  std::vector<std::string> out;
  for (const auto& p : in) {
    if (!is_clean_absolute_path(p) || p == "/") r.fail(key, "'" + p + "' is not an absolute path without '..' (and not '/')");
    out.push_back(trimmed(p));
  }
  return out;
}

}  // namespace

Settings parse_settings(TableReader& r) {
  Settings s;
  auto cfg = r.string_list("config");
  if (!cfg)
    throw ConfigError(r.file(), r.line(), r.where() + " (driver 'haproxy') needs 'config': the files and directories given to haproxy -f");
  if (cfg->empty()) r.fail("config", "must name at least one file or directory");
  s.config = paths(r, "config", *cfg);
  auto sock = r.string("stats_socket");
  if (!sock)
    throw ConfigError(r.file(), r.line(),
                      r.where() + " (driver 'haproxy') needs 'stats_socket': the path of a 'stats socket' declared with 'level admin'");
  std::string sp = *sock;
  if (sp.rfind("unix:", 0) == 0) sp = sp.substr(5);
  if (!is_clean_absolute_path(sp)) r.fail("stats_socket", "'" + *sock + "' is not an absolute path of a Unix socket");
  s.stats_socket = sp;
  if (auto h = r.string("haproxy")) {
    if (!is_clean_absolute_path(*h)) r.fail("haproxy", "'" + *h + "' is not an absolute path");
    s.haproxy = *h;
  }
  s.service = read_service(r);
  if (auto ex = r.string_list("extra_files")) s.extra_files = paths(r, "extra_files", *ex);
  if (auto w = r.string("working_dir")) {
    if (!is_clean_absolute_path(*w)) r.fail("working_dir", "'" + *w + "' is not an absolute path");
    s.working_dir = trimmed(*w);
  }
  if (auto t = r.string("staging_dir")) {
    if (!is_clean_absolute_path(*t) || *t == "/") r.fail("staging_dir", "'" + *t + "' is not an absolute directory other than '/'");
    s.staging_dir = trimmed(*t);
  } else {
    const char* tmp = std::getenv("TMPDIR");
    s.staging_dir = tmp && *tmp == '/' ? trimmed(tmp) : "/tmp";
  }
  return s;
}

std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component) {
  return std::make_unique<HaproxyDriver>(component, parse_settings(settings));
}

}  // namespace cairn::agent::haproxy
