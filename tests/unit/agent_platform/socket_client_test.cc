// The request/reply socket client against servers in the test: a Unix
// socket (as HAProxy's stats socket) and TCP (as ZooKeeper's four-letter words).
#include "agent/platform/socket_client.h"

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <thread>

#include "common/util/error.h"
#include "platform_fixture.h"

using namespace cairn;
using namespace cairn::agent::platform;
using namespace cairn::agent::platform::test;
using namespace std::chrono_literals;

namespace {

// Accepts one connection, reads one line, answers with reply(line) and closes
// (or holds the connection open for `hold` first).
class OneShotServer {
 public:
  OneShotServer(int fd, std::function<std::string(const std::string&)> reply, std::chrono::milliseconds hold = 0ms) : fd_(fd) {
    ::listen(fd_, 1);
    thread_ = std::thread([this, reply, hold] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string line;
      char ch;
      while (::read(c, &ch, 1) == 1 && ch != '\n') line += ch;
      std::string out = reply(line);
      for (size_t off = 0; off < out.size();) {
        ssize_t w = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
        if (w <= 0) break;
        off += static_cast<size_t>(w);
      }
      std::this_thread::sleep_for(hold);
      ::close(c);
    });
  }
  ~OneShotServer() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }

 private:
  int fd_;
  std::thread thread_;
};

int unix_listener(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::strncpy(a.sun_path, path.c_str(), sizeof a.sun_path - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  return fd;
}

int tcp_listener(uint16_t& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  socklen_t l = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &l);
  port = ntohs(a.sin_port);
  return fd;
}

}  // namespace

TEST_CASE("socket: a request and its reply over a Unix socket") {
  TempDir d;
  std::string path = d.file("stats.sock");
  OneShotServer srv(unix_listener(path), [](const std::string& line) {
    return line == "show servers state" ? std::string("1\n# be_id be_name\n3 web 1 s1 127.0.0.1 2\n\n") : "?";
  });
  auto reply = socket_exchange(parse_socket_address("unix:" + path), "show servers state\n");
  CHECK(reply == "1\n# be_id be_name\n3 web 1 s1 127.0.0.1 2\n\n");
}

TEST_CASE("socket: a request and its reply over TCP, a large reply read whole") {
  uint16_t port = 0;
  int fd = tcp_listener(port);
  std::string big(3 << 20, 'm');
  OneShotServer srv(fd, [&](const std::string& line) { return line == "srvr" ? big : std::string("?"); });
  auto reply = socket_exchange(parse_socket_address("127.0.0.1:" + std::to_string(port)), "srvr\n");
  CHECK(reply == big);
}

TEST_CASE("socket: a reply over max_bytes is an error") {
  uint16_t port = 0;
  int fd = tcp_listener(port);
  OneShotServer srv(fd, [](const std::string&) { return std::string(10000, 'x'); });
  SocketAddress a{.unix_path = {}, .host = "127.0.0.1", .port = port};
  CHECK_THROWS_WITH(socket_exchange(a, "x\n", 5s, 100), Catch::Contains("larger than 100 bytes"));
}

TEST_CASE("socket: a peer that does not close is an error at the deadline") {
  uint16_t port = 0;
  int fd = tcp_listener(port);
  OneShotServer srv(
      fd, [](const std::string&) { return std::string("partial"); }, 2s);
  SocketAddress a{.unix_path = {}, .host = "127.0.0.1", .port = port};
  auto t0 = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(socket_exchange(a, "x\n", 300ms), Catch::Contains("timed out") && Catch::Contains(a.describe()));
  CHECK(std::chrono::steady_clock::now() - t0 < 2s);
}

TEST_CASE("socket: no listener is an error naming the address") {
  TempDir d;
  auto a = parse_socket_address(d.file("none.sock"));
  CHECK_THROWS_WITH(socket_exchange(a, "x\n"), Catch::Contains("unix:" + d.file("none.sock")) && Catch::Contains("cannot connect"));
  uint16_t port = 0;
  ::close(tcp_listener(port));  // bound, never listening, closed
  SocketAddress t{.unix_path = {}, .host = "127.0.0.1", .port = port};
  CHECK_THROWS_WITH(socket_exchange(t, "x\n"), Catch::Contains("127.0.0.1:" + std::to_string(port)) && Catch::Contains("refused"));
}

TEST_CASE("socket: addresses are parsed or refused with the expected forms") {
  CHECK(parse_socket_address("unix:/run/haproxy.sock").unix_path == "/run/haproxy.sock");
  CHECK(parse_socket_address("/run/haproxy.sock").describe() == "unix:/run/haproxy.sock");
  auto t = parse_socket_address("zk1.example:2181");
  CHECK(t.host == "zk1.example");
  CHECK(t.port == 2181);
  auto v6 = parse_socket_address("[::1]:2181");
  CHECK(v6.host == "::1");
  CHECK(v6.describe() == "[::1]:2181");
  for (const char* bad :
       {"", "unix:", "unix:relative", "host", "host:", "host:0", "host:70000", "host:12a", "::1:2181", "[::1]2181", ":2181"}) {
    INFO(bad);
    CHECK_THROWS_AS(parse_socket_address(bad), Error);
  }
  CHECK_THROWS_WITH(parse_socket_address("host"), Catch::Contains("host:port"));
}
