#include "controller/catalog/migrations.h"

#include <catch2/catch.hpp>

#include "catalog_fixture.h"
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

namespace {

int64_t count(sqlite::Db& db, const std::string& sql) {
  auto s = db.prepare(sql);
  REQUIRE(s.step());
  return s.integer(0);
}

}  // namespace

TEST_CASE("the embedded migrations are numbered from 1 without gaps") {
  auto list = embedded_migrations();
  REQUIRE(list.size() >= 1);
  REQUIRE(list[0].version == 1);
  REQUIRE(list[0].name == "init");
  REQUIRE_NOTHROW(check_migration_list(list));
}

TEST_CASE("a gap or a repeat in the migration list is refused") {
  Migration gap[] = {{1, "a", "SELECT 1"}, {3, "c", "SELECT 1"}};
  REQUIRE_THROWS_WITH(check_migration_list(gap), Catch::Contains("'c' has number 3"));
  Migration repeat[] = {{1, "a", "SELECT 1"}, {1, "b", "SELECT 1"}};
  REQUIRE_THROWS_AS(check_migration_list(repeat), Error);
}

TEST_CASE("a fresh catalog gets every migration, WAL and foreign keys") {
  Fixture f;
  REQUIRE(f.cat.schema_version() == int(embedded_migrations().size()));
  auto db = sqlite::Db::open(f.dir.file("catalog.db"), 1000);
  REQUIRE(count(db, "SELECT count(*) FROM schema_version") == int64_t(embedded_migrations().size()));
  for (const char* table : {"agents", "controller_keys", "backup_sets", "tasks", "task_reasons", "snapshots", "restores", "locks",
                            "plan_sequences", "plans", "audit_outbox", "operators"}) {
    INFO(table);
    REQUIRE(count(db, std::string("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '") + table + "'") == 1);
  }
  auto mode = db.prepare("PRAGMA journal_mode");
  REQUIRE(mode.step());
  REQUIRE(mode.text(0) == "wal");
  REQUIRE(count(db, "PRAGMA foreign_keys") == 1);
}

TEST_CASE("reopening a migrated catalog changes nothing and keeps the data") {
  Fixture f;
  std::string id = f.approved_agent("node-1", 1);
  int version = f.cat.schema_version();
  for (int i = 0; i < 2; ++i) {
    f.cat = f.open();
    REQUIRE(f.cat.schema_version() == version);
  }
  auto db = sqlite::Db::open(f.dir.file("catalog.db"), 1000);
  REQUIRE(count(db, "SELECT count(*) FROM schema_version") == version);
  REQUIRE(f.cat.read([&](const Tx& tx) { return tx.agent(id).has_value(); }));
}

TEST_CASE("a catalog newer than this build is refused") {
  Fixture f;
  {
    auto db = sqlite::Db::open(f.dir.file("catalog.db"), 1000);
    db.exec("INSERT INTO schema_version (version, name, sha256, applied_at) VALUES (999, 'future', 'x', 0)");
  }
  try {
    f.open();
    FAIL("opened a catalog from the future");
  } catch (const Error& e) {
    REQUIRE(e.code() == Errc::unsupported);
    REQUIRE_THAT(std::string(e.what()), Catch::Contains("schema version 999") && Catch::Contains("newer cairn-controller"));
  }
}

TEST_CASE("a catalog migrated with different SQL than this build's is refused") {
  Fixture f;
  {
    auto db = sqlite::Db::open(f.dir.file("catalog.db"), 1000);
    db.exec("UPDATE schema_version SET sha256 = 'edited' WHERE version = 1");
  }
  REQUIRE_THROWS_WITH(f.open(), Catch::Contains("released migrations must never change"));
}

TEST_CASE("a failing migration leaves the catalog at the previous version") {
  TempDir dir;
  auto db = sqlite::Db::open(dir.file("c.db"), 1000);
  Migration list[] = {{1, "one", "CREATE TABLE a (x INTEGER);"}, {2, "two", "CREATE TABLE b (x INTEGER); INSERT INTO nowhere VALUES (1);"}};
  REQUIRE_THROWS_AS(migrate(db, list, 0), Error);
  REQUIRE(count(db, "SELECT max(version) FROM schema_version") == 1);
  REQUIRE(count(db, "SELECT count(*) FROM sqlite_master WHERE name = 'b'") == 0);
}

