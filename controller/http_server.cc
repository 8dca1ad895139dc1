// The controller's read-only HTTP listener (http_server.h).
#include "controller/http_server.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <openssl/crypto.h>

#include <cstring>

#include "common/util/error.h"

namespace cairn::controller {

std::pair<std::string, uint16_t> split_host_port(const std::string& listen) {
  std::string host, port;
  if (!listen.empty() && listen[0] == '[') {
    auto close = listen.find(']');
    if (close == std::string::npos || close + 1 >= listen.size() || listen[close + 1] != ':')
      throw Error(Errc::invalid_input, "'" + listen + "' is not [IPv6]:port");
    host = listen.substr(1, close - 1);
    port = listen.substr(close + 2);
  } else {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos) throw Error(Errc::invalid_input, "'" + listen + "' is not host:port");
    host = listen.substr(0, colon);
    port = listen.substr(colon + 1);
  }
  char* end = nullptr;
  long p = std::strtol(port.c_str(), &end, 10);
  if (port.empty() || *end || p < 0 || p > 65535) throw Error(Errc::invalid_input, "'" + listen + "': bad port '" + port + "'");
  in6_addr a6{};
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) != 1 && inet_pton(AF_INET6, host.c_str(), &a6) != 1)
    throw Error(Errc::invalid_input,
                "'" + listen + "': '" + host + "' is not an IP address (give 127.0.0.1, ::1 or an address of this host)");
  return {host, uint16_t(p)};
}

constexpr unsigned kConnections = 512;  // poll(): no FD_SETSIZE bound
constexpr unsigned kPerAddress = 16;
constexpr unsigned kIdleSeconds = 5;

bool is_loopback(const std::string& host) {
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  return inet_pton(AF_INET6, host.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

HttpServer::HttpServer(const std::string& host, uint16_t port, std::string token)
    : token_(std::move(token)),
      metrics_(std::make_shared<std::string>("# the controller has not rendered its metrics yet\n")),
      page_(std::make_shared<std::string>("<!DOCTYPE html><html><body><p>starting</p></body></html>\n")) {
  sockaddr_storage ss{};
  socklen_t len = 0;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL;
  if (host.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    inet_pton(AF_INET6, host.c_str(), &a->sin6_addr);
    len = sizeof *a;
    flags |= MHD_USE_IPv6;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    inet_pton(AF_INET, host.c_str(), &a->sin_addr);
    len = sizeof *a;
  }
  (void)len;
  daemon_ = MHD_start_daemon(flags, port, nullptr, nullptr, reinterpret_cast<MHD_AccessHandlerCallback>(&HttpServer::on_request), this,
                             MHD_OPTION_SOCK_ADDR, reinterpret_cast<sockaddr*>(&ss),
                             // Slow or idle clients (no token needed to open a
                             // connection) cannot take every slot: at most
                             // kPerAddress from one address, kConnections in
                             // all, each dropped after kIdleSeconds without a
                             // byte (issue 32: 100 slow clients held all 64).
                             MHD_OPTION_CONNECTION_LIMIT, kConnections, MHD_OPTION_PER_IP_CONNECTION_LIMIT, kPerAddress,
                             MHD_OPTION_CONNECTION_TIMEOUT, kIdleSeconds, MHD_OPTION_END);
  if (!daemon_)
    throw Error(Errc::io, "cannot listen on " + host + ":" + std::to_string(port) +
                              " for /metrics and the status page (is the port in use? see [http] listen)");
  const MHD_DaemonInfo* info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
  port_ = info ? info->port : port;
}

HttpServer::~HttpServer() {
  if (daemon_) MHD_stop_daemon(daemon_);
}

void HttpServer::set_content(std::string metrics, std::string page) {
  auto m = std::make_shared<const std::string>(std::move(metrics));
  auto p = std::make_shared<const std::string>(std::move(page));
  std::lock_guard g(mu_);
  metrics_ = std::move(m);
  page_ = std::move(p);
}

int HttpServer::on_request(void* self, MHD_Connection* c, const char* url, const char* method, const char*, const char*,
                           size_t* upload_size, void** state) {
  // The first call for a request only announces it; answer on the second.
  if (*state == nullptr) {
    static int marker;
    *state = &marker;
    return MHD_YES;
  }
  if (*upload_size != 0) {  // a body: discarded (every method but GET and HEAD is refused below)
    *upload_size = 0;
    return MHD_YES;
  }
  return static_cast<HttpServer*>(self)->answer(c, url ? url : "", method ? method : "");
}

int HttpServer::answer(MHD_Connection* c, const std::string& url, const std::string& method) {
  auto reply = [&](unsigned status, const std::string& body, const char* type) {
    MHD_Response* r = MHD_create_response_from_buffer(body.size(), const_cast<char*>(body.data()), MHD_RESPMEM_MUST_COPY);
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'");
    if (status == MHD_HTTP_UNAUTHORIZED) MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"cairn\"");
    int rc = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return rc;
  };
  if (method != "GET" && method != "HEAD") return reply(MHD_HTTP_METHOD_NOT_ALLOWED, "only GET\n", "text/plain");
  if (!token_.empty()) {
    const char* auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    std::string want = "Bearer " + token_;
    if (!auth || std::strlen(auth) != want.size() || CRYPTO_memcmp(auth, want.data(), want.size()) != 0)
      return reply(MHD_HTTP_UNAUTHORIZED, "a bearer token is required (Authorization: Bearer ...)\n", "text/plain");
  }
  std::shared_ptr<const std::string> metrics, page;
  {
    std::lock_guard g(mu_);
    metrics = metrics_;
    page = page_;
  }
  if (url == "/metrics") return reply(MHD_HTTP_OK, *metrics, "text/plain; version=0.0.4; charset=utf-8");
  if (url == "/" || url == "/index.html") return reply(MHD_HTTP_OK, *page, "text/html; charset=utf-8");
  return reply(MHD_HTTP_NOT_FOUND, "not found: / is the status page, /metrics the metrics\n", "text/plain");
}

}  // namespace cairn::controller
