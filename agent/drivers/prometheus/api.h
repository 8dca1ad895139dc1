#pragma once
// What the driver asks of a running Prometheus server over its HTTP API.
// Every call throws cairn::Error (Errc::io) naming the URL and what went wrong.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

namespace cairn::agent::prometheus {

// The flag without which the admin API (and so the snapshot) is off.
inline constexpr const char* kAdminFlag = "--web.enable-admin-api";

// A Prometheus duration ("15d", "1y2w", "90m", "500ms") in ms; -1 when it is not one.
int64_t parse_duration_ms(const std::string& text);

class Api {
 public:
  explicit Api(std::string base_url) : base_(std::move(base_url)) {}
  const std::string& url() const { return base_; }

  // GET /-/ready answers 200. On false, why says what answered instead.
  bool ready(std::string* why) const;

  enum class Admin { on, off };
  // Probes the admin API without changing anything: POST
  // /api/v1/admin/tsdb/delete_series without a match[] selector is refused
  // as bad_data when the API is on (nothing is deleted), and answers "admin
  // APIs disabled" (or 404/405 behind a proxy) when it is off.
  Admin admin_api() const;

  // GET /api/v1/status/flags: the flags the server runs with.
  nlohmann::json flags() const;
  // GET /api/v1/status/runtimeinfo: "storageRetention" ("15d", "15d or 512MiB").
  std::string retention() const;
  // GET /api/v1/status/buildinfo: "version".
  std::string version() const;
  // POST /api/v1/admin/tsdb/snapshot: the new snapshot's directory name under
  // <data>/snapshots. An admin API that is off is an error naming kAdminFlag.
  std::string snapshot(std::chrono::milliseconds timeout, const std::atomic<bool>* cancel = nullptr) const;
  // GET /api/v1/series for every series with samples in [start_ms, end_ms].
  size_t series_count(int64_t start_ms, int64_t end_ms) const;

 private:
  nlohmann::json get_data(const std::string& path, std::chrono::milliseconds timeout, size_t max_body = 16 << 20) const;

  std::string base_;
};

}  // namespace cairn::agent::prometheus
