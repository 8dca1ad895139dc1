#include "common/repo/policy.h"

#include <catch2/catch.hpp>

#include "common/util/error.h"

using namespace cairn;
using namespace cairn::repo;

namespace {

Snapshot snap(const std::string& id, const std::string& time, const std::string& host = "h1", std::vector<std::string> paths = {"/data"},
              std::vector<std::string> tags = {}) {
  Snapshot s;
  s.id = id;
  s.time = time;
  s.time_unix = parse_rfc3339(time);
  s.hostname = host;
  s.paths = std::move(paths);
  s.tags = std::move(tags);
  return s;
}

// Ids kept in a group, newest first.
std::vector<std::string> kept(const RetentionGroup& g) {
  std::vector<std::string> out;
  for (const auto& d : g.snapshots)
    if (d.keep) out.push_back(d.snapshot.id);
  return out;
}

std::vector<std::string> reasons(const RetentionGroup& g, const std::string& id) {
  for (const auto& d : g.snapshots)
    if (d.snapshot.id == id) return d.reasons;
  FAIL("no snapshot " << id);
  return {};
}

RetentionPolicy last(int n) {
  RetentionPolicy p;
  p.keep_last = n;
  return p;
}

}  // namespace

TEST_CASE("policy: an empty policy is refused; an empty repository is fine") {
  std::vector<Snapshot> s = {snap("a", "2024-01-01T00:00:00Z")};
  REQUIRE_THROWS_WITH(apply_retention(s, RetentionPolicy{}), Catch::Contains("no policy given: nothing would be kept"));
  REQUIRE_THROWS_WITH(apply_retention({}, RetentionPolicy{}), Catch::Contains("no policy given"));
  REQUIRE(apply_retention({}, last(3)).empty());
  RetentionPolicy neg;
  neg.keep_daily = -1;
  REQUIRE_THROWS_AS(apply_retention(s, neg), Error);
}

TEST_CASE("policy: keep-last keeps the newest N, whatever the input order") {
  std::vector<Snapshot> s = {snap("c", "2024-01-03T00:00:00Z"), snap("a", "2024-01-01T00:00:00Z"), snap("e", "2024-01-05T00:00:00Z"),
                             snap("b", "2024-01-02T00:00:00Z"), snap("d", "2024-01-04T00:00:00Z")};
  auto g = apply_retention(s, last(3));
  REQUIRE(g.size() == 1);
  REQUIRE(kept(g[0]) == std::vector<std::string>{"e", "d", "c"});
  REQUIRE(reasons(g[0], "e") == std::vector<std::string>{"last 1"});
  REQUIRE(reasons(g[0], "c") == std::vector<std::string>{"last 3"});
  REQUIRE(reasons(g[0], "b").empty());
  REQUIRE(g[0].snapshots.size() == 5);
  REQUIRE(g[0].snapshots.back().snapshot.id == "a");
  REQUIRE_FALSE(g[0].guard_kept_newest);
  // More than there are: everything is kept.
  REQUIRE(kept(apply_retention(s, last(10))[0]).size() == 5);
}

TEST_CASE("policy: keep-daily keeps the newest snapshot of each day, skipping days without snapshots") {
  std::vector<Snapshot> s = {snap("d1a", "2024-03-01T10:00:00Z"), snap("d1b", "2024-03-01T20:00:00Z"), snap("d2", "2024-03-02T09:00:00Z"),
                             snap("d5a", "2024-03-05T08:00:00Z"), snap("d5b", "2024-03-05T23:59:59Z"), snap("d10", "2024-03-10T00:00:00Z")};
  RetentionPolicy p;
  p.keep_daily = 3;
  auto g = apply_retention(s, p);
  REQUIRE(kept(g[0]) == std::vector<std::string>{"d10", "d5b", "d2"});
  REQUIRE(reasons(g[0], "d10") == std::vector<std::string>{"daily 1"});
  REQUIRE(reasons(g[0], "d5b") == std::vector<std::string>{"daily 2"});
  REQUIRE(reasons(g[0], "d2") == std::vector<std::string>{"daily 3"});
  REQUIRE(reasons(g[0], "d5a").empty());  // same day as a newer one
}

TEST_CASE("policy: hours and days are UTC calendar buckets") {
  std::vector<Snapshot> s = {snap("a", "2024-01-01T10:59:59Z"), snap("b", "2024-01-01T11:00:00Z"), snap("c", "2024-01-01T11:30:00Z")};
  RetentionPolicy p;
  p.keep_hourly = 5;
  REQUIRE(kept(apply_retention(s, p)[0]) == std::vector<std::string>{"c", "a"});
  RetentionPolicy d;
  d.keep_daily = 5;
  std::vector<Snapshot> midnight = {snap("x", "2024-01-01T23:59:59Z"), snap("y", "2024-01-02T00:00:00Z")};
  REQUIRE(kept(apply_retention(midnight, d)[0]) == std::vector<std::string>{"y", "x"});
}

