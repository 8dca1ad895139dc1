// Schedules: cron fields, macros, @every, time zones across DST changes, and
// schedules refused with the field that is wrong.
#include "controller/schedule.h"

#include <catch2/catch.hpp>

#include "common/util/error.h"

using namespace cairn;
using namespace cairn::controller;

namespace {

// Unix seconds of a UTC civil time.
int64_t utc(int y, int mo, int d, int h, int mi) {
  auto tp = cctz::convert(cctz::civil_second(y, mo, d, h, mi, 0), cctz::utc_time_zone());
  return std::chrono::duration_cast<std::chrono::seconds>(tp.time_since_epoch()).count();
}

std::string local(int64_t t, const std::string& zone) { return format_local(t, load_time_zone(zone)); }

std::string next(const std::string& schedule, int64_t after, const std::string& zone = "UTC") {
  auto t = Schedule::parse(schedule).next_after(after, load_time_zone(zone));
  REQUIRE(t);
  return local(*t, zone);
}

std::string refusal(const std::string& schedule) {
  try {
    Schedule::parse(schedule);
  } catch (const Error& e) {
    CHECK(e.code() == Errc::invalid_input);
    return e.what();
  }
  FAIL("schedule '" << schedule << "' was accepted");
  return {};
}

}  // namespace

TEST_CASE("cron fields: a daily time, steps, ranges, lists and names") {
  int64_t t = utc(2026, 11, 24, 0, 30);  // a Tuesday
  CHECK(next("0 1 * * *", t) == "2026-11-24 01:00:00 UTC");
  CHECK(next("0 1 * * *", utc(2026, 11, 24, 1, 0)) == "2026-11-25 01:00:00 UTC");  // strictly after
  CHECK(next("*/15 * * * *", t) == "2026-11-24 00:45:00 UTC");
  CHECK(next("5/20 * * * *", t) == "2026-11-24 00:45:00 UTC");
  CHECK(next("0 9-17/4 * * *", t) == "2026-11-24 09:00:00 UTC");
  CHECK(next("0 0 * * SAT,sun", t) == "2026-11-28 00:00:00 UTC");
  CHECK(next("0 0 * * 7", t) == "2026-11-29 00:00:00 UTC");  // 7 is Sunday too
  CHECK(next("0 0 1 jan *", t) == "2027-01-01 00:00:00 UTC");
  CHECK(next("0 0 29 2 *", t) == "2028-02-29 00:00:00 UTC");
  // Both day fields restricted: either matches (Vixie cron).
  CHECK(next("0 0 1 * MON", t) == "2026-11-30 00:00:00 UTC");
  CHECK(next("0 0 1 * *", t) == "2026-12-01 00:00:00 UTC");
}

TEST_CASE("macros and @every") {
  int64_t t = utc(2026, 11, 24, 0, 30);
  CHECK(next("@daily", t) == "2026-11-25 00:00:00 UTC");
  CHECK(next("@midnight", t) == "2026-11-25 00:00:00 UTC");
  CHECK(next("@hourly", t) == "2026-11-24 01:00:00 UTC");
  CHECK(next("@weekly", t) == "2026-11-29 00:00:00 UTC");
  CHECK(next("@monthly", t) == "2026-12-01 00:00:00 UTC");
  CHECK(next("@yearly", t) == "2027-01-01 00:00:00 UTC");
  // @every runs at multiples of the interval since the epoch: a restart does not shift it.
  CHECK(next("@every 15m", utc(2026, 11, 24, 0, 31)) == "2026-11-24 00:45:00 UTC");
  CHECK(next("@every 1h30m", utc(2026, 11, 24, 0, 31)) == "2026-11-24 01:30:00 UTC");
  CHECK(Schedule::parse("@every 90s").every_seconds() == 90);
}

TEST_CASE("a schedule in a time zone, across both DST changes") {
  // Europe/Berlin: 2027-03-28 02:00 CET -> 03:00 CEST; 2027-10-31 03:00 CEST -> 02:00 CET.
  const std::string berlin = "Europe/Berlin";
  CHECK(next("0 1 * * *", utc(2026, 11, 24, 0, 30), berlin) == "2026-11-25 01:00:00 CET");
  // 02:30 does not exist on the day clocks go forward: it runs once, at the change.
  CHECK(next("30 2 * * *", utc(2027, 3, 27, 12, 0), berlin) == "2027-03-28 03:00:00 CEST");
  CHECK(next("30 2 * * *", utc(2027, 3, 28, 1, 0), berlin) == "2027-03-29 02:30:00 CEST");
  // 02:30 happens twice on the day clocks go back: it runs once, the first time.
  auto s = Schedule::parse("30 2 * * *");
  auto tz = load_time_zone(berlin);
  auto first = s.next_after(utc(2027, 10, 30, 12, 0), tz);
  REQUIRE(first);
  CHECK(local(*first, berlin) == "2027-10-31 02:30:00 CEST");
  auto second = s.next_after(*first, tz);
  REQUIRE(second);
  CHECK(local(*second, berlin) == "2027-11-01 02:30:00 CET");
}

TEST_CASE("bad schedules are refused naming the field and the problem") {
  CHECK_THAT(refusal("61 * * * *"), Catch::Contains("minute field '61': 61 is out of range 0-59"));
  CHECK_THAT(refusal("0 24 * * *"), Catch::Contains("hour field"));
  CHECK_THAT(refusal("0 1 * *"), Catch::Contains("has 4 fields; cron takes 5"));
  CHECK_THAT(refusal("0 1 * * FOO"), Catch::Contains("'FOO' is not a number or a name"));
  CHECK_THAT(refusal("0 1 5-2 * *"), Catch::Contains("runs backwards"));
  CHECK_THAT(refusal("*/0 * * * *"), Catch::Contains("step '0'"));
  CHECK_THAT(refusal("0 0 30 2 *"), Catch::Contains("never runs"));
  CHECK_THAT(refusal("@reboot"), Catch::Contains("unknown schedule '@reboot'"));
  CHECK_THAT(refusal("@every 10 minutes"), Catch::Contains("interval"));
  CHECK_THAT(refusal("@every 0s"), Catch::Contains("at least 1s"));
  CHECK_THAT(refusal(""), Catch::Contains("empty"));
  CHECK_THROWS_WITH(load_time_zone("Mars/Olympus"), Catch::Contains("unknown time zone 'Mars/Olympus'"));
  // Paths are not names (issue 32): the host's /etc/localtime, a FIFO that
  // would block the controller's loop, a way out of the zoneinfo directory.
  for (const char* path : {"/etc/localtime", "/tmp/a-fifo", "../../../etc/localtime", "Europe/../Europe/Berlin", "./UTC", ""})
    CHECK_THROWS_WITH(load_time_zone(path), Catch::Contains("is not an IANA name"));
  // A directory of the database is not a zone.
  CHECK_THROWS_WITH(load_time_zone("Europe"), Catch::Contains("unknown time zone 'Europe'"));
  for (const char* ok : {"UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Etc/GMT-14"})
    CHECK_NOTHROW(load_time_zone(ok));
}
