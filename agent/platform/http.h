#pragma once
// A small HTTP client on libcurl for drivers that speak to a local admin API
// (Prometheus). Blocking, one request per call, with a deadline; TLS with a CA
// file and client certificate when given. Responses larger than max_body are
// refused, not truncated.
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

namespace cairn::agent::platform {

struct HttpRequest {
  std::string method = "GET";  // GET, POST, PUT, DELETE
  std::string url;             // http:// or https://
  std::string body;
  std::vector<std::string> headers;  // "Name: value"
  std::string unix_socket;           // set: connect through this socket instead of TCP
  std::string ca_file, cert_file, key_file;
  std::chrono::milliseconds timeout{30'000};
  size_t max_body = 16 << 20;
  const std::atomic<bool>* cancel = nullptr;  // true: the request is abandoned (Errc::interrupted)
};

struct HttpResponse {
  long status = 0;
  std::string body;
  std::string content_type;
};

// Throws cairn::Error (Errc::io) when no response came (connection refused,
// timeout, TLS failure, body over max_body): the message names the URL and
// curl's reason. Any HTTP status is a response; the caller judges it.
HttpResponse http_request(const HttpRequest& req);

// Percent-encodes a query parameter's name or value (libcurl's escaping).
std::string url_encode(const std::string& s);

}  // namespace cairn::agent::platform
