// Liveness counts an agent's silence only up to the moment the controller
// last read every message waiting (Fleet::caught_up): a controller that spent
// longer than the liveness timeout recording 10,000 results has their
// heartbeats queued unread, and took them for agents gone silent (the
// 10,000-agent fleet benchmark on 16 CPUs: thousands of tasks failed
// agent_lost; docs/benchmarks.md).
#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include "tests/fuzz/controller_fixture.h"

using namespace cairn;

TEST_CASE("fleet: an agent is not lost while the controller has not read what is waiting for it") {
  fuzz::ControllerFixture f;  // heartbeat 100 ms, liveness 2: lost after 200 ms of silence
  f.fleet->caught_up();
  f.register_agent(0);
  REQUIRE(f.fleet->connected(f.agent_ids[0]));
  // The loop is busy for 400 ms and does not read the socket: not lost.
  std::this_thread::sleep_for(std::chrono::milliseconds(400));
  f.fleet->tick();
  CHECK(f.fleet->connected(f.agent_ids[0]));
  // Then it reads everything waiting and there was nothing from the agent:
  // its silence is over the timeout: lost.
  f.fleet->caught_up();
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // the sweep runs at most once a second
  f.fleet->tick();
  CHECK_FALSE(f.fleet->connected(f.agent_ids[0]));
}