TEST_CASE("migration 0011 rebuilds audit_outbox without its unique indexes and keeps every event and its guards") {
  TempDir dir;
  auto db = sqlite::Db::open(dir.file("c.db"), 1000);
  auto all = embedded_migrations();
  REQUIRE(all.size() >= 11);
  REQUIRE(all[10].name == "audit_outbox_unindexed_ids");
  REQUIRE(migrate(db, all.first(10), 0) == 10);
  // Three events as a controller before 0011 wrote them: two published, one not.
  for (int i = 1; i <= 3; ++i)
    db.prepare(
          "INSERT INTO audit_outbox (seq, event_id, time, actor, action, target, outcome, reason, details,"
          " prev_hash, hash, published_at) VALUES (?, ?, ?, 'operator:a', 'backup.create', ?, 'ok', '', ?, ?, ?, ?)")
        .bind_all(int64_t(i), "ev" + std::to_string(i), int64_t(1000 + i), "set:bs-" + std::to_string(i),
                  "{\"n\":" + std::to_string(i) + "}", "h" + std::to_string(i - 1), "h" + std::to_string(i),
                  i < 3 ? std::optional<int64_t>(5000 + i) : std::nullopt)
        .run();
  auto dump = [&] {
    std::string out;
    auto s = db.prepare(
        "SELECT seq, event_id, time, actor, action, target, outcome, reason, details, prev_hash, hash,"
        " coalesce(published_at, -1) FROM audit_outbox ORDER BY seq");
    while (s.step())
      for (int c = 0; c < 12; ++c) out += s.text(c) + "|";
    return out;
  };
  std::string before = dump();
  REQUIRE(count(db, "SELECT count(*) FROM pragma_index_list('audit_outbox') WHERE \"unique\" = 1") == 2);

  REQUIRE(migrate(db, all, 0) == int(all.size()));
  REQUIRE(dump() == before);
  REQUIRE(count(db, "SELECT count(*) FROM pragma_index_list('audit_outbox') WHERE \"unique\" = 1") == 0);
  REQUIRE(count(db, "SELECT count(*) FROM sqlite_master WHERE name = 'audit_outbox_unpublished'") == 1);
  // The guards of 0001 and 0005 are back on the rebuilt table.
  REQUIRE_THROWS_WITH(db.exec("UPDATE audit_outbox SET details = '{}' WHERE seq = 1"), Catch::Contains("audit events are immutable"));
  REQUIRE_THROWS_WITH(db.exec("DELETE FROM audit_outbox WHERE seq = 3"), Catch::Contains("cannot be deleted"));
  db.exec("UPDATE audit_outbox SET published_at = 6003 WHERE seq = 3");  // the one column that may change
  db.exec("DELETE FROM audit_outbox WHERE seq = 1");                     // a published event may age out
  REQUIRE(count(db, "SELECT count(*) FROM audit_outbox") == 2);
}

TEST_CASE("whether a repository is in use is read from partial indexes, not from every task") {
  Fixture f;
  auto db = sqlite::Db::open(f.dir.file("catalog.db"), 1000);
  auto s = db.prepare(std::string("EXPLAIN QUERY PLAN ") + sql::kRepositoryInUse);
  s.bind(1, std::string("main"));
  std::string plan;
  std::vector<std::string> scans;
  while (s.step()) {
    std::string line = s.text(3);
    plan += line + "\n";
    // Only the two partial indexes of open tasks may be read in full: they
    // hold the tasks under way, not the catalog's history.
    if (line.find("SCAN") != std::string::npos && line != "SCAN CONSTANT ROW" && line.find("INDEX tasks_open_") == std::string::npos)
      scans.push_back(line);
  }
  INFO(plan);
  CHECK_THAT(plan, Catch::Contains("USING INDEX tasks_open_backup_repository"));
  CHECK_THAT(plan, Catch::Contains("tasks_open_restore_source"));
  CHECK(scans.empty());
}

TEST_CASE("whether an agent has another open task in a set is read through the agent's index, not the set's") {
  // Through tasks_set_state SQLite read every open task of the set for each
  // task that ended: at 10,000 agents the controller stopped reading agents'
  // messages long enough to declare thousands of them lost.
  Fixture f;
  auto db = sqlite::Db::open(f.dir.file("catalog.db"), 1000);
  for (const char* q : {sql::kOpenTaskOfAgentInSet, sql::kOpenTaskOfAgentInRestore}) {
    auto s = db.prepare(std::string("EXPLAIN QUERY PLAN ") + q);
    s.bind_all(std::string("bs-1"), std::string("data"), std::string("ag-1"));
    std::string plan;
    while (s.step()) plan += s.text(3) + "\n";
    INFO(plan);
    CHECK_THAT(plan, Catch::Contains("USING INDEX tasks_agent_state (agent_id=? AND state=?)"));
  }
}
