#pragma once
// What the driver asks of an OpenSearch (1.x, 2.x) or Elasticsearch 7.x
// cluster over its REST API, through agent/platform/http.h: TLS with the
// declared CA and client certificate, basic auth from the 0600 credentials
// file (read at each call, never logged). Every call throws cairn::Error
// (Errc::io) naming the method, URL and the server's reason.
#include <atomic>
#include <chrono>
#include <nlohmann/json.hpp>
#include <string>

#include "agent/drivers/opensearch/config.h"

namespace cairn::agent::opensearch {

struct Reply {
  long status = 0;
  nlohmann::json body;  // parsed JSON; a string when the body was not JSON
};

class Api {
 public:
  explicit Api(const Settings& s) : s_(s) {}
  const std::string& url() const { return s_.url; }

  // One request; a status >= 400 is returned, not thrown (the caller judges
  // it) except 401/403, which throw naming the user (never the password).
  Reply call(const std::string& method, const std::string& path, const nlohmann::json& body = nullptr,
             std::chrono::milliseconds timeout = std::chrono::seconds(30), const std::atomic<bool>* cancel = nullptr) const;
  // call(), a status >= 400 thrown with the server's reason.
  nlohmann::json ok(const std::string& method, const std::string& path, const nlohmann::json& body = nullptr,
                    std::chrono::milliseconds timeout = std::chrono::seconds(30), const std::atomic<bool>* cancel = nullptr) const;

  // "type: reason" of an error reply, or the beginning of its body.
  static std::string reason(const Reply& r);
  // "" when the credentials file is fine (or none is declared), else why not.
  std::string credentials_problem() const;

 private:
  const Settings& s_;
};

// The cluster as GET / and GET /_cluster/health tell it.
struct ClusterInfo {
  std::string name, uuid, version, distribution;
  std::string health;  // green, yellow, red
  int nodes = 0;
};
ClusterInfo cluster_info(const Api& api);

// "a-b" -> "a%2Cb"-free path segment: index names joined by ',' (already plain).
std::string join(const std::vector<std::string>& names);

}  // namespace cairn::agent::opensearch
