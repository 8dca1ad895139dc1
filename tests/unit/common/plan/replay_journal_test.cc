#include "common/plan/replay_journal.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "common/util/error.h"
#include "plan_fixture.h"

using namespace cairn;
using namespace cairn::plan;
using namespace cairn::plan::test;

TEST_CASE("the journal keeps plan ids, nonces and the sequence across a reload") {
  TempDir dir;
  auto p1 = make_plan("p1", 3);
  auto p2 = make_plan("p2", 7);
  {
    auto j = ReplayJournal::open(dir.file("journal.json"));
    REQUIRE(j.entries() == 0);
    j.record(p1, kNow);
    j.record(p2, kNow);
  }
  auto j = ReplayJournal::open(dir.file("journal.json"));
  REQUIRE(j.seen_plan_id("p1"));
  REQUIRE(j.seen_plan_id("p2"));
  REQUIRE(j.seen_nonce(p1.nonce()));
  REQUIRE(j.seen_nonce(p2.nonce()));
  REQUIRE_FALSE(j.seen_plan_id("p3"));
  REQUIRE(j.highest_sequence("ctl-test") == 7);
  REQUIRE(j.highest_sequence("another-controller") == 0);
}

TEST_CASE("the journal forgets expired plans but never the sequence") {
  TempDir dir;
  auto short_lived = make_plan("p1", 1);
  short_lived.set_expires_at(kNow + 10);
  auto long_lived = make_plan("p2", 2);
  auto j = ReplayJournal::open(dir.file("journal.json"));
  j.record(short_lived, kNow);
  j.record(long_lived, kNow);
  j.prune(kNow + 10);
  REQUIRE_FALSE(j.seen_plan_id("p1"));
  REQUIRE_FALSE(j.seen_nonce(short_lived.nonce()));
  REQUIRE(j.seen_plan_id("p2"));
  auto reloaded = ReplayJournal::open(dir.file("journal.json"));
  REQUIRE_FALSE(reloaded.seen_plan_id("p1"));
  REQUIRE(reloaded.seen_plan_id("p2"));
  REQUIRE(reloaded.highest_sequence("ctl-test") == 2);
}

TEST_CASE("recording prunes what expired meanwhile") {
  ReplayJournal j;
  auto old = make_plan("old", 1);
  old.set_expires_at(kNow + 1);
  j.record(old, kNow);
  j.record(make_plan("new", 2), kNow + 5);
  REQUIRE(j.entries() == 1);
  REQUIRE(j.seen_plan_id("new"));
}

TEST_CASE("the journal file is written whole and private") {
  TempDir dir;
  auto j = ReplayJournal::open(dir.file("journal.json"));
  j.record(make_plan("p1", 1), kNow);
  // No temp file is left next to it.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.file(""))) {
    (void)e;
    ++files;
  }
  REQUIRE(files == 1);
  auto perms = std::filesystem::status(dir.file("journal.json")).permissions();
  REQUIRE((perms & (std::filesystem::perms::group_all | std::filesystem::perms::others_all)) == std::filesystem::perms::none);
}

TEST_CASE("a journal that does not parse stops the agent instead of starting empty") {
  TempDir dir;
  {
    std::ofstream f(dir.file("journal.json"));
    f << "{\"format\": \"cairn-replay-journal\", \"version\": 1, \"plans\": [";
  }
  try {
    ReplayJournal::open(dir.file("journal.json"));
    FAIL("opened a torn journal");
  } catch (const Error& e) {
    REQUIRE(e.code() == Errc::corrupt);
    REQUIRE_THAT(std::string(e.what()), Catch::Contains("replay journal '"));
  }
}

TEST_CASE("a write failure leaves the journal as it was") {
  TempDir dir;
  // A journal bound to a directory that does not exist cannot be written.
  auto j = ReplayJournal::open(dir.file("missing/journal.json"));
  REQUIRE_THROWS_AS(j.record(make_plan("p1", 1), kNow), Error);
  REQUIRE_FALSE(j.seen_plan_id("p1"));
  REQUIRE(j.highest_sequence("ctl-test") == 0);
}
