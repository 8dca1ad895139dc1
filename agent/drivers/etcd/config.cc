#include "agent/drivers/etcd/config.h"

#include <algorithm>

#include "agent/drivers/etcd/etcd_driver.h"
#include "agent/drivers/service_settings.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::etcd {

namespace {

std::string abs_path(TableReader& r, const std::string& key) {
  auto v = r.string(key);
  if (!v) return {};
  if (!is_clean_absolute_path(*v)) r.fail(key, "'" + *v + "' must be an absolute path without '..'");
  return *v;
}

bool is_hex_id(const std::string& s) {
  return !s.empty() && s.size() <= 16 &&
         std::all_of(s.begin(), s.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

}  // namespace

std::pair<std::string, std::string> read_auth_file(const std::string& path) {
  std::string text;
  try {
    text = read_secret_file(path);  // refuses a file group or others can read
  } catch (const Error& e) {
    throw Error(e.code(), std::string("etcd 'auth_file': ") + e.what());
  }
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  size_t colon = text.find(':');
  if (colon == std::string::npos || colon == 0 || text.find('\n') != std::string::npos)
    throw Error(Errc::invalid_input, "etcd 'auth_file' '" + path + "' must hold one line 'user:password'");
  return {text.substr(0, colon), text.substr(colon + 1)};
}

Settings parse_settings(TableReader& r) {
  Settings s;
  s.endpoint = r.required_string("endpoint");
  {
    const std::string& e = s.endpoint;
    bool https = e.rfind("https://", 0) == 0, http = e.rfind("http://", 0) == 0;
    std::string rest = https ? e.substr(8) : http ? e.substr(7) : std::string();
    if (rest.empty() || rest.find(',') != std::string::npos || rest.find('/') != std::string::npos || rest.find(':') == std::string::npos)
      r.fail("endpoint", "'" + e + "' must be one 'http://host:port' or 'https://host:port' (one member only)");
  }
  s.ca_file = abs_path(r, "ca_file");
  s.cert_file = abs_path(r, "cert_file");
  s.key_file = abs_path(r, "key_file");
  bool https = s.endpoint.rfind("https://", 0) == 0;
  if (!https && (!s.ca_file.empty() || !s.cert_file.empty() || !s.key_file.empty()))
    r.fail("endpoint", "is plain 'http://' but TLS files are set; use 'https://'");
  if (s.cert_file.empty() != s.key_file.empty())
    r.fail(s.cert_file.empty() ? "key_file" : "cert_file", "'cert_file' and 'key_file' go together");
  s.auth_file = abs_path(r, "auth_file");
  s.data_dir = abs_path(r, "data_dir");
  if (s.data_dir.empty()) throw ConfigError(r.file(), r.line(), r.where() + " (driver 'etcd') needs 'data_dir'");
  while (s.data_dir.size() > 1 && s.data_dir.back() == '/') s.data_dir.pop_back();
  if (s.data_dir == "/") r.fail("data_dir", "must not be '/'");
  // 'name' is the component's own; the member's is 'member_name'.
  s.name = r.required_string("member_name");
  if (s.name.empty()) r.fail("member_name", "must not be empty (etcd's --name of this member)");
  auto urls = r.string_list("initial_advertise_peer_urls");
  if (!urls || urls->empty())
    throw ConfigError(r.file(), r.line(), r.where() + " (driver 'etcd') needs 'initial_advertise_peer_urls' (this member's peer URLs)");
  for (const auto& u : *urls) {
    if (u.rfind("http://", 0) != 0 && u.rfind("https://", 0) != 0)
      r.fail("initial_advertise_peer_urls", "'" + u + "' must start with 'http://' or 'https://'");
    if (u.find(',') != std::string::npos) r.fail("initial_advertise_peer_urls", "give several URLs as an array, not '" + u + "'");
  }
  s.peer_urls = *urls;
  s.service = read_service(r);  // the shared form (agent/drivers/service_settings.h)
  s.etcdctl = r.string_or("etcdctl", "etcdctl");
  if (s.etcdctl.empty()) r.fail("etcdctl", "must name the etcdctl (or etcdutl) program");
  if (auto v = r.string("cluster_id")) {
    if (!is_hex_id(*v)) r.fail("cluster_id", "'" + *v + "' must be lowercase hex, as etcd prints it");
    s.cluster_id = *v;
  }
  if (auto v = r.string("member_id")) {
    if (!is_hex_id(*v)) r.fail("member_id", "'" + *v + "' must be lowercase hex, as etcd prints it");
    s.member_id = *v;
  }
  if (auto t = r.integer("timeout_seconds", 1, 600)) s.timeout_seconds = *t;
  if (auto t = r.integer("start_timeout_seconds", 1, 3600)) s.start_timeout_seconds = *t;
  return s;
}

std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component) {
  return std::make_unique<EtcdDriver>(component, parse_settings(settings));
}

}  // namespace cairn::agent::etcd
