#include "agent/drivers/kafka/config.h"

#include <filesystem>

#include "agent/drivers/kafka/kafka_driver.h"
#include "agent/drivers/service_settings.h"
#include "agent/platform/socket_client.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::kafka {

namespace {

std::string clean_dir(TableReader& r, const std::string& key, std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  if (!is_clean_absolute_path(p) || p == "/") r.fail(key, "'" + p + "' must be an absolute path other than '/', without '..'");
  return p;
}

bool inside(const std::string& p, const std::string& dir) { return p == dir || p.rfind(dir + "/", 0) == 0; }

}  // namespace

Settings parse_settings(TableReader& r) {
  Settings s;
  auto dirs = r.string_list("log_dirs");
  if (!dirs || dirs->empty())
    throw ConfigError(r.file(), r.line(), r.where() + " (driver 'kafka') needs 'log_dirs', the broker's log.dirs");
  for (const auto& d : *dirs) {
    std::string p = clean_dir(r, "log_dirs", d);
    for (const auto& q : s.log_dirs)
      if (inside(p, q) || inside(q, p)) r.fail("log_dirs", "'" + p + "' and '" + q + "' overlap");
    s.log_dirs.push_back(p);
  }
  if (auto c = r.string("config_file")) {
    s.config_file = clean_dir(r, "config_file", *c);
    for (const auto& d : s.log_dirs)
      if (inside(s.config_file, d)) r.fail("config_file", "'" + *c + "' lies in log dir '" + d + "'");
  }
  if (auto b = r.string("bootstrap")) {
    try {
      auto addr = platform::parse_socket_address(*b);
      if (!addr.unix_path.empty()) r.fail("bootstrap", "'" + *b + "' must be host:port (the broker's listener)");
    } catch (const Error& e) {
      r.fail("bootstrap", e.what());
    }
    s.bootstrap = *b;
  }
  if (auto d = r.string("staging_dir")) {
    s.staging_dir = clean_dir(r, "staging_dir", *d);
  } else {
    s.staging_dir = std::filesystem::path(s.log_dirs.front()).parent_path().string() + "/.cairn-kafka-staging";
    if (s.staging_dir.rfind("//", 0) == 0) s.staging_dir = s.staging_dir.substr(1);
  }
  for (const auto& d : s.log_dirs)
    if (inside(s.staging_dir, d) || inside(d, s.staging_dir))
      r.fail("staging_dir", "'" + s.staging_dir + "' must lie outside log dir '" + d +
                                "' (a broker refuses to start with a directory it does not know in its log dir)");
  if (auto l = r.string("libs_dir")) s.libs_dir = clean_dir(r, "libs_dir", *l);
  if (auto p = r.string("security_protocol")) {
    if (*p != "plaintext" && *p != "ssl" && *p != "sasl_plaintext" && *p != "sasl_ssl")
      r.fail("security_protocol", "'" + *p + "' is not plaintext, ssl, sasl_plaintext or sasl_ssl");
    s.security_protocol = *p;
  }
  for (auto [key, out] : {std::pair{"ssl_ca_file", &s.ssl_ca_file},
                          {"ssl_cert_file", &s.ssl_cert_file},
                          {"ssl_key_file", &s.ssl_key_file},
                          {"sasl_password_file", &s.sasl_password_file}})
    if (auto v = r.string(key)) *out = clean_dir(r, key, *v);
  if (auto m = r.string("sasl_mechanism")) s.sasl_mechanism = *m;
  if (auto u = r.string("sasl_username")) s.sasl_username = *u;
  if (s.security_protocol.rfind("sasl", 0) == 0 && (s.sasl_username.empty() || s.sasl_password_file.empty()))
    r.fail("security_protocol", "'" + s.security_protocol + "' needs 'sasl_username' and 'sasl_password_file' (mode 0600)");
  s.service = read_service(r, "service", kKillAfter);
  if (auto t = r.integer("ready_timeout_seconds", 1, 86400)) s.ready_timeout = std::chrono::seconds(*t);
  return s;
}

std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component) {
  return std::make_unique<KafkaDriver>(component, parse_settings(settings));
}

}  // namespace cairn::agent::kafka
