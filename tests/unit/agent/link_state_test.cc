// LinkState tells an unreachable controller (keep the socket, libzmq
// retries) from one that is reached and silent (new socket after a backoff);
// and libzmq does what the session relies on when it keeps the socket.
#include "agent/link_state.h"

#include <catch2/catch.hpp>
#include <cstring>
#include <thread>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "agent_fixture.h"

using namespace cairn::agent;
using Clock = LinkState::Clock;
using namespace std::chrono_literals;

TEST_CASE("link state: unreachable only with no TCP connection since the controller was last heard from") {
  LinkState link;
  auto t0 = Clock::now();
  // Never connected (the controller was down when the agent started).
  CHECK(link.unreachable_since(t0));
  link.on_event(ZMQ_EVENT_CONNECTED, t0 + 1s);
  CHECK(link.up());
  // Connected and silent: a wedged controller, or a handshake it cannot finish.
  CHECK_FALSE(link.unreachable_since(t0 + 2s));
  link.on_event(ZMQ_EVENT_DISCONNECTED, t0 + 3s);
  CHECK_FALSE(link.up());
  // The connection came and went after the last message: reached, then
  // dropped (a wrong key is refused this way, again and again).
  CHECK_FALSE(link.unreachable_since(t0 + 500ms));
  // Heard from after that connection, and no connection since: down.
  CHECK(link.unreachable_since(t0 + 2s));
  // Events the link does not track change nothing.
  link.on_event(ZMQ_EVENT_HANDSHAKE_SUCCEEDED, t0 + 4s);
  CHECK(link.unreachable_since(t0 + 2s));
  link.reset();
  CHECK_FALSE(link.up());
  CHECK(link.unreachable_since(t0));
}

TEST_CASE("link state: an outage is waited out once, and the connection that ends it says so") {
  LinkState link;
  auto t0 = Clock::now();
  link.on_event(ZMQ_EVENT_CONNECTED, t0);
  // Reached and silent: no wait, the caller backs off.
  CHECK_FALSE(link.await_if_unreachable(t0 - 1s));
  CHECK_FALSE(link.awaiting());
  link.on_event(ZMQ_EVENT_DISCONNECTED, t0 + 1s);
  // Down since it was heard from at t0 + 500 ms: the wait starts once.
  CHECK(link.await_if_unreachable(t0 + 500ms));
  CHECK(link.awaiting());
  CHECK_FALSE(link.await_if_unreachable(t0 + 500ms));
  CHECK(link.awaiting());
  // Other events do not end it; the next connection does, once.
  CHECK_FALSE(link.on_event(ZMQ_EVENT_DISCONNECTED, t0 + 2s));
  CHECK(link.awaiting());
  CHECK(link.on_event(ZMQ_EVENT_CONNECTED, t0 + 3s));
  CHECK_FALSE(link.awaiting());
  CHECK_FALSE(link.on_event(ZMQ_EVENT_CONNECTED, t0 + 4s));
  // A new socket forgets the wait.
  link.on_event(ZMQ_EVENT_DISCONNECTED, t0 + 5s);
  REQUIRE(link.await_if_unreachable(t0 + 4500ms));
  link.reset();
  CHECK_FALSE(link.awaiting());
}

namespace {
// Reads the monitor's events into link until pred holds or the deadline.
template <class Pred>
bool pump(zmq::socket_t& monitor, LinkState& link, Pred pred, std::chrono::milliseconds limit) {
  auto until = Clock::now() + limit;
  while (Clock::now() < until) {
    zmq::pollitem_t item{monitor.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, 50ms);
    while (true) {
      zmq::message_t ev, addr;
      if (!monitor.recv(ev, zmq::recv_flags::dontwait)) break;
      if (ev.more()) (void)monitor.recv(addr, zmq::recv_flags::dontwait);
      uint16_t event = 0;
      std::memcpy(&event, ev.data(), 2);
      link.on_event(event, Clock::now());
    }
    if (pred()) return true;
  }
  return pred();
}
}  // namespace

TEST_CASE("link state: a kept socket reconnects by itself and delivers what waited in it") {
  zmq::context_t ctx;
  // A port nobody listens on, for now: free_port()'s, below the ephemeral
  // range and locked against the other tests. One bound and released
  // ("tcp://127.0.0.1:*") could be handed to a listener that another test
  // binds to port 0 meanwhile, and the dealer would connect there (CI saw it:
  // connected while "unreachable", "register" never reached this router).
  const std::string endpoint = "tcp://127.0.0.1:" + std::to_string(cairn::agent::test::free_port());
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  set_reconnect_options(dealer.handle());
  REQUIRE(dealer.get(zmq::sockopt::reconnect_ivl_max) == kReconnectIvlMaxMs);
  REQUIRE(zmq_socket_monitor(dealer.handle(), "inproc://link-state-test", kLinkEvents) == 0);
  zmq::socket_t monitor(ctx, zmq::socket_type::pair);
  monitor.connect("inproc://link-state-test");
  dealer.connect(endpoint);
  auto heard = Clock::now();
  // What the session sent before the outage was noticed waits in the socket.
  dealer.send(zmq::str_buffer("register"), zmq::send_flags::dontwait);

  LinkState link;
  // Retries against a closed port: refused at once, never connected, until
  // the backoff between retries has reached its cap.
  pump(
      monitor, link, [] { return false; }, 2500ms);
  CHECK_FALSE(link.up());
  CHECK(link.unreachable_since(heard));

  zmq::socket_t router(ctx, zmq::socket_type::router);
  router.set(zmq::sockopt::linger, 0);
  router.bind(endpoint);
  auto listening = Clock::now();
  // Back within the retry cap plus jitter (generous: a loaded machine).
  REQUIRE(pump(
      monitor, link, [&] { return link.up(); }, 5000ms));
  CHECK(Clock::now() - listening < 5s);
  CHECK_FALSE(link.unreachable_since(heard));
  std::vector<zmq::message_t> got;
  zmq::pollitem_t item{router.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, 5000ms);
  REQUIRE(zmq::recv_multipart(router, std::back_inserter(got), zmq::recv_flags::dontwait));
  REQUIRE(got.size() == 2);
  CHECK(got[1].to_string() == "register");

  // The listener goes: the link is down, and was reached after `heard`.
  router.close();
  REQUIRE(pump(
      monitor, link, [&] { return !link.up(); }, 5000ms));
  CHECK_FALSE(link.unreachable_since(heard));
  CHECK(link.unreachable_since(Clock::now()));
  zmq_socket_monitor(dealer.handle(), nullptr, 0);
}