TEST_CASE("policy: keep-weekly uses ISO weeks (Monday to Sunday, across the new year)") {
  // 2020-12-28 (Mon) and 2021-01-03 (Sun) are both in ISO week 2020-W53; 2021-01-04 (Mon) starts 2021-W01.
  std::vector<Snapshot> s = {snap("mon53", "2020-12-28T12:00:00Z"), snap("sun53", "2021-01-03T12:00:00Z"),
                             snap("mon01", "2021-01-04T12:00:00Z"), snap("sun01", "2021-01-10T23:00:00Z")};
  RetentionPolicy p;
  p.keep_weekly = 5;
  auto g = apply_retention(s, p);
  REQUIRE(kept(g[0]) == std::vector<std::string>{"sun01", "sun53"});
  REQUIRE(reasons(g[0], "sun53") == std::vector<std::string>{"weekly 2"});
  p.keep_weekly = 1;
  REQUIRE(kept(apply_retention(s, p)[0]) == std::vector<std::string>{"sun01"});
}

TEST_CASE("policy: keep-monthly and keep-yearly") {
  std::vector<Snapshot> s = {snap("y22", "2022-06-01T00:00:00Z"),  snap("dec", "2023-12-31T23:00:00Z"),
                             snap("jan1", "2024-01-05T00:00:00Z"), snap("jan2", "2024-01-20T00:00:00Z"),
                             snap("feb", "2024-02-10T00:00:00Z"),  snap("mar", "2024-03-01T00:00:00Z")};
  RetentionPolicy m;
  m.keep_monthly = 3;
  REQUIRE(kept(apply_retention(s, m)[0]) == std::vector<std::string>{"mar", "feb", "jan2"});
  RetentionPolicy y;
  y.keep_yearly = 3;
  auto g = apply_retention(s, y);
  REQUIRE(kept(g[0]) == std::vector<std::string>{"mar", "dec", "y22"});
  REQUIRE(reasons(g[0], "y22") == std::vector<std::string>{"yearly 3"});
}

TEST_CASE("policy: keep-within counts back from the newest snapshot, not from now") {
  std::vector<Snapshot> s = {snap("old", "2020-01-01T00:00:00Z"), snap("edge", "2020-01-08T00:00:00Z"), snap("mid", "2020-01-09T00:00:00Z"),
                             snap("new", "2020-01-10T00:00:00Z")};
  RetentionPolicy p;
  p.keep_within = 2 * 86400;
  auto g = apply_retention(s, p);
  REQUIRE(kept(g[0]) == std::vector<std::string>{"new", "mid", "edge"});  // edge is exactly 2 days older: kept
  REQUIRE(reasons(g[0], "mid") == std::vector<std::string>{"within 2d"});
}

TEST_CASE("policy: rules combine and every reason is reported") {
  std::vector<Snapshot> s;
  // Four snapshots a day for ten days.
  for (int d = 1; d <= 10; ++d)
    for (int h : {0, 6, 12, 18}) {
      char t[32], id[16];
      std::snprintf(t, sizeof t, "2024-05-%02dT%02d:00:00Z", d, h);
      std::snprintf(id, sizeof id, "s%02d-%02d", d, h);
      s.push_back(snap(id, t));
    }
  RetentionPolicy p;
  p.keep_last = 2;
  p.keep_daily = 3;
  p.keep_weekly = 2;
  p.keep_monthly = 1;
  auto g = apply_retention(s, p);
  REQUIRE(reasons(g[0], "s10-18") == std::vector<std::string>{"last 1", "daily 1", "weekly 1", "monthly 1"});
  REQUIRE(reasons(g[0], "s10-12") == std::vector<std::string>{"last 2"});
  REQUIRE(reasons(g[0], "s09-18") == std::vector<std::string>{"daily 2"});
  REQUIRE(reasons(g[0], "s08-18") == std::vector<std::string>{"daily 3"});
  // 2024-05-05 is a Sunday: the newest of the previous ISO week.
  REQUIRE(reasons(g[0], "s05-18") == std::vector<std::string>{"weekly 2"});
  REQUIRE(kept(g[0]).size() == 5);
  REQUIRE(p.describe() == "last 2, daily 3, weekly 2, monthly 1");
}

