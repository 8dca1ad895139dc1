#include "agent/drivers/opensearch/api.h"

#include <fstream>

#include "agent/config.h"
#include "agent/platform/http.h"
#include "common/util/encoding.h"
#include "common/util/error.h"

namespace cairn::agent::opensearch {

namespace {

std::string brief(const std::string& body) {
  std::string s = body.substr(0, 300);
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

struct Credentials {
  std::string user, password;
};

// The credentials file: one line user:password, mode 0600. Throws naming the
// file and what is wrong, never its content.
Credentials read_credentials(const std::string& path) {
  if (std::string why = check_secret_file_mode(path); !why.empty())
    throw Error(Errc::invalid_input, "credentials_file '" + path + "': " + why);
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) throw Error(Errc::invalid_input, "credentials_file '" + path + "' cannot be read or is empty");
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n' || line.back() == ' ')) line.pop_back();
  auto colon = line.find(':');
  if (colon == std::string::npos || colon == 0)
    throw Error(Errc::invalid_input, "credentials_file '" + path + "' must hold one line 'user:password'");
  return {line.substr(0, colon), line.substr(colon + 1)};
}

}  // namespace

std::string Api::credentials_problem() const {
  if (s_.credentials_file.empty()) return {};
  try {
    (void)read_credentials(s_.credentials_file);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

Reply Api::call(const std::string& method, const std::string& path, const nlohmann::json& body, std::chrono::milliseconds timeout,
                const std::atomic<bool>* cancel) const {
  platform::HttpRequest req;
  req.method = method;
  req.url = s_.url + path;
  req.timeout = timeout;
  req.cancel = cancel;
  req.max_body = 64 << 20;
  req.ca_file = s_.ca_file;
  req.cert_file = s_.cert_file;
  req.key_file = s_.key_file;
  if (!body.is_null()) {
    req.body = body.dump();
    req.headers.push_back("Content-Type: application/json");
  }
  std::string user;
  if (!s_.credentials_file.empty()) {
    Credentials c = read_credentials(s_.credentials_file);
    user = c.user;
    std::string both = c.user + ":" + c.password;
    req.headers.push_back("Authorization: Basic " + to_base64({reinterpret_cast<const uint8_t*>(both.data()), both.size()}));
  }
  auto r = platform::http_request(req);
  Reply out;
  out.status = r.status;
  out.body = nlohmann::json::parse(r.body, nullptr, false);
  if (out.body.is_discarded()) out.body = brief(r.body);
  if (r.status == 401)
    throw Error(Errc::denied,
                "the cluster at '" + s_.url + "' refused " +
                    (user.empty() ? std::string("a request without credentials (declare 'credentials_file')")
                                  : "the credentials of user '" + user + "' from credentials_file '" + s_.credentials_file + "'") +
                    " (HTTP 401)");
  if (r.status == 403)
    throw Error(Errc::denied, "the cluster at '" + s_.url + "' forbids " + method + " '" + path + "' to " +
                                  (user.empty() ? std::string("anonymous requests") : "user '" + user + "'") + ": " + reason(out));
  return out;
}

nlohmann::json Api::ok(const std::string& method, const std::string& path, const nlohmann::json& body, std::chrono::milliseconds timeout,
                       const std::atomic<bool>* cancel) const {
  Reply r = call(method, path, body, timeout, cancel);
  if (r.status >= 400) throw Error(Errc::io, method + " '" + s_.url + path + "' answered " + std::to_string(r.status) + ": " + reason(r));
  return r.body;
}

std::string Api::reason(const Reply& r) {
  const auto& b = r.body;
  if (b.is_object() && b.contains("error")) {
    const auto& e = b["error"];
    if (e.is_object()) {
      std::string t = e.value("type", ""), why = e.value("reason", "");
      // The root cause says more than "repository_verification_exception" alone.
      if (e.contains("caused_by") && e["caused_by"].is_object()) why += " (" + e["caused_by"].value("reason", "") + ")";
      return t.empty() ? why : t + ": " + why;
    }
    if (e.is_string()) return e.get<std::string>();
  }
  return b.is_string() ? b.get<std::string>() : brief(b.dump());
}

ClusterInfo cluster_info(const Api& api) {
  ClusterInfo c;
  auto root = api.ok("GET", "/", nullptr, std::chrono::seconds(10));
  if (!root.is_object() || !root.contains("version") || !root["version"].is_object())
    throw Error(Errc::io, "'" + api.url() + "' is not an OpenSearch or Elasticsearch node (GET / has no version)");
  c.name = root.value("cluster_name", "");
  c.uuid = root.value("cluster_uuid", "");
  c.version = root["version"].value("number", "");
  c.distribution = root["version"].value("distribution", "elasticsearch");
  auto h = api.ok("GET", "/_cluster/health", nullptr, std::chrono::seconds(30));
  c.health = h.value("status", "");
  c.nodes = h.value("number_of_nodes", 0);
  return c;
}

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const auto& n : names) s += (s.empty() ? "" : ",") + n;
  return s;
}

}  // namespace cairn::agent::opensearch
