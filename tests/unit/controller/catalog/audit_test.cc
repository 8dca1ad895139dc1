// The audit outbox: hash chain, immutability, and verification that notices edits.
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <set>
#include <stdexcept>

#include "catalog_fixture.h"
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

namespace {

void three_events(Fixture& f) {
  f.cat.transaction("operator:alice", [](Tx& tx) {
    tx.audit({"login.refused", "operator:mallory", "refused", "unknown_key", {{"address", "10.0.0.9"}}});
    tx.audit({"test.event", "thing:1", "ok", "", {{"b", 2}, {"a", 1}}});
  });
  f.approved_agent("node-1", 1);  // two more events
}

}  // namespace

TEST_CASE("events chain from the genesis hash and verify") {
  Fixture f;
  three_events(f);
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events.size() == 4);
  REQUIRE(events[0].seq == 1);
  REQUIRE(events[0].prev_hash == kGenesisHash);
  for (size_t i = 1; i < events.size(); ++i) {
    REQUIRE(events[i].seq == events[i - 1].seq + 1);
    REQUIRE(events[i].prev_hash == events[i - 1].hash);
  }
  REQUIRE(events[0].actor == "operator:alice");
  REQUIRE(events[0].time == 1'700'000'000'000);
  // Details are stored once as compact JSON with sorted keys.
  REQUIRE(events[1].details == R"({"a":1,"b":2})");
  auto report = f.cat.verify_audit_chain();
  REQUIRE(report.ok);
  REQUIRE(report.events == 4);
}

TEST_CASE("the hash covers every field") {
  AuditEvent e{"id", 7, 123, "actor", "action", "target", "ok", "reason", "{}", kGenesisHash, ""};
  std::string h = audit_hash(e);
  REQUIRE(h.size() == 64);
  auto changed = [&](auto mutate) {
    AuditEvent c = e;
    mutate(c);
    return audit_hash(c) != h;
  };
  REQUIRE(changed([](AuditEvent& c) { c.event_id = "id2"; }));
  REQUIRE(changed([](AuditEvent& c) { c.seq = 8; }));
  REQUIRE(changed([](AuditEvent& c) { c.time = 124; }));
  REQUIRE(changed([](AuditEvent& c) { c.actor = "x"; }));
  REQUIRE(changed([](AuditEvent& c) { c.action = "x"; }));
  REQUIRE(changed([](AuditEvent& c) { c.target = "x"; }));
  REQUIRE(changed([](AuditEvent& c) { c.outcome = "x"; }));
  REQUIRE(changed([](AuditEvent& c) { c.reason = "x"; }));
  REQUIRE(changed([](AuditEvent& c) { c.details = "{ }"; }));
  REQUIRE(changed([](AuditEvent& c) { c.prev_hash = std::string(64, '1'); }));
  // Length prefixes: moving a byte between fields changes the hash.
  REQUIRE(changed([](AuditEvent& c) {
    c.actor = "actora";
    c.action = "ction";
  }));
}

TEST_CASE("the catalog refuses to change or delete an unpublished audit row") {
  Fixture f;
  three_events(f);
  auto db = sqlite::Db::open(f.dir.file("catalog.db"), 1000);
  REQUIRE_THROWS_WITH(db.exec("UPDATE audit_outbox SET outcome = 'ok' WHERE seq = 1"), Catch::Contains("audit events are immutable"));
  REQUIRE_THROWS_WITH(db.exec("DELETE FROM audit_outbox WHERE seq = 2"), Catch::Contains("cannot be deleted"));
  // Marking an event published is allowed.
  REQUIRE_NOTHROW(db.exec("UPDATE audit_outbox SET published_at = 1 WHERE seq = 1"));
}

TEST_CASE("verification catches a row changed behind the catalog's back") {
  Fixture f;
  three_events(f);
  {
    // Someone with the file drops the guard and rewrites history.
    auto db = sqlite::Db::open(f.dir.file("catalog.db"), 1000);
    db.exec("DROP TRIGGER audit_outbox_immutable; DROP TRIGGER audit_outbox_keep_unpublished;");
    SECTION("a changed field") {
      db.exec("UPDATE audit_outbox SET outcome = 'ok' WHERE seq = 1");
      auto r = f.cat.verify_audit_chain();
      REQUIRE_FALSE(r.ok);
      REQUIRE(r.first_bad_seq == 1);
      REQUIRE_THAT(r.problem, Catch::Contains("hash does not match"));
    }
    SECTION("a re-hashed row breaks the link to the next one") {
      db.exec("UPDATE audit_outbox SET outcome = 'ok', hash = 'f00' WHERE seq = 2");
      auto r = f.cat.verify_audit_chain();
      REQUIRE_FALSE(r.ok);
      REQUIRE(r.first_bad_seq == 2);
    }
    SECTION("a deleted row leaves a gap") {
      db.exec("DELETE FROM audit_outbox WHERE seq = 3");
      auto r = f.cat.verify_audit_chain();
      REQUIRE_FALSE(r.ok);
      REQUIRE(r.first_bad_seq == 4);
      REQUIRE_THAT(r.problem, Catch::Contains("missing"));
    }
  }
}