TEST_CASE("policy: applied per host and paths; path order does not matter") {
  std::vector<Snapshot> s = {snap("a1", "2024-01-01T00:00:00Z", "alpha", {"/x", "/y"}),
                             snap("a2", "2024-01-02T00:00:00Z", "alpha", {"/y", "/x"}),
                             snap("b1", "2024-01-01T00:00:00Z", "beta", {"/x", "/y"}),
                             snap("b2", "2024-01-03T00:00:00Z", "beta", {"/x", "/y"}), snap("a3", "2024-01-05T00:00:00Z", "alpha", {"/x"})};
  auto g = apply_retention(s, last(1));
  REQUIRE(g.size() == 3);
  // Sorted by host, then paths.
  REQUIRE(g[0].hostname == "alpha");
  REQUIRE(g[0].paths == std::vector<std::string>{"/x"});
  REQUIRE(kept(g[0]) == std::vector<std::string>{"a3"});
  REQUIRE(g[1].paths == std::vector<std::string>{"/x", "/y"});
  REQUIRE(kept(g[1]) == std::vector<std::string>{"a2"});
  REQUIRE(g[1].snapshots.size() == 2);
  REQUIRE(g[2].hostname == "beta");
  REQUIRE(kept(g[2]) == std::vector<std::string>{"b2"});
}

TEST_CASE("policy: keep-tag keeps tagged snapshots; a policy never removes a whole group") {
  std::vector<Snapshot> s = {snap("t1", "2024-01-01T00:00:00Z", "h1", {"/data"}, {"gold"}), snap("u1", "2024-01-02T00:00:00Z"),
                             snap("u2", "2024-01-03T00:00:00Z"), snap("o1", "2024-01-01T00:00:00Z", "h2"),
                             snap("o2", "2024-01-02T00:00:00Z", "h2", {"/data"}, {"silver"})};
  RetentionPolicy p;
  p.keep_tags = {"gold"};
  auto g = apply_retention(s, p);
  REQUIRE(g.size() == 2);
  REQUIRE(kept(g[0]) == std::vector<std::string>{"t1"});
  REQUIRE(reasons(g[0], "t1") == std::vector<std::string>{"tag 'gold'"});
  REQUIRE_FALSE(g[0].guard_kept_newest);
  // No snapshot of h2 has the tag: the guard keeps its newest and says so.
  REQUIRE(kept(g[1]) == std::vector<std::string>{"o2"});
  REQUIRE(g[1].guard_kept_newest);
  REQUIRE(reasons(g[1], "o2").size() == 1);
  REQUIRE_THAT(reasons(g[1], "o2")[0], Catch::Contains("would remove every snapshot"));
}

TEST_CASE("log chains: a piece is replayed by every kept snapshot that replays its log from at or before it") {
  auto piece = [](const std::string& id, uint64_t pos, const std::string& chain = "pg-1") {
    return snap(id, "2026-01-01T00:00:00Z", "h1", {"/wal/" + id}, {"wal", log_piece_tag(chain, pos)});
  };
  auto base = [](const std::string& id, uint64_t from, const std::string& chain = "pg-1") {
    Snapshot s = snap(id, "2026-01-01T00:00:00Z", "h1", {"/data"});
    s.component = {{"replays_log", {{"log", chain}, {"from", log_position(from)}}}};
    return s;
  };
  Snapshot b5 = base("b5", 5), b0x10 = base("b16", 0x10), other = base("other", 1, "pg-2"), plain = snap("p", "2026-01-01T00:00:00Z");
  Snapshot partial = base("part", 1);
  partial.partial = true;
  std::vector<const Snapshot*> kept = {&b5, &b0x10, &other, &plain, &partial};
  CHECK(log_piece_tag("pg-1", 0xab) == "log:pg-1:00000000000000ab");
  CHECK(replayed_by(piece("w4", 4), kept).empty());  // before every base backup of its chain
  auto by = replayed_by(piece("w9", 9), kept);
  REQUIRE(by.size() == 1);
  CHECK(by[0]->id == "b5");
  CHECK(replayed_by(piece("w11", 0x11), kept).size() == 2);      // hex, not text order of decimal
  CHECK(replayed_by(piece("w5", 5), kept).size() == 1);          // the base backup's own first segment
  CHECK(replayed_by(piece("h", UINT64_MAX), kept).size() == 2);  // a piece every replay reads
  CHECK(replayed_by(piece("x", 9, "pg-3"), kept).empty());       // another system's log
  CHECK(replayed_by(plain, kept).empty());                       // no piece of a log
}
