#include "agent/platform/http.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>

#include "common/util/error.h"

namespace cairn::agent::platform {

namespace {

struct Sink {
  std::string* body;
  size_t max;
  bool over = false;
};

size_t on_body(char* data, size_t size, size_t nmemb, void* user) {
  auto* s = static_cast<Sink*>(user);
  size_t n = size * nmemb;
  if (s->body->size() + n > s->max) {
    s->over = true;
    return 0;  // curl stops with CURLE_WRITE_ERROR
  }
  s->body->append(data, n);
  return n;
}

int on_progress(void* user, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* cancel = static_cast<const std::atomic<bool>*>(user);
  return cancel->load() ? 1 : 0;  // non-zero: CURLE_ABORTED_BY_CALLBACK
}

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw Error(Errc::io, "http: libcurl could not be initialised");
  });
}

}  // namespace

HttpResponse http_request(const HttpRequest& req) {
  init_curl_once();
  const std::string where = req.method + " '" + req.url + "'" + (req.unix_socket.empty() ? "" : " through '" + req.unix_socket + "'");
  if (req.url.rfind("http://", 0) != 0 && req.url.rfind("https://", 0) != 0)
    throw Error(Errc::invalid_input, "http " + where + ": the URL must start with http:// or https://");

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> h(curl_easy_init(), &curl_easy_cleanup);
  if (!h) throw Error(Errc::io, "http " + where + ": libcurl could not create a handle");
  CURL* c = h.get();

  HttpResponse resp;
  Sink sink{&resp.body, req.max_body};
  char errbuf[CURL_ERROR_SIZE] = {0};

  curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);  // the agent is threaded: no SIGALRM for timeouts
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(req.timeout.count()));
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, &on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
  curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(c, CURLOPT_NOPROXY, "*");  // a local admin API: never through a proxy from the environment
  if (req.cancel) {
    curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, &on_progress);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, req.cancel);
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
  }
  if (!req.unix_socket.empty()) curl_easy_setopt(c, CURLOPT_UNIX_SOCKET_PATH, req.unix_socket.c_str());
  if (!req.ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, req.ca_file.c_str());
  if (!req.cert_file.empty()) curl_easy_setopt(c, CURLOPT_SSLCERT, req.cert_file.c_str());
  if (!req.key_file.empty()) curl_easy_setopt(c, CURLOPT_SSLKEY, req.key_file.c_str());

  if (req.method == "GET") {
    curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
  } else if (req.method == "POST" || req.method == "PUT" || req.method == "DELETE") {
    if (req.method != "DELETE" || !req.body.empty()) {
      curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.data());
      curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(req.body.size()));
    }
    if (req.method != "POST") curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
  } else {
    throw Error(Errc::invalid_input, "http " + where + ": unknown method (GET, POST, PUT or DELETE)");
  }

  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(nullptr, &curl_slist_free_all);
  for (const auto& hdr : req.headers) {
    curl_slist* next = curl_slist_append(headers.get(), hdr.c_str());
    if (!next) throw Error(Errc::io, "http " + where + ": out of memory for headers");
    headers.release();
    headers.reset(next);
  }
  if (headers) curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers.get());

  CURLcode rc = curl_easy_perform(c);
  if (sink.over)
    throw Error(Errc::io,
                "http " + where + ": the response is larger than " + std::to_string(req.max_body) + " bytes (refused, not truncated)");
  if (rc == CURLE_ABORTED_BY_CALLBACK) throw Error(Errc::interrupted, "http " + where + ": cancelled");
  if (rc != CURLE_OK) {
    std::string why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
    while (!why.empty() && (why.back() == '\n' || why.back() == ' ')) why.pop_back();
    throw Error(Errc::io, "http " + where + ": " + why);
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
  char* ct = nullptr;
  if (curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &ct) == CURLE_OK && ct) resp.content_type = ct;
  return resp;
}

std::string url_encode(const std::string& s) {
  init_curl_once();
  std::unique_ptr<char, decltype(&curl_free)> e(curl_easy_escape(nullptr, s.data(), static_cast<int>(s.size())), &curl_free);
  if (!e) throw Error(Errc::io, "http: libcurl could not encode a parameter");
  return e.get();
}

}  // namespace cairn::agent::platform
