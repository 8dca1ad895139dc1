#include "agent/platform/socket_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/util/error.h"

namespace cairn::agent::platform {

namespace {

using Clock = std::chrono::steady_clock;

struct Sock {
  int fd = -1;
  ~Sock() {
    if (fd >= 0) ::close(fd);
  }
};

int ms_left(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left > 0 ? static_cast<int>(std::min<long long>(left, 1 << 30)) : 0;
}

[[noreturn]] void fail(const SocketAddress& a, const std::string& what) { throw Error(Errc::io, "socket " + a.describe() + ": " + what); }

// Waits until fd is ready for `events` or the deadline passes (then throws).
void wait_for(const SocketAddress& a, int fd, short events, Clock::time_point deadline, const char* doing) {
  while (true) {
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, ms_left(deadline));
    if (r > 0) return;
    if (r == 0) fail(a, std::string("timed out ") + doing);
    if (errno != EINTR) fail(a, std::string("poll: ") + std::strerror(errno));
  }
}

// Connects a non-blocking socket within the deadline; returns the error text, empty on success.
std::string connect_within(const SocketAddress& a, int fd, const sockaddr* sa, socklen_t len, Clock::time_point deadline) {
  if (::connect(fd, sa, len) == 0) return {};
  if (errno != EINPROGRESS && errno != EAGAIN) return std::strerror(errno);
  pollfd p{fd, POLLOUT, 0};
  int r;
  do {
    r = ::poll(&p, 1, ms_left(deadline));
  } while (r < 0 && errno == EINTR);
  if (r == 0) return "timed out connecting";
  int err = 0;
  socklen_t el = sizeof err;
  ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el);
  return err ? std::strerror(err) : std::string();
}

}  // namespace

std::string SocketAddress::describe() const {
  if (!unix_path.empty()) return "unix:" + unix_path;
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

SocketAddress parse_socket_address(const std::string& text) {
  auto bad = [&](const std::string& why) -> Error {
    return Error(Errc::invalid_input, "socket address '" + text + "': " + why + " (write unix:/path, /path, host:port or [v6]:port)");
  };
  SocketAddress a;
  if (text.rfind("unix:", 0) == 0 || text.rfind('/', 0) == 0) {
    a.unix_path = text.rfind("unix:", 0) == 0 ? text.substr(5) : text;
    if (a.unix_path.empty() || a.unix_path[0] != '/') throw bad("a Unix socket path must be absolute");
    if (a.unix_path.size() >= sizeof(sockaddr_un::sun_path)) throw bad("the Unix socket path is too long");
    return a;
  }
  std::string port_s;
  if (text.rfind('[', 0) == 0) {
    auto close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() || text[close + 1] != ':') throw bad("an IPv6 address needs ']:port'");
    a.host = text.substr(1, close - 1);
    port_s = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string::npos) throw bad("no port");
    a.host = text.substr(0, colon);
    port_s = text.substr(colon + 1);
    if (a.host.find(':') != std::string::npos) throw bad("an IPv6 address must be in brackets");
  }
  if (a.host.empty()) throw bad("no host");
  if (port_s.empty() || port_s.size() > 5 || port_s.find_first_not_of("0123456789") != std::string::npos)
    throw bad("the port is not a number");
  unsigned long p = std::stoul(port_s);
  if (p == 0 || p > 65535) throw bad("the port is out of range (1-65535)");
  a.port = static_cast<uint16_t>(p);
  return a;
}

std::string socket_exchange(const SocketAddress& addr, const std::string& request, std::chrono::milliseconds timeout, size_t max_bytes) {
  const auto deadline = Clock::now() + timeout;
  Sock s;
  if (!addr.unix_path.empty()) {
    sockaddr_un sun{};
    sun.sun_family = AF_UNIX;
    if (addr.unix_path.size() >= sizeof sun.sun_path) fail(addr, "the path is too long for a Unix socket");
    std::memcpy(sun.sun_path, addr.unix_path.c_str(), addr.unix_path.size() + 1);
    s.fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s.fd < 0) fail(addr, std::string("socket: ") + std::strerror(errno));
    std::string e = connect_within(addr, s.fd, reinterpret_cast<sockaddr*>(&sun), sizeof sun, deadline);
    if (!e.empty()) fail(addr, "cannot connect: " + e);
  } else {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    int gr = ::getaddrinfo(addr.host.c_str(), std::to_string(addr.port).c_str(), &hints, &res);
    if (gr != 0) fail(addr, std::string("cannot resolve the host: ") + ::gai_strerror(gr));
    std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, &::freeaddrinfo);
    std::string last = "no address";
    for (addrinfo* ai = res; ai; ai = ai->ai_next) {
      Sock t;
      t.fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
      if (t.fd < 0) {
        last = std::strerror(errno);
        continue;
      }
      last = connect_within(addr, t.fd, ai->ai_addr, ai->ai_addrlen, deadline);
      if (last.empty()) {
        std::swap(s.fd, t.fd);
        break;
      }
    }
    if (s.fd < 0) fail(addr, "cannot connect: " + last);
  }

  size_t off = 0;
  while (off < request.size()) {
    wait_for(addr, s.fd, POLLOUT, deadline, "writing the request");
    ssize_t w = ::send(s.fd, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (w > 0) {
      off += static_cast<size_t>(w);
    } else if (w < 0 && errno != EAGAIN && errno != EINTR) {
      fail(addr, std::string("write: ") + std::strerror(errno));
    }
  }

  std::string reply;
  char buf[65536];
  while (true) {
    wait_for(addr, s.fd, POLLIN, deadline, "waiting for the reply to end (the peer did not close the connection)");
    ssize_t r = ::recv(s.fd, buf, sizeof buf, 0);
    if (r == 0) break;
    if (r < 0) {
      if (errno == EAGAIN || errno == EINTR) continue;
      // The peer may reset after its whole reply (ZooKeeper does on some
      // four-letter words): what arrived is the reply.
      if (errno == ECONNRESET && !reply.empty()) break;
      fail(addr, std::string("read: ") + std::strerror(errno));
    }
    if (reply.size() + static_cast<size_t>(r) > max_bytes) fail(addr, "the reply is larger than " + std::to_string(max_bytes) + " bytes");
    reply.append(buf, static_cast<size_t>(r));
  }
  return reply;
}

}  // namespace cairn::agent::platform
