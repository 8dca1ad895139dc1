#pragma once
// One request, one reply over a stream socket: HAProxy's stats socket (a Unix
// socket, "show servers state\n") and ZooKeeper's four-letter words (TCP,
// "srvr"). Connects, writes the request, reads until the peer closes the
// connection, the deadline passes or max_bytes is reached (an error).
#include <chrono>
#include <cstdint>
#include <string>

namespace cairn::agent::platform {

struct SocketAddress {
  std::string unix_path;  // set: a Unix stream socket
  std::string host;       // else TCP host (name or address) and port
  uint16_t port = 0;
  std::string describe() const;  // "unix:/run/haproxy.sock" or "127.0.0.1:2181"
};

// Parses "unix:/path", "/path" (Unix), "host:port", "[v6]:port". Throws cairn::Error(invalid_input).
SocketAddress parse_socket_address(const std::string& text);

// Throws cairn::Error (Errc::io) naming the address and the reason when it
// cannot connect, write or read in time, or the reply exceeds max_bytes.
std::string socket_exchange(const SocketAddress& addr, const std::string& request,
                            std::chrono::milliseconds timeout = std::chrono::seconds(10), size_t max_bytes = 64 << 20);

}  // namespace cairn::agent::platform
