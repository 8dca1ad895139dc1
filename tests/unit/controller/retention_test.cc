// Retention over a policy's backup sets: rules, the minimum kept, partial and
// failed sets counted apart, days counted in the policy's time zone.
#include "controller/retention.h"

#include <catch2/catch.hpp>
#include <map>

#include "controller/schedule.h"

using namespace cairn;
using namespace cairn::controller;
using catalog::BackupSet;
using catalog::SetState;

namespace {

constexpr int64_t kDay = 86400;
constexpr int64_t kBase = 1'790'000'000;  // 2026-09-21 ~13:33 UTC

BackupSet set(const std::string& id, int64_t at, SetState state = SetState::complete) {
  BackupSet s;
  s.id = id;
  s.created_at = at;
  s.state = state;
  return s;
}

std::map<std::string, SetDecision> by_id(const std::vector<SetDecision>& ds) {
  std::map<std::string, SetDecision> out;
  for (const auto& d : ds) out[d.set.id] = d;
  return out;
}

std::string reasons(const SetDecision& d) {
  std::string out;
  for (const auto& r : d.reasons) out += (out.empty() ? "" : ", ") + r;
  return out;
}

}  // namespace

TEST_CASE("keep-last keeps the newest complete sets; partial ones never use up the count") {
  // Newest first: two partial runs after three complete ones.
  std::vector<BackupSet> sets = {set("p2", kBase + 5 * kDay, SetState::partial),
                                 set("p1", kBase + 4 * kDay, SetState::partial),
                                 set("c3", kBase + 3 * kDay),
                                 set("c2", kBase + 2 * kDay),
                                 set("c1", kBase + 1 * kDay),
                                 set("f1", kBase + 6 * kDay, SetState::failed)};
  catalog::PolicyRetention r;
  r.last = 2;
  auto d = by_id(decide_retention(sets, r, load_time_zone("UTC")));
  CHECK(d["c3"].keep);
  CHECK(d["c2"].keep);
  CHECK_FALSE(d["c1"].keep);
  CHECK(reasons(d["c3"]) == "last 1");
  CHECK(d["c3"].group == "complete");
  // The partial group is counted on its own.
  CHECK(d["p2"].keep);
  CHECK(d["p1"].keep);
  CHECK(d["p2"].group == "partial");
  CHECK(d["f1"].group == "failed");
}

TEST_CASE("min keeps the newest complete sets whatever the rules say") {
  std::vector<BackupSet> sets;
  for (int i = 9; i >= 0; --i) sets.push_back(set("c" + std::to_string(i), kBase + i * kDay));
  catalog::PolicyRetention r;
  r.last = 2;
  r.min = 7;
  auto ds = decide_retention(sets, r, load_time_zone("UTC"));
  int kept = 0;
  for (const auto& d : ds) kept += d.keep;
  CHECK(kept == 7);
  auto d = by_id(ds);
  CHECK(reasons(d["c9"]) == "last 1");
  CHECK(reasons(d["c7"]) == "min 7");
  CHECK(d["c3"].keep);
  CHECK_FALSE(d["c2"].keep);
  CHECK_FALSE(d["c0"].keep);
}

TEST_CASE("daily counts days in the policy's time zone") {
  // 22:30 and 23:30 UTC on one UTC day are two different days in Tokyo (+9).
  int64_t day0 = 1'790'035'200;  // 2026-09-22 00:00 UTC
  std::vector<BackupSet> sets = {set("late", day0 + 23 * 3600 + 1800), set("early", day0 + 14 * 3600 + 1800)};
  catalog::PolicyRetention r;
  r.daily = 2;
  auto utc = by_id(decide_retention(sets, r, load_time_zone("UTC")));
  CHECK(utc["late"].keep);
  CHECK_FALSE(utc["early"].keep);  // the same UTC day
  auto tokyo = by_id(decide_retention(sets, r, load_time_zone("Asia/Tokyo")));
  CHECK(tokyo["late"].keep);
  CHECK(tokyo["early"].keep);  // 23:30 and 08:30 the next day in Tokyo
}

TEST_CASE("running and forgotten sets are not decided; no rule keeps everything") {
  auto running = set("r", kBase + 9 * kDay, SetState::running);
  auto gone = set("g", kBase);
  gone.forgotten_at = kBase + kDay;
  std::vector<BackupSet> sets = {running, set("c", kBase + kDay), gone};
  auto ds = decide_retention(sets, {}, load_time_zone("UTC"));
  REQUIRE(ds.size() == 1);
  CHECK(ds[0].set.id == "c");
  CHECK(ds[0].keep);
  CHECK(describe({}) == "keep everything");
  catalog::PolicyRetention r;
  r.last = 3;
  r.daily = 7;
  r.within = 2 * kDay;
  r.min = 7;
  CHECK(describe(r) == "last 3, daily 7, within 2d, min 7");
}

TEST_CASE("sets of the same second keep the order they were made in") {
  // Newest first as the catalog lists them; ids sort the other way round.
  std::vector<BackupSet> sets = {set("bs-a", kBase), set("bs-c", kBase), set("bs-b", kBase)};
  catalog::PolicyRetention r;
  r.last = 1;
  auto ds = decide_retention(sets, r, load_time_zone("UTC"));
  REQUIRE(ds.size() == 3);
  CHECK(ds[0].set.id == "bs-a");
  CHECK(ds[0].keep);
  CHECK_FALSE(ds[1].keep);
  CHECK_FALSE(ds[2].keep);
}
