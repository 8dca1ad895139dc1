#pragma once
// The one HTTP client of the remote backends: libcurl easy handles kept in a
// pool, so connections stay open between requests (keep-alive) and no more than
// max_connections requests run at once (a caller waits for a free handle).
// It moves bytes and nothing else: status codes mean something only to the
// backend that asked.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "common/util/encoding.h"

namespace cairn::repo::storage {

struct HttpSettings {
  int max_connections = 16;  // requests at once per open repository (uploads, restore writers)
  long connect_timeout_s = 10;
  // A transfer that moves less than 1 byte/s for this long is cut (a stalled server).
  long stall_timeout_s = 60;
  // For tests only: CAIRN_STORAGE_TIMEOUTS_FOR_TESTS="CONNECT,STALL" (seconds).
  static HttpSettings from_env(HttpSettings base);
};

struct HttpRequest {
  std::string method = "GET";
  std::string url;
  std::vector<std::pair<std::string, std::string>> headers{};
  std::span<const uint8_t> body{};
  Bytes* into = nullptr;  // the response body goes here (reused buffer) instead of HttpResponse::body
};

struct HttpResponse {
  long status = 0;                                           // 0: no response (transport error)
  std::string transport_error;                               // what libcurl said when status == 0 or the body was cut short
  std::vector<std::pair<std::string, std::string>> headers;  // names lowercased
  Bytes body;
  std::string header(const std::string& lower_name) const;
};

class HttpClient {
 public:
  explicit HttpClient(HttpSettings s = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;
  // Never throws for HTTP or network failures: they are in the response.
  HttpResponse perform(const HttpRequest& r);

  uint64_t requests() const { return requests_.load(); }
  uint64_t bytes_sent() const { return sent_.load(); }
  uint64_t bytes_received() const { return received_.load(); }

 private:
  void* acquire();
  void release(void* h, bool reuse);

  HttpSettings s_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<void*> idle_;
  int live_ = 0;
  std::atomic<uint64_t> requests_{0}, sent_{0}, received_{0};
};

}  // namespace cairn::repo::storage
