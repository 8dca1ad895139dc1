// Whatever arrives on the agent's socket, the agent answers or drops it and
// keeps running.
#include "agent/wire.h"

#include <spdlog/spdlog.h>

#include <catch2/catch.hpp>
#include <random>

#include "agent/backoff.h"
#include "agent/config.h"
#include "agent/curve_identity.h"
#include "agent/plan_gate.h"
#include "agent/session.h"
#include "agent/task_runner.h"
#include "agent_fixture.h"
#include "common/plan/signing_key.h"
#include "proto/protocol.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::test;
namespace v1 = cairn::v1;

TEST_CASE("frames: wrong count, wrong protocol id, garbage and an empty body are refused with a reason") {
  std::string id(proto::kFleetProtocolId);
  REQUIRE(decode_controller_frames({}).error == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
  REQUIRE(decode_controller_frames({id}).error == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
  REQUIRE(decode_controller_frames({"CAIRN-FLEET/2", "x"}).error == v1::ERROR_CODE_PROTOCOL_UNSUPPORTED);
  REQUIRE(decode_controller_frames({id, "\xff\xff\xff\xff"}).error == v1::ERROR_CODE_MALFORMED_MESSAGE);
  REQUIRE(decode_controller_frames({id, ""}).error == v1::ERROR_CODE_MALFORMED_MESSAGE);

  v1::ControllerMessage m;
  m.mutable_heartbeat()->set_sent_at(1);
  std::string ok = m.SerializeAsString();
  auto d = decode_controller_frames({id, ok});
  REQUIRE(d.message);
  REQUIRE(d.message->has_heartbeat());
}

TEST_CASE("random bytes never crash the decoder or the session") {
  TempDir d;
  auto key = plan::SigningKey::generate();
  AgentConfig config = parse_config(base_config(d, plan::format_public_key(key.public_key())), "agent.toml");
  CurveIdentity me = load_or_create_identity(config.key_dir);
  PlanGate gate(config.replay_journal, config.trust_store, load_signing_keys(config.signing_keys_file), me.public_raw, 0);
  TaskRunner runner(nullptr);
  Session session(config, me, gate, runner);
  spdlog::set_level(spdlog::level::off);  // thousands of expected refusals
  std::string id(proto::kFleetProtocolId);
  std::mt19937 rng(42);
  for (int i = 0; i < 2000; ++i) {
    std::string junk(rng() % 200, '\0');
    for (auto& c : junk) c = char(rng());
    (void)decode_controller_frames({id, junk});
    // Random bytes wrapped as a plan or a key announcement reach the verifiers.
    v1::ControllerMessage m;
    if (i % 2)
      m.set_plan(junk);
    else
      m.set_key_announcement(junk);
    std::string bytes = m.SerializeAsString();
    session.handle({id, bytes});
    session.handle({id, junk});
    session.handle({junk});
  }
  spdlog::set_level(spdlog::level::info);
  REQUIRE(runner.task_ids().empty());  // nothing reached the runner
}

TEST_CASE("backoff doubles from 1 s to 32 s with bounded jitter, and resets") {
  Backoff b;
  std::vector<long> bases;
  for (int i = 0; i < 8; ++i) {
    long base = b.peek().count();
    long got = b.next().count();
    REQUIRE(got >= base);
    REQUIRE(got <= base + base / 2);
    bases.push_back(base);
  }
  REQUIRE(bases == std::vector<long>{1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000});
  b.reset();
  REQUIRE(b.peek().count() == 1000);
}
