#pragma once
// What an agent's socket monitor has seen of the TCP link to the controller,
// to choose between two kinds of silence (docs/protocol.md § Heartbeats and
// liveness):
//
// - The controller cannot be reached (down, restarting, its host rebooting):
//   no TCP connection since it was last heard from, and none up now. libzmq
//   already retries the connection on the same socket (ZMQ_RECONNECT_IVL,
//   kReconnectIvlMaxMs at most between tries), so the agent keeps the socket and
//   registers once a connection is made: it is back within about a second of
//   the controller listening again, however long the outage was.
// - The controller is reached but says nothing (a wedged process, a CURVE
//   handshake it cannot complete because of a wrong key): closing the socket
//   and waiting a growing backoff is what spares it.
//
// Used by agent/session.cc and by the fleet simulator (bench/fleet).
#include <zmq.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <utility>

namespace cairn::agent {

// Socket options for the DEALER: libzmq's own reconnect, doubling from 100 ms
// to this, with up to 100 ms of jitter; a TCP connect that hangs (a host that
// drops packets) is given up after kConnectTimeoutMs and tried again.
inline constexpr int kReconnectIvlMaxMs = 1000;
inline constexpr int kConnectTimeoutMs = 5000;
// The monitor events LinkState reads.
inline constexpr int kLinkEvents = ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED;

inline void set_reconnect_options(void* socket) {
  int ivl_max = kReconnectIvlMaxMs, connect_timeout = kConnectTimeoutMs;
  zmq_setsockopt(socket, ZMQ_RECONNECT_IVL_MAX, &ivl_max, sizeof ivl_max);
  zmq_setsockopt(socket, ZMQ_CONNECT_TIMEOUT, &connect_timeout, sizeof connect_timeout);
}

class LinkState {
 public:
  using Clock = std::chrono::steady_clock;

  // A new socket: nothing seen yet.
  void reset() { *this = LinkState{}; }
  // Returns true when this is the connection that ends an outage the caller
  // waits out (await_if_unreachable): time to send Register.
  bool on_event(uint16_t event, Clock::time_point now) {
    if (event == ZMQ_EVENT_CONNECTED) {
      up_ = true;
      last_connected_ = now;
      return std::exchange(awaiting_, false);
    }
    if (event == ZMQ_EVENT_DISCONNECTED) up_ = false;
    return false;
  }
  bool up() const { return up_; }
  // Silent past liveness since last_recv: when the controller is unreachable,
  // the caller keeps the socket and sends nothing until the next connection
  // (awaiting() until on_event returns true). True when this call started
  // the wait.
  bool await_if_unreachable(Clock::time_point last_recv) {
    if (awaiting_ || !unreachable_since(last_recv)) return false;
    awaiting_ = true;
    return true;
  }
  bool awaiting() const { return awaiting_; }
  // The controller was last heard from at last_recv and has been silent past
  // liveness since: true when it is unreachable (keep the socket, libzmq
  // retries), false when it is reached and silent (close it, back off).
  bool unreachable_since(Clock::time_point last_recv) const { return !up_ && (!last_connected_ || *last_connected_ < last_recv); }

 private:
  bool up_ = false;
  bool awaiting_ = false;
  std::optional<Clock::time_point> last_connected_;
};

}  // namespace cairn::agent
