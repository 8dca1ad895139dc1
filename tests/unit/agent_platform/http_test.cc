// The HTTP client against a small Python server (http_server.py) over TCP and
// a Unix socket: statuses are responses, failures are errors naming the URL.
#include "agent/platform/http.h"

#include <catch2/catch.hpp>

#include "common/util/error.h"
#include "platform_fixture.h"

using namespace cairn;
using namespace cairn::agent::platform;
using namespace cairn::agent::platform::test;
using namespace std::chrono_literals;

namespace {

struct Server {
  TempDir dir;
  std::string sock = dir.file("http.sock");
  Background proc{{"python3", std::string(CAIRN_PLATFORM_TEST_DIR) + "/http_server.py", dir.file("port"), sock}};
  std::string base = "http://127.0.0.1:" + wait_for_file(dir.file("port"));
};

// A TCP port nothing listens on: free_port()'s, below the ephemeral range and
// locked against the other tests (one bound and released could be handed to a
// listener another test binds to port 0 meanwhile).
int closed_port() { return cairn::agent::test::free_port(); }

}  // namespace

TEST_CASE("http: GET, POST, DELETE and headers over TCP") {
  Server s;
  HttpRequest r;
  r.url = s.base + "/hello";
  auto resp = http_request(r);
  CHECK(resp.status == 200);
  CHECK(resp.body == "hi");
  CHECK(resp.content_type == "text/plain; charset=utf-8");

  r.url = s.base + "/header";
  r.headers = {"X-Cairn: yes"};
  CHECK(http_request(r).body == "yes");

  HttpRequest p;
  p.method = "POST";
  p.url = s.base + "/api/v1/admin/tsdb/snapshot";
  resp = http_request(p);  // an empty POST body
  CHECK(resp.status == 201);
  CHECK(resp.body == "POST /api/v1/admin/tsdb/snapshot ");
  p.body = "{\"a\":1}";
  CHECK(http_request(p).body == "POST /api/v1/admin/tsdb/snapshot {\"a\":1}");

  HttpRequest d;
  d.method = "DELETE";
  d.url = s.base + "/thing";
  CHECK(http_request(d).body == "DELETE /thing");
}

TEST_CASE("http: any status is a response, not an error") {
  Server s;
  HttpRequest r;
  r.url = s.base + "/missing";
  auto resp = http_request(r);
  CHECK(resp.status == 404);
  CHECK(resp.body == "no such page");
}

TEST_CASE("http: through a Unix socket") {
  Server s;
  HttpRequest r;
  r.url = "http://localhost/hello";
  r.unix_socket = s.sock;
  auto resp = http_request(r);
  CHECK(resp.status == 200);
  CHECK(resp.body == "hi");
}

TEST_CASE("http: no answer is an error naming the URL and the reason") {
  HttpRequest r;
  r.url = "http://127.0.0.1:" + std::to_string(closed_port()) + "/-/ready";
  try {
    http_request(r);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::io);
    CHECK_THAT(e.what(), Catch::Contains("GET '" + r.url + "'") && Catch::Contains("onnect"));
  }
}

TEST_CASE("http: a response later than the timeout is an error") {
  Server s;
  HttpRequest r;
  r.url = s.base + "/slow";
  r.timeout = 300ms;
  auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(http_request(r), Catch::Contains("/slow") && Catch::Contains("timed out"));
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
}

TEST_CASE("http: a body over max_body is refused, not truncated") {
  Server s;
  HttpRequest r;
  r.url = s.base + "/big";
  r.max_body = 1000;
  CHECK_THROWS_WITH(http_request(r), Catch::Contains("larger than 1000 bytes"));
  r.max_body = 4 << 20;
  CHECK(http_request(r).body.size() == (2u << 20));
}

TEST_CASE("http: bad URLs and methods are refused before any request") {
  HttpRequest r;
  r.url = "file:///etc/passwd";
  CHECK_THROWS_WITH(http_request(r), Catch::Contains("http:// or https://"));
  r.url = "http://127.0.0.1:1/";
  r.method = "PATCH";
  CHECK_THROWS_WITH(http_request(r), Catch::Contains("unknown method"));
}

TEST_CASE("http: query parameters are percent-encoded") {
  CHECK(url_encode("{__name__=~\".+\"}") == "%7B__name__%3D~%22.%2B%22%7D");
  CHECK(url_encode("a b&c") == "a%20b%26c");
}

TEST_CASE("http: cancel abandons a request in flight") {
  Server s;
  std::atomic<bool> cancel{false};
  HttpRequest r;
  r.url = s.base + "/slow";
  r.cancel = &cancel;
  std::thread t([&] {
    std::this_thread::sleep_for(200ms);
    cancel = true;
  });
  auto t0 = std::chrono::steady_clock::now();
  try {
    http_request(r);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::interrupted);
    CHECK_THAT(e.what(), Catch::Contains("cancelled"));
  }
  t.join();
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
}
