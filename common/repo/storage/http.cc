#include "common/repo/storage/http.h"

#include <curl/curl.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "common/util/error.h"

namespace cairn::repo::storage {
namespace {

std::once_flag g_curl_init;

struct Transfer {
  const HttpRequest* req;
  HttpResponse* resp;
  Bytes* sink;
  size_t sent = 0;
};

size_t on_write(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  t->sink->insert(t->sink->end(), reinterpret_cast<uint8_t*>(p), reinterpret_cast<uint8_t*>(p) + size * n);
  return size * n;
}

size_t on_read(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  size_t left = t->req->body.size() - t->sent;
  size_t k = std::min(left, size * n);
  std::memcpy(p, t->req->body.data() + t->sent, k);
  t->sent += k;
  return k;
}

size_t on_header(char* p, size_t size, size_t n, void* ud) {
  auto* t = static_cast<Transfer*>(ud);
  std::string line(p, size * n);
  if (line.rfind("HTTP/", 0) == 0) t->resp->headers.clear();  // a new response (after 100 Continue)
  auto colon = line.find(':');
  if (colon != std::string::npos) {
    std::string name = line.substr(0, colon);
    for (auto& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(value.begin());
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ')) value.pop_back();
    t->resp->headers.emplace_back(std::move(name), std::move(value));
  }
  return size * n;
}

}  // namespace

HttpSettings HttpSettings::from_env(HttpSettings base) {
  if (const char* e = std::getenv("CAIRN_STORAGE_TIMEOUTS_FOR_TESTS")) {
    long c = 0, s = 0;
    if (std::sscanf(e, "%ld,%ld", &c, &s) == 2 && c > 0 && s > 0) {
      base.connect_timeout_s = c;
      base.stall_timeout_s = s;
    }
  }
  return base;
}

std::string HttpResponse::header(const std::string& lower_name) const {
  for (const auto& [n, v] : headers)
    if (n == lower_name) return v;
  return {};
}

HttpClient::HttpClient(HttpSettings s) : s_(s) {
  std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (s_.max_connections < 1) s_.max_connections = 1;
}

HttpClient::~HttpClient() {
  for (void* h : idle_) curl_easy_cleanup(static_cast<CURL*>(h));
}

void* HttpClient::acquire() {
  std::unique_lock g(mu_);
  cv_.wait(g, [&] { return !idle_.empty() || live_ < s_.max_connections; });
  if (!idle_.empty()) {
    void* h = idle_.back();
    idle_.pop_back();
    return h;
  }
  ++live_;
  g.unlock();
  CURL* h = curl_easy_init();
  if (!h) {
    std::lock_guard g2(mu_);
    --live_;
    cv_.notify_one();
    throw Error(Errc::io, "cannot start an HTTP client (libcurl)");
  }
  return h;
}

void HttpClient::release(void* h, bool reuse) {
  std::lock_guard g(mu_);
  if (reuse) {
    idle_.push_back(h);
  } else {
    curl_easy_cleanup(static_cast<CURL*>(h));
    --live_;
  }
  cv_.notify_one();
}

HttpResponse HttpClient::perform(const HttpRequest& r) {
  HttpResponse resp;
  CURL* h = static_cast<CURL*>(acquire());
  curl_easy_reset(h);  // keeps the connection cache
  Transfer t{&r, &resp, r.into ? r.into : &resp.body};
  t.sink->clear();
  char errbuf[CURL_ERROR_SIZE] = {0};
  curl_slist* hl = nullptr;
  for (const auto& [n, v] : r.headers) hl = curl_slist_append(hl, (n + ": " + v).c_str());
  hl = curl_slist_append(hl, "Expect:");  // no 100-continue round trip
  curl_easy_setopt(h, CURLOPT_URL, r.url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, s_.connect_timeout_s);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
  curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, s_.stall_timeout_s);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &t);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &t);
  if (r.method == "HEAD") {
    curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
  } else if (r.method == "PUT" || r.method == "POST") {
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &t);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, curl_off_t(r.body.size()));
    if (r.method == "POST") curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "POST");
  } else if (r.method != "GET") {
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, r.method.c_str());
  }
  CURLcode rc = curl_easy_perform(h);
  requests_++;
  sent_ += t.sent;
  received_ += t.sink->size();
  if (rc == CURLE_OK) {
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &resp.status);
  } else {
    resp.status = 0;
    resp.transport_error = errbuf[0] ? errbuf : curl_easy_strerror(rc);
  }
  curl_slist_free_all(hl);
  // A handle whose transfer failed may hold a broken connection: start afresh.
  release(h, rc == CURLE_OK);
  return resp;
}

}  // namespace cairn::repo::storage
