// ZAP decisions against a real catalog: who passes the CURVE handshake.
#include "controller/zap.h"

#include <catch2/catch.hpp>

#include "controller/catalog/catalog_fixture.h"

using namespace cairn::controller;
using cairn::catalog::AgentState;
using cairn::catalog::Tx;

namespace {

CurveKey key(uint8_t b) {
  CurveKey k{};
  k.fill(b);
  return k;
}

struct ZapFixture : cairn::catalog::test::Fixture {
  ZapDecision decide(std::string_view domain, const CurveKey& k, bool open) {
    return cat.transaction("controller", [&](Tx& tx) { return decide_zap(tx, domain, k, open); });
  }
  std::string enrol(const std::string& name, const CurveKey& k, AgentState state) {
    return cat.transaction("operator:test", [&](Tx& tx) {
      auto id = tx.enrol_agent(name, k, "h", "v");
      if (state != AgentState::pending) tx.set_agent_state(id, state);
      return id;
    });
  }
};

}  // namespace

TEST_CASE_METHOD(ZapFixture, "an approved agent passes, with its key as user id") {
  enrol("n1", key(1), AgentState::approved);
  auto d = decide(kFleetZapDomain, key(1), false);
  CHECK(d.allow);
  CHECK(d.user_id == "agent:" + key_to_z85(key(1)));
}

TEST_CASE_METHOD(ZapFixture, "with enrolment closed an unknown key is recorded pending and refused") {
  auto d = decide(kFleetZapDomain, key(2), false);
  CHECK_FALSE(d.allow);
  CHECK(d.enrolled);
  auto a = cat.read([&](const Tx& tx) { return tx.agent_by_key(key(2)); });
  REQUIRE(a);
  CHECK(a->state == AgentState::pending);
  CHECK(a->name.rfind("pending-", 0) == 0);
  // Its retries are refused and do not enrol it twice.
  auto again = decide(kFleetZapDomain, key(2), false);
  CHECK_FALSE(again.allow);
  CHECK_FALSE(again.enrolled);
  CHECK(cat.read([&](const Tx& tx) { return tx.agents().size(); }) == 1);
  // Once an operator approves it, it passes.
  cat.transaction("operator:test", [&](Tx& tx) { tx.set_agent_state(a->id, AgentState::approved); });
  CHECK(decide(kFleetZapDomain, key(2), false).allow);
}

TEST_CASE_METHOD(ZapFixture, "with enrolment open unknown and pending keys pass, to register only") {
  CHECK(decide(kFleetZapDomain, key(3), true).allow);
  CHECK(cat.read([&](const Tx& tx) { return tx.agents().size(); }) == 0);  // recorded at Register, with its name
  enrol("n4", key(4), AgentState::pending);
  CHECK(decide(kFleetZapDomain, key(4), true).allow);
  CHECK_FALSE(decide(kFleetZapDomain, key(4), false).allow);
}

TEST_CASE_METHOD(ZapFixture, "a revoked agent is refused whatever the enrolment mode") {
  enrol("n5", key(5), AgentState::revoked);
  CHECK_FALSE(decide(kFleetZapDomain, key(5), false).allow);
  CHECK_FALSE(decide(kFleetZapDomain, key(5), true).allow);
  // Revocation released the name: the record keeps one of its own.
  CHECK_THAT(decide(kFleetZapDomain, key(5), true).reason, Catch::StartsWith("agent 'n5.revoked-") && Catch::EndsWith("' is revoked"));
}

TEST_CASE_METHOD(ZapFixture, "the operator socket admits only active operator keys") {
  enrol("n6", key(6), AgentState::approved);
  CHECK_FALSE(decide(kOperatorZapDomain, key(6), true).allow);  // an agent key is no operator key
  cat.transaction("controller", [&](Tx& tx) { tx.add_operator("alice", key(7)); });
  auto d = decide(kOperatorZapDomain, key(7), false);
  CHECK(d.allow);
  CHECK(d.user_id == "operator:alice");
  // An operator key is no agent key either, and unknown keys are not enrolled as operators.
  CHECK_FALSE(decide(kOperatorZapDomain, key(8), true).allow);
  cat.transaction("controller", [&](Tx& tx) { tx.revoke_operator("alice"); });
  CHECK_FALSE(decide(kOperatorZapDomain, key(7), false).allow);
}

TEST_CASE_METHOD(ZapFixture, "an unknown domain is refused") {
  enrol("n9", key(9), AgentState::approved);
  CHECK_FALSE(decide("", key(9), false).allow);
  CHECK_FALSE(decide("other", key(9), false).allow);
}

TEST_CASE_METHOD(ZapFixture, "unknown keys fill the pending list up to its cap, oldest dropped") {
  for (int i = 0; i < 300; ++i) {
    CurveKey k{};
    k[0] = uint8_t(i);
    k[1] = uint8_t(i >> 8);
    k[2] = 0x5a;
    auto d = cat.transaction("controller", [&](Tx& tx) { return decide_zap(tx, kFleetZapDomain, k, false, EnrolLimits{100, true}); });
    CHECK_FALSE(d.allow);
  }
  auto agents = cat.read([](const Tx& tx) { return tx.agents(); });
  CHECK(agents.size() == 100);
}

TEST_CASE_METHOD(ZapFixture, "without audit budget an unknown key is refused and not recorded") {
  auto d = cat.transaction("controller", [&](Tx& tx) { return decide_zap(tx, kFleetZapDomain, key(9), false, EnrolLimits{100, false}); });
  CHECK_FALSE(d.allow);
  CHECK_FALSE(d.enrolled);
  CHECK_THAT(d.reason, Catch::Contains("not recorded now"));
  CHECK(cat.read([](const Tx& tx) { return tx.agents().size(); }) == 0);
  CHECK(audit_count() == 0);
}

TEST_CASE("the refusal budget allows so many events a minute and counts the rest") {
  RefusalBudget b(3);
  auto t0 = RefusalBudget::Clock::now();
  CHECK(b.roll(t0) == 0);
  for (int i = 0; i < 3; ++i) {
    REQUIRE(b.available());
    b.spend();
  }
  CHECK_FALSE(b.available());
  b.suppress();
  b.suppress();
  CHECK(b.roll(t0 + std::chrono::seconds(30)) == 0);  // same minute
  CHECK_FALSE(b.available());
  CHECK(b.roll(t0 + std::chrono::seconds(61)) == 2);  // the minute ended: 2 to summarise
  CHECK(b.available());
}
