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

namespace {

// A restore's preflight step on both agents of the fixture; returns its task ids.
std::vector<std::string> preflight_on_both(fuzz::ControllerFixture& f) {
  std::vector<std::string> ids;
  f.catalog.transaction("test", [&](catalog::Tx& tx) {
    catalog::NewRestore r;
    r.source_set_id = f.set_id;
    for (int i = 0; i < 2; ++i) {
      catalog::NewTask t{f.agent_ids[i], "etc-files", std::string("snap")};
      t.restore_step = v1::RESTORE_STEP_PREFLIGHT;
      t.cluster_id = "c1";
      r.tasks.push_back(t);
    }
    auto tasks = tx.tasks_of_restore(tx.create_restore(r));
    for (int i = 0; i < 2; ++i)
      for (const auto& t : tasks)
        if (t.agent_id == f.agent_ids[i]) ids.push_back(t.id);
  });
  return ids;
}

void send_result(fuzz::ControllerFixture& f, int i, const std::string& task_id) {
  cairn::v1::AgentMessage m;
  auto* r = m.mutable_task_result();
  r->set_task_id(task_id);
  r->set_outcome(cairn::v1::TASK_OUTCOME_SUCCEEDED);
  f.fleet->on_frames("r" + std::to_string(i), fuzz::agent_key(uint8_t(i + 1)), -1,
                     {std::string(proto::kFleetProtocolId), m.SerializeAsString()});
}

catalog::TaskState state_of(fuzz::ControllerFixture& f, const std::string& id) {
  return f.catalog.read([&](const catalog::Tx& tx) { return tx.task(id)->state; });
}

}  // namespace

// docs/protocol.md § The controller restarted mid-restore: in the first
// liveness timeout after a start, a restore step's result waits for every
// member of its restore to register again, so the next step is not made
// without a member that is on its way back.
TEST_CASE("fleet: after a start, a restore step's result waits until every member is back") {
  fuzz::ControllerFixture f;
  f.config.liveness = 50;  // a 5 s grace for this test, however slow the machine
  f.fleet = std::make_unique<controller::Fleet>(f.socket, f.catalog, f.config, f.signing_key.key_id());
  auto ids = preflight_on_both(f);
  REQUIRE(ids.size() == 2);
  f.register_agent(0);
  send_result(f, 0, ids[0]);
  f.fleet->flush_task_results();
  CHECK_FALSE(catalog::is_terminal(state_of(f, ids[0])));  // node-2 is not back yet
  f.register_agent(1);                                     // registering flushes what waits
  f.fleet->flush_task_results();
  CHECK(state_of(f, ids[0]) == catalog::TaskState::succeeded);
}

TEST_CASE("fleet: a held restore result is recorded when the first liveness timeout ends without the member") {
  fuzz::ControllerFixture f;  // liveness 2 x 100 ms
  auto ids = preflight_on_both(f);
  f.register_agent(0);
  send_result(f, 0, ids[0]);
  f.fleet->flush_task_results();  // held (node-2 is not back), unless this machine took 200 ms to get here
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  f.fleet->flush_task_results();  // the grace is over: recorded without node-2
  CHECK(state_of(f, ids[0]) == catalog::TaskState::succeeded);
}
