// What the catalog keeps of unknown keys and of the audit outbox: the pending
// list is bounded (oldest dropped), the outbox has a retention, and the
// catalog file is private to its owner.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>
#include <vector>

#include "catalog_fixture.h"
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

namespace {

CurveKey key_of(int i) {
  CurveKey k{};
  k[0] = uint8_t(i);
  k[1] = uint8_t(i >> 8);
  k[2] = 0xa5;
  return k;
}

size_t pending(Fixture& f) {
  size_t n = 0;
  for (const auto& a : f.cat.read([](const Tx& tx) { return tx.agents(); }))
    if (a.state == AgentState::pending) ++n;
  return n;
}

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return unsigned(st.st_mode & 07777);
}

}  // namespace

TEST_CASE("the pending list keeps the newest agents and drops the oldest beyond its cap") {
  Fixture f;
  std::string approved = f.approved_agent("node-1", 0xee);
  for (int i = 0; i < 30; ++i) {
    f.cat.transaction("controller", [&](Tx& tx) {
      tx.enrol_agent("pending-" + std::to_string(i), key_of(i), "", "");
      tx.drop_oldest_pending_agents(10);
    });
    f.advance_seconds(1);
  }
  CHECK(pending(f) == 10);
  f.cat.read([&](const Tx& tx) {
    CHECK_FALSE(tx.agent("pending-19"));
    CHECK(tx.agent("pending-20"));
    CHECK(tx.agent("pending-29"));
    CHECK(tx.agent(approved));  // only pending agents are ever dropped
  });
  // Each drop is audited, naming the agent.
  bool named = false;
  for (const auto& e : f.cat.read([](const Tx& tx) { return tx.audit_events(); }))
    if (e.action == "agent.pending_dropped" && e.details.find("pending-0") != std::string::npos) named = true;
  CHECK(named);
  CHECK(f.cat.verify_audit_chain().ok);
}

TEST_CASE("audit retention keeps the newest events, unpublished or not, and the chain still verifies") {
  Fixture f;
  f.cat.transaction("controller", [](Tx& tx) {
    for (int i = 0; i < 50; ++i) tx.audit({"test.event", "thing:" + std::to_string(i), "ok", "", {}});
  });
  auto n = f.cat.transaction("controller", [](Tx& tx) { return tx.prune_audit(20, int64_t(90) * 86400 * 1000); });
  CHECK(n == 30);
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events.size() == 21);  // the newest 20 and the record of the pruning
  CHECK(events.front().seq == 31);
  CHECK(events.back().action == "audit.pruned");
  CHECK(events.back().details.find("\"count\":30") != std::string::npos);
  CHECK(f.cat.verify_audit_chain().ok);
  // Nothing beyond the retention: a second pass deletes nothing... but the
  // record of the first one.
  CHECK(f.cat.transaction("controller", [](Tx& tx) { return tx.prune_audit(21, int64_t(90) * 86400 * 1000); }) == 0);
  // Any other delete of an unpublished event is still refused.
  auto db = sqlite::Db::open(f.dir.file("catalog.db"), 1000);
  REQUIRE_THROWS_WITH(db.exec("DELETE FROM audit_outbox WHERE seq = 40"), Catch::Contains("cannot be deleted"));
}

TEST_CASE("audit retention deletes events older than its age but never the newest") {
  Fixture f;
  f.cat.transaction("controller", [](Tx& tx) {
    for (int i = 0; i < 5; ++i) tx.audit({"test.old", "thing", "ok", "", {}});
  });
  f.advance_seconds(10 * 86400);
  f.cat.transaction("controller", [](Tx& tx) { tx.audit({"test.new", "thing", "ok", "", {}}); });
  f.cat.transaction("controller", [](Tx& tx) { tx.prune_audit(1000, int64_t(7) * 86400 * 1000); });
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events.size() == 2);
  CHECK(events[0].action == "test.new");
  CHECK(events[1].action == "audit.pruned");
  // All of it old: the newest stays to anchor the chain.
  f.advance_seconds(30 * 86400);
  f.cat.transaction("controller", [](Tx& tx) { tx.prune_audit(1000, int64_t(7) * 86400 * 1000); });
  events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events.size() == 2);
  CHECK(events[0].action == "audit.pruned");
  CHECK(f.cat.verify_audit_chain().ok);
}

TEST_CASE("the catalog file and its -wal and -shm are created 0600, and an existing one is tightened") {
  Fixture f;
  f.approved_agent("node-1", 1);
  for (const char* name : {"catalog.db", "catalog.db-wal", "catalog.db-shm"}) {
    INFO(name);
    CHECK(mode_of(f.dir.file(name)) == 0600);
  }
  TempDir d;
  std::string path = d.file("old.db");
  std::ofstream(path).close();
  REQUIRE(::chmod(path.c_str(), 0644) == 0);
  auto c = Catalog::open(path);
  CHECK(mode_of(path) == 0600);
  CHECK(mode_of(path + "-wal") == 0600);
}

TEST_CASE("release_memory empties the idle page cache and the catalog reads the same afterwards") {
  Fixture f;
  std::vector<std::string> ids;
  for (int i = 0; i < 200; ++i) ids.push_back(f.approved_agent("node-" + std::to_string(i), uint8_t(i + 1)));
  // Read everything back so the cache holds the agents and audit pages.
  REQUIRE(f.cat.read([](const Tx& tx) { return tx.agents().size(); }) == 200);
  REQUIRE(f.audit_count() == 400);

  int64_t freed = f.cat.release_memory();
  REQUIRE(freed > 0);                       // pages the reads above cached
  REQUIRE(f.cat.release_memory() < freed);  // nothing much left to free the second time
  REQUIRE(f.cat.read([](const Tx& tx) { return tx.agents().size(); }) == 200);
  REQUIRE(f.cat.read([&](const Tx& tx) { return tx.agent(ids[123]); })->name == "node-123");
  REQUIRE(f.cat.verify_audit_chain().ok);

  // Inside a transaction it frees nothing: the transaction's pages stay.
  f.cat.transaction("operator:test", [&](Tx& tx) {
    tx.set_agent_state(ids[7], AgentState::revoked);
    REQUIRE(f.cat.release_memory() == 0);
  });
  REQUIRE(f.cat.read([&](const Tx& tx) { return tx.agent(ids[7]); })->state == AgentState::revoked);
}