namespace {

// Counts audit events from another process (a fresh SQLite connection there,
// closed at once), the way cairnctl or a backup of the catalog would see them.
// A separate program, not fork(): a forked child inherits SQLite's per-process
// lock bookkeeping and would not behave as another process does.
int64_t events_seen_by_another_process(const std::string& path) {
  std::string cmd =
      "/usr/bin/python3 -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
      "print(c.execute(\"SELECT count(*) FROM audit_outbox\").fetchone()[0]); c.close()' '" +
      path + "'";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p);
  long long n = -1;
  if (std::fscanf(p, "%lld", &n) != 1) n = -1;
  ::pclose(p);
  return n;
}

}  // namespace

TEST_CASE("a second connection opened beside a live one leaves its commits visible to other processes") {
  // Opening and closing the file beside a live connection once dropped that
  // connection's POSIX locks: another process closing the database then deleted
  // the -wal under it, and its later commits were seen by nobody.
  Fixture f;
  three_events(f);
  Catalog second = f.open();  // as the audit publisher opens its own
  REQUIRE(events_seen_by_another_process(f.dir.file("catalog.db")) == 4);
  CHECK(std::filesystem::exists(f.dir.file("catalog.db-wal")));
  f.cat.transaction("operator:alice", [](Tx& tx) { tx.audit({"test.after", "thing:2", "ok", "", {}}); });
  second.transaction("controller", [](Tx& tx) { tx.mark_audit_published(5); });
  CHECK(events_seen_by_another_process(f.dir.file("catalog.db")) == 5);
  auto unpublished = f.cat.read([](const Tx& tx) { return tx.audit_outbox_pending(); });
  CHECK(unpublished == 0);
}

TEST_CASE("with a publisher, only published events age out, and a full outbox drops its oldest with an event saying so") {
  Fixture f;
  f.cat.transaction("operator:alice", [](Tx& tx) {
    for (int i = 0; i < 2000; ++i) tx.audit({"test.event", "thing:" + std::to_string(i), "ok", "", {}});
  });
  f.cat.transaction("controller", [](Tx& tx) { tx.mark_audit_published(500); });
  // Retention keeps 1000 events: only the 500 published ones may go.
  int64_t n = f.cat.transaction("controller", [](Tx& tx) { return tx.prune_published_audit(1000, int64_t(1) << 50, 1'000'000); });
  CHECK(n == 500);
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events.front().seq == 501);
  CHECK(verify_chain(events).ok);
  // 1500 unpublished, at most 1000 kept: the oldest 500 go, and the chain records it.
  n = f.cat.transaction("controller", [](Tx& tx) { return tx.prune_published_audit(1000, int64_t(1) << 50, 1000); });
  CHECK(n == 500);
  events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events.front().seq == 1001);
  const auto& dropped = events.back();
  CHECK(dropped.action == "audit.dropped");
  CHECK(dropped.reason == "outbox_full");
  auto d = nlohmann::json::parse(dropped.details);
  CHECK(d["first_seq"] == 501);
  CHECK(d["last_seq"] == 1000);
  CHECK(d["count"] == 500);
}

TEST_CASE("thousands of events in one transaction chain one to the next, and the next transaction goes on from them") {
  Fixture f;
  f.cat.transaction("operator:alice", [](Tx& tx) {
    for (int i = 0; i < 2000; ++i) tx.audit({"test.many", "t:" + std::to_string(i), "ok", "", {{"i", i}}});
  });
  // A transaction that fails leaves no event, and the chain's head where it was.
  CHECK_THROWS(f.cat.transaction("operator:alice", [](Tx& tx) {
    tx.audit({"test.lost", "t:x", "ok", "", {}});
    throw std::runtime_error("rolled back");
  }));
  f.cat.transaction("operator:bob", [](Tx& tx) { tx.audit({"test.after", "t:y", "ok", "", {}}); });
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events.size() == 2001);
  std::set<std::string> ids;
  for (size_t i = 1; i < events.size(); ++i) {
    REQUIRE(events[i].seq == events[i - 1].seq + 1);
    REQUIRE(events[i].prev_hash == events[i - 1].hash);
    ids.insert(events[i].event_id);
  }
  CHECK(ids.size() == 2000);  // event ids drawn in blocks are still all different
  CHECK(events.back().action == "test.after");
  auto report = f.cat.verify_audit_chain();
  CHECK(report.ok);
  CHECK(report.events == 2001);
}

TEST_CASE("where Kafka acknowledged the newest published event is kept across opens, the newest only") {
  Fixture f;
  CHECK_FALSE(f.cat.read([](const Tx& tx) { return tx.audit_topic_mark(); }));
  f.cat.transaction("controller", [](Tx& tx) { tx.set_audit_topic_mark({"cairn.audit", 3, std::string(64, 'a'), 7}); });
  f.cat.transaction("controller", [](Tx& tx) { tx.set_audit_topic_mark({"cairn.audit", 9, std::string(64, 'b'), 15}); });
  Catalog again = f.open();
  auto m = again.read([](const Tx& tx) { return tx.audit_topic_mark(); });
  REQUIRE(m);
  CHECK(m->topic == "cairn.audit");
  CHECK(m->seq == 9);
  CHECK(m->hash == std::string(64, 'b'));
  CHECK(m->offset == 15);
}
