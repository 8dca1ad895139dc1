// The driver metadata the controller reads (controller/driver_metadata.h):
// each key as a driver writes it, and the defaults for what is absent,
// malformed or not an object.
#include "controller/driver_metadata.h"

#include <catch2/catch.hpp>

using namespace cairn::controller;
namespace dm = driver_metadata;

TEST_CASE("driver metadata: absent, malformed or not an object reads as the defaults") {
  for (const auto& m : {dm::parse_optional(std::nullopt), dm::parse("not json"), dm::parse("[1,2]"), dm::parse("{}")}) {
    CHECK(dm::drill_group(m).empty());
    CHECK(dm::drill_beside(m).driver.empty());
    CHECK_FALSE(dm::etcd_legacy_cluster_id(m));
    CHECK_FALSE(dm::pg_physical(m));
    CHECK_FALSE(dm::pg_has_backup_end(m));
    CHECK(dm::pg_backup_end_time_us(m) == 0);
    CHECK(dm::pg_stop_lsn(m) == 0);
    CHECK(dm::pg_timeline(m) == 0);
    CHECK(dm::pg_history(m).is_null());
    CHECK_FALSE(dm::pg_recovery(m));
    CHECK_FALSE(dm::stop_found_service_down(m));
    CHECK(dm::preflight_stop_wave(m) == 0);
    CHECK_FALSE(dm::preflight_rollback_halt(m));
    CHECK_FALSE(dm::interrupted_restore(m));
    CHECK_FALSE(dm::drill_not_run(m));
  }
}

TEST_CASE("driver metadata: a drill's group and what starts beside it, written by any driver") {
  auto g = dm::parse(R"({"drill_group":"c-7","drill_beside":{"driver":"zookeeper","why":"its metadata\nlives there"}})");
  CHECK(dm::drill_group(g) == "c-7");
  CHECK(dm::drill_beside(g).driver == "zookeeper");
  CHECK(dm::drill_beside(g).why == "its metadata lives there");  // shown to an operator: no control characters
  auto alone = dm::parse(R"({"drill_group":"c-7","metadata_mode":"zookeeper"})");
  CHECK(dm::drill_beside(alone).driver.empty());  // the keys written, not guessed from another driver's
  CHECK(dm::drill_beside(dm::parse(R"({"drill_beside":"zookeeper"})")).driver.empty());
  auto no_why = dm::parse(R"({"drill_beside":{"driver":"etcd"}})");
  CHECK(dm::drill_beside(no_why).why.find("etcd") != std::string::npos);
}

TEST_CASE("driver metadata: Kafka's snapshots from before drill_group, and etcd's keys") {
  auto k = dm::parse(R"({"metadata_mode":"zookeeper","cluster_id":"Xy1"})");
  CHECK(dm::drill_group(k) == "Xy1");
  CHECK(dm::drill_beside(k).driver == "zookeeper");
  CHECK(dm::drill_beside(k).why.find("ZooKeeper mode") != std::string::npos);
  CHECK(dm::drill_beside(dm::parse(R"({"metadata_mode":"kraft","cluster_id":"Xy1"})")).driver.empty());
  CHECK_FALSE(dm::etcd_legacy_cluster_id(k));  // not an etcd snapshot
  auto e = dm::parse(R"({"etcd_version":"3.5.9","cluster_id":"c1"})");
  CHECK(dm::etcd_legacy_cluster_id(e) == "c1");
  CHECK_FALSE(dm::etcd_legacy_cluster_id(dm::parse(R"({"etcd_version":"3.5.9","cluster_id":7})")));
}

TEST_CASE("driver metadata: PostgreSQL's base backup and recovery") {
  auto b = dm::parse(R"({"mode":"physical","backup_end_time_us":1700000000000000,"stop_lsn":"16/B374D848",)"
                     R"("timeline":3,"history":[{"timeline":1,"switch_lsn":"0/3000000"},{"timeline":2,"switch_lsn":"bad"}]})");
  CHECK(dm::pg_physical(b));
  CHECK(dm::pg_has_backup_end(b));
  CHECK(dm::pg_backup_end_time_us(b) == 1700000000000000);
  CHECK(dm::pg_stop_lsn(b) == ((uint64_t(0x16) << 32) | 0xB374D848));
  CHECK(dm::pg_timeline(b) == 3);
  auto switches = dm::pg_history_switches(dm::pg_history(b));
  CHECK(switches.size() == 1);  // the entry without a valid LSN is left out
  CHECK(switches.at(1) == 0x3000000);
  CHECK_FALSE(dm::pg_physical(dm::parse(R"({"mode":"logical"})")));
  CHECK(dm::pg_stop_lsn(dm::parse(R"({"stop_lsn":"nonsense"})")) == 0);
  auto r = dm::pg_recovery(dm::parse(R"({"recovery":{"timeline":4,"history":[]}})"));
  REQUIRE(r);
  CHECK(r->timeline == 4);
  CHECK(r->history.is_array());
  CHECK_FALSE(dm::pg_recovery(dm::parse(R"({"recovery":"done"})")));
}

TEST_CASE("driver metadata: the cluster restore steps, interrupted restores and drills") {
  CHECK(dm::stop_found_service_down(dm::parse(R"({"step":"stop","was_running":false})")));
  CHECK_FALSE(dm::stop_found_service_down(dm::parse(R"({"step":"stop","was_running":true})")));
  CHECK(dm::preflight_stop_wave(dm::parse(R"({"stop_wave":2})")) == 2);
  CHECK(dm::preflight_stop_wave(dm::parse(R"({"stop_wave":42})")) == 9);
  CHECK(dm::preflight_stop_wave(dm::parse(R"({"stop_wave":-1})")) == 0);
  CHECK(dm::preflight_stop_wave(dm::parse(R"({"stop_wave":"2"})")) == 0);
  CHECK(dm::preflight_rollback_halt(dm::parse(R"({"rollback_halt":true})")));
  CHECK_FALSE(dm::preflight_rollback_halt(dm::parse(R"({"rollback_halt":false})")));
  CHECK(dm::interrupted_restore(dm::parse(R"({"interrupted_restore":{"restore_id":"rs-1"}})")));
  CHECK(dm::drill_not_run(dm::parse(R"({"drill":{"verdict":"not_run"}})")));
  CHECK_FALSE(dm::drill_not_run(dm::parse(R"({"drill":{"verdict":"failed"}})")));
  CHECK_FALSE(dm::drill_not_run(dm::parse(R"({"drill":"not_run"})")));
}
