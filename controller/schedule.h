#pragma once
// When a policy runs: cron syntax ("0 1 * * *", names and steps included),
// the macros @yearly, @monthly, @weekly, @daily (@midnight), @hourly, and
// "@every DURATION" ("@every 15m", "@every 1h30m").
//
//   auto s = Schedule::parse("30 2 * * 1-5");
//   auto tz = load_time_zone("Europe/Berlin");
//   int64_t next = s.next_after(now, tz);   // unix seconds, > now
//
// Cron fields are minute, hour, day of month, month, day of week (0 or 7 =
// Sunday). As in Vixie cron, when both day fields are restricted a day
// matching either runs. Times are read in the policy's time zone (IANA names,
// from the system's tzdata):
//  - a time that does not exist that day (the hour skipped when clocks go
//    forward) runs once, at the moment of the change;
//  - a time that happens twice (clocks go back) runs once, the first time.
// "@every D" runs at the multiples of D since the Unix epoch (@every 15m at
// :00, :15, :30, :45 UTC), so a restart does not shift it; time zones do
// not apply to it.
#include <cctz/time_zone.h>

#include <bitset>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "controller/catalog/types.h"

namespace cairn::controller {

class Schedule {
 public:
  // Throws cairn::Error(invalid_input) naming the field and what is wrong.
  static Schedule parse(std::string_view text);

  // The first run time strictly after t (unix seconds); nullopt when none
  // falls within the next 30 years.
  std::optional<int64_t> next_after(int64_t t, const cctz::time_zone& tz) const;

  const std::string& text() const { return text_; }
  int64_t every_seconds() const { return every_; }  // 0 for a cron schedule

 private:
  bool day_matches(int year, int month, int day, int weekday) const;

  std::string text_;
  int64_t every_ = 0;
  std::bitset<60> minutes_;
  std::bitset<24> hours_;
  std::bitset<32> days_;                        // 1-31
  std::bitset<13> months_;                      // 1-12
  std::bitset<7> weekdays_;                     // 0 = Sunday
  bool days_any_ = true, weekdays_any_ = true;  // the field began with '*'
};

// Loads an IANA time zone ("UTC", "Europe/Berlin"); throws
// cairn::Error(invalid_input) naming it when the system's tzdata lacks it.
cctz::time_zone load_time_zone(const std::string& name);

// The interval of "@every": "90s", "15m", "1h30m", "1d" -> seconds; m is
// minutes here, as in cron tools (retention's keep_within reads m as months,
// restic's way: cairn::parse_duration). Throws cairn::Error(invalid_input).
int64_t parse_interval(std::string_view text);

// A policy as it may be stored: its name (1-64 of A-Za-z0-9._-), schedule,
// time zone and retention. Throws cairn::Error(invalid_input) saying what is wrong.
void check_policy(const catalog::Policy& p);

// "2026-11-24 01:00 CET" in the zone: for listings.
std::string format_local(int64_t t, const cctz::time_zone& tz);

}  // namespace cairn::controller
