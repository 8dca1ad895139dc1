#pragma once
// The controller's HTTP listener (libmicrohttpd, its own thread): GET
// /metrics (Prometheus text format) and GET / (the status page), read-only.
// It serves text the controller's loop renders (status_view.h) and never
// touches the catalog itself.
//
// With a token, every request needs "Authorization: Bearer <token>" (a
// Prometheus scrape config's `authorization: {credentials_file: ...}`);
// without one the listener must be on a loopback address
// (docs/configuration.md § [http]).
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

struct MHD_Daemon;
struct MHD_Connection;

namespace cairn::controller {

class HttpServer {
 public:
  // host: an IPv4 or IPv6 address; port 0 picks a free one. Throws
  // cairn::Error(io) when it cannot listen, with the reason.
  HttpServer(const std::string& host, uint16_t port, std::string token);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  uint16_t port() const { return port_; }
  void set_content(std::string metrics, std::string page);

 private:
  static int on_request(void* self, MHD_Connection* c, const char* url, const char* method, const char* version, const char* upload,
                        size_t* upload_size, void** state);
  int answer(MHD_Connection* c, const std::string& url, const std::string& method);

  std::string token_;
  MHD_Daemon* daemon_ = nullptr;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::shared_ptr<const std::string> metrics_, page_;
};

// "127.0.0.1:7422", "[::1]:7422" -> host and port. Throws cairn::Error(invalid_input).
std::pair<std::string, uint16_t> split_host_port(const std::string& listen);
bool is_loopback(const std::string& host);

}  // namespace cairn::controller
