#include "agent/drivers/prometheus/api.h"

#include <cstdio>

#include "agent/platform/http.h"
#include "common/util/error.h"

namespace cairn::agent::prometheus {

namespace {

using platform::HttpRequest;
using platform::HttpResponse;
using namespace std::chrono_literals;

std::string brief(const std::string& body) {
  std::string s = body.substr(0, 200);
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// The "error" of an API reply, or its beginning when it is not JSON.
std::string api_error(const HttpResponse& r) {
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (j.is_object() && j.contains("error") && j["error"].is_string()) return j["error"].get<std::string>();
  return brief(r.body);
}

bool admin_disabled(const HttpResponse& r) {
  return r.status == 404 || r.status == 405 || api_error(r).find("admin APIs disabled") != std::string::npos;
}

std::string seconds_param(int64_t ms) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%lld.%03lld", static_cast<long long>(ms / 1000),
                static_cast<long long>(ms < 0 ? -(ms % 1000) : ms % 1000));
  return buf;
}

}  // namespace

int64_t parse_duration_ms(const std::string& text) {
  if (text.empty()) return -1;
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t j = i;
    while (j < text.size() && text[j] >= '0' && text[j] <= '9') ++j;
    if (j == i || j - i > 12) return -1;
    int64_t n = std::stoll(text.substr(i, j - i));
    size_t k = j;
    while (k < text.size() && (text[k] < '0' || text[k] > '9')) ++k;
    std::string unit = text.substr(j, k - j);
    int64_t ms = unit == "ms"  ? 1
                 : unit == "s" ? 1000
                 : unit == "m" ? 60'000
                 : unit == "h" ? 3'600'000
                 : unit == "d" ? 86'400'000
                 : unit == "w" ? 604'800'000
                 : unit == "y" ? 31'536'000'000
                               : -1;
    if (ms < 0) return -1;
    total += n * ms;
    i = k;
  }
  return total;
}

bool Api::ready(std::string* why) const {
  HttpRequest req;
  req.url = base_ + "/-/ready";
  req.timeout = 5s;
  try {
    auto r = platform::http_request(req);
    if (r.status == 200) return true;
    if (why) *why = "GET '" + req.url + "' answered " + std::to_string(r.status) + ": " + brief(r.body);
  } catch (const Error& e) {
    if (why) *why = e.what();
  }
  return false;
}

Api::Admin Api::admin_api() const {
  HttpRequest req;
  req.method = "POST";
  req.url = base_ + "/api/v1/admin/tsdb/delete_series";
  req.timeout = 10s;
  auto r = platform::http_request(req);
  if (admin_disabled(r)) return Admin::off;
  if (r.status == 400) return Admin::on;  // "no match[] parameter provided"
  throw Error(Errc::io,
              "prometheus at '" + base_ + "': unexpected answer " + std::to_string(r.status) + " to the admin API probe: " + api_error(r));
}

nlohmann::json Api::get_data(const std::string& path, std::chrono::milliseconds timeout, size_t max_body) const {
  HttpRequest req;
  req.url = base_ + path;
  req.timeout = timeout;
  req.max_body = max_body;
  auto r = platform::http_request(req);
  if (r.status != 200) throw Error(Errc::io, "GET '" + req.url + "' answered " + std::to_string(r.status) + ": " + api_error(r));
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  if (!j.is_object() || j.value("status", "") != "success" || !j.contains("data"))
    throw Error(Errc::io, "GET '" + req.url + "': not a Prometheus API reply: " + brief(r.body));
  return j["data"];
}

nlohmann::json Api::flags() const {
  auto d = get_data("/api/v1/status/flags", 10s);
  if (!d.is_object()) throw Error(Errc::io, "prometheus at '" + base_ + "': /api/v1/status/flags is not an object");
  return d;
}

std::string Api::retention() const {
  auto d = get_data("/api/v1/status/runtimeinfo", 10s);
  if (!d.is_object() || !d.contains("storageRetention") || !d["storageRetention"].is_string())
    throw Error(Errc::io, "prometheus at '" + base_ + "': /api/v1/status/runtimeinfo has no storageRetention");
  return d["storageRetention"].get<std::string>();
}

std::string Api::version() const {
  auto d = get_data("/api/v1/status/buildinfo", 10s);
  if (!d.is_object() || !d.contains("version") || !d["version"].is_string())
    throw Error(Errc::io, "prometheus at '" + base_ + "': /api/v1/status/buildinfo has no version");
  return d["version"].get<std::string>();
}

std::string Api::snapshot(std::chrono::milliseconds timeout, const std::atomic<bool>* cancel) const {
  HttpRequest req;
  req.cancel = cancel;
  req.method = "POST";
  req.url = base_ + "/api/v1/admin/tsdb/snapshot";
  req.timeout = timeout;
  auto r = platform::http_request(req);
  if (r.status != 200) {
    if (admin_disabled(r))
      throw Error(Errc::unsupported, "prometheus at '" + base_ + "' has its admin API off (" + api_error(r) + "): start it with " +
                                         kAdminFlag + " to let cairn take snapshots");
    throw Error(Errc::io, "POST '" + req.url + "' answered " + std::to_string(r.status) + ": " + api_error(r));
  }
  auto j = nlohmann::json::parse(r.body, nullptr, false);
  std::string name;
  if (j.is_object() && j.contains("data") && j["data"].is_object() && j["data"].contains("name") && j["data"]["name"].is_string())
    name = j["data"]["name"].get<std::string>();
  // A plain name: it is joined under <data_dir>/snapshots and later removed.
  if (name.empty() || name == "." || name == ".." || name.find('/') != std::string::npos || name.find('\0') != std::string::npos)
    throw Error(Errc::io, "POST '" + req.url + "': no usable snapshot name in the reply: " + brief(r.body));
  return name;
}

size_t Api::series_count(int64_t start_ms, int64_t end_ms) const {
  // Every series is listed: a large server's list is large.
  auto d = get_data("/api/v1/series?match%5B%5D=" + platform::url_encode("{__name__=~\".+\"}") + "&start=" + seconds_param(start_ms) +
                        "&end=" + seconds_param(end_ms),
                    120s, size_t{1} << 30);
  if (!d.is_array()) throw Error(Errc::io, "prometheus at '" + base_ + "': /api/v1/series is not a list");
  return d.size();
}

}  // namespace cairn::agent::prometheus
