// A state change and its audit event commit together or not at all.
#include <catch2/catch.hpp>

#include "catalog_fixture.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

TEST_CASE("a transaction that throws leaves neither the change nor its audit event") {
  Fixture f;
  CurveKey key{};
  key.fill(3);
  std::string id = f.cat.transaction("operator:test", [&](Tx& tx) { return tx.enrol_agent("node-3", key, "h", "v"); });
  size_t events = f.audit_count();

  REQUIRE_THROWS_WITH(f.cat.transaction("operator:test",
                                        [&](Tx& tx) {
                                          tx.set_agent_state(id, AgentState::approved);
                                          throw std::runtime_error("operator api lost the connection");
                                        }),
                      "operator api lost the connection");

  auto agent = f.cat.read([&](const Tx& tx) { return tx.agent(id); });
  REQUIRE(agent->state == AgentState::pending);
  REQUIRE(f.audit_count() == events);
  REQUIRE(f.cat.verify_audit_chain().ok);

  // The connection is usable afterwards and the chain continues cleanly.
  f.cat.transaction("operator:test", [&](Tx& tx) { tx.set_agent_state(id, AgentState::approved); });
  REQUIRE(f.audit_count() == events + 1);
  REQUIRE(f.cat.verify_audit_chain().ok);
}

TEST_CASE("a constraint failure inside a transaction rolls back earlier writes too") {
  Fixture f;
  CurveKey a{}, b{};
  a.fill(1);
  b.fill(2);
  REQUIRE_THROWS_AS(f.cat.transaction("operator:test",
                                      [&](Tx& tx) {
                                        tx.enrol_agent("node-a", a, "", "");
                                        tx.enrol_agent("node-a", b, "", "");  // same name
                                      }),
                    Error);
  REQUIRE(f.cat.read([](const Tx& tx) { return tx.agents().size(); }) == 0);
  REQUIRE(f.audit_count() == 0);
}

TEST_CASE("every state change writes exactly its audit event in the same transaction") {
  Fixture f;
  std::string id = f.approved_agent("node-1", 1);
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events.size() == 2);
  REQUIRE(events[0].action == "agent.enrol");
  REQUIRE(events[0].target == "agent:" + id);
  REQUIRE(events[0].outcome == "pending");
  REQUIRE(events[1].action == "agent.approve");
  REQUIRE(events[1].actor == "operator:test");

  // A heartbeat is not audited; a changed component list is, an unchanged one not.
  f.cat.transaction("agent:" + id, [&](Tx& tx) {
    tx.touch_agent(id);
    tx.set_agent_components(id, {{"etc", "files", true}});
    tx.set_agent_components(id, {{"etc", "files", true}});
  });
  REQUIRE(f.audit_count() == 3);
}

TEST_CASE("a transaction inside a transaction is refused") {
  Fixture f;
  REQUIRE_THROWS_WITH(f.cat.transaction("controller", [&](Tx&) { f.cat.read([](const Tx&) {}); }), Catch::Contains("already open"));
}

TEST_CASE("revocation is final and approval of an unknown agent fails") {
  Fixture f;
  std::string id = f.approved_agent("node-1", 1);
  f.cat.transaction("operator:test", [&](Tx& tx) { tx.set_agent_state(id, AgentState::revoked); });
  REQUIRE_THROWS_WITH(f.cat.transaction("operator:test", [&](Tx& tx) { tx.set_agent_state(id, AgentState::approved); }),
                      Catch::Contains("is revoked"));
  REQUIRE_THROWS_AS(f.cat.transaction("operator:test", [&](Tx& tx) { tx.set_agent_state("ag-none", AgentState::approved); }), Error);
  auto a = f.cat.read([&](const Tx& tx) { return tx.agent(id); });
  REQUIRE(a);
  REQUIRE(a->state == AgentState::revoked);
  // The name is released: the record keeps one of its own, and a new key may
  // enrol under the old name.
  CHECK(a->name.rfind("node-1.revoked-", 0) == 0);
  CHECK(f.cat.read([&](const Tx& tx) { return tx.name_released("node-1"); }));
  CHECK_NOTHROW(f.approved_agent("node-1", 7));
  CHECK_FALSE(f.cat.read([&](const Tx& tx) { return tx.name_released("node-1"); }));
}
