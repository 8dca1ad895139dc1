// Cron and @every schedules in a time zone (schedule.h).
#include "controller/schedule.h"

#include <cctz/civil_time.h>
#include <sys/stat.h>

#include <array>
#include <cctype>
#include <charconv>
#include <cstdlib>
#include <vector>

#include "common/util/error.h"

namespace cairn::controller {
namespace {

[[noreturn]] void bad(const std::string& why) { throw Error(Errc::invalid_input, why); }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = char(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= s.size(); ++i)
    if (i == s.size() || s[i] == sep) {
      out.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  return out;
}

struct Field {
  const char* name;
  int lo, hi;
  const std::array<const char*, 12>* names;  // lo-based names (months from 1, weekdays from 0)
};

constexpr std::array<const char*, 12> kMonths = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::array<const char*, 12> kWeekdays = {"sun", "mon", "tue", "wed", "thu", "fri", "sat", "", "", "", "", ""};

int value(const Field& f, std::string_view tok, std::string_view whole) {
  if (tok.empty()) bad(std::string(f.name) + " field '" + std::string(whole) + "': a value is missing");
  if (f.names) {
    std::string l = lower(tok);
    for (size_t i = 0; i < f.names->size(); ++i)
      if ((*f.names)[i][0] && l == (*f.names)[i]) return f.lo + int(i);
  }
  int v = 0;
  auto [p, ec] = std::from_chars(tok.data(), tok.data() + tok.size(), v);
  if (ec != std::errc() || p != tok.data() + tok.size())
    bad(std::string(f.name) + " field '" + std::string(whole) + "': '" + std::string(tok) + "' is not a number" +
        (f.names ? " or a name" : ""));
  int hi = f.names == &kWeekdays ? 7 : f.hi;  // 7 is Sunday too
  if (v < f.lo || v > hi)
    bad(std::string(f.name) + " field '" + std::string(whole) + "': " + std::to_string(v) + " is out of range " + std::to_string(f.lo) +
        "-" + std::to_string(hi));
  return v;
}

// Sets the bits of one field; returns whether it began with '*'.
template <size_t N>
bool parse_field(const Field& f, std::string_view text, std::bitset<N>& bits) {
  for (auto part : split(text, ',')) {
    int step = 1;
    std::string_view range = part;
    if (auto slash = part.find('/'); slash != std::string_view::npos) {
      range = part.substr(0, slash);
      auto s = part.substr(slash + 1);
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
      if (ec != std::errc() || p != s.data() + s.size() || step < 1 || step > f.hi)
        bad(std::string(f.name) + " field '" + std::string(text) + "': step '" + std::string(s) + "' must be a number from 1 to " +
            std::to_string(f.hi));
    }
    int a = f.lo, b = f.hi;
    if (range == "*") {
    } else if (auto dash = range.find('-'); dash != std::string_view::npos) {
      a = value(f, range.substr(0, dash), text);
      b = value(f, range.substr(dash + 1), text);
      if (a > b) bad(std::string(f.name) + " field '" + std::string(text) + "': range " + std::string(range) + " runs backwards");
    } else {
      a = value(f, range, text);
      b = part.find('/') != std::string_view::npos ? f.hi : a;  // "5/15": from 5 to the end, every 15
    }
    for (int v = a; v <= b; v += step) bits.set(size_t(v == 7 && f.names == &kWeekdays ? 0 : v));
  }
  return !text.empty() && text[0] == '*';
}

int days_in_month(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  return month == 2 && leap ? 29 : kDays[month - 1];
}

}  // namespace

int64_t parse_interval(std::string_view text) {
  if (text.empty()) bad("'@every' needs an interval (e.g. 15m, 1h30m, 1d)");
  int64_t total = 0;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
    if (start == i) bad("interval '" + std::string(text) + "': expected a number at '" + std::string(text.substr(start)) + "'");
    int64_t n = 0;
    std::from_chars(text.data() + start, text.data() + i, n);
    size_t ustart = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    std::string unit = lower(text.substr(ustart, i - ustart));
    int64_t mult = unit == "s"                    ? 1
                   : unit == "m" || unit == "min" ? 60
                   : unit == "h"                  ? 3600
                   : unit == "d"                  ? 86400
                   : unit == "w"                  ? 7 * 86400
                                                  : 0;
    if (mult == 0) bad("interval '" + std::string(text) + "': unit '" + unit + "' is not one of s, m (min), h, d, w");
    if (n > (int64_t(1) << 40) / mult) bad("interval '" + std::string(text) + "' is too long");
    total += n * mult;
  }
  return total;
}

Schedule Schedule::parse(std::string_view text_in) {
  Schedule s;
  std::string text(text_in);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.erase(0, 1);
  s.text_ = text;
  if (text.empty()) bad("the schedule is empty (e.g. '0 1 * * *', '@daily', '@every 15m')");
  std::string expr = text;
  if (text[0] == '@') {
    std::string l = lower(text);
    if (l.rfind("@every", 0) == 0) {
      std::string_view d = std::string_view(text).substr(6);
      while (!d.empty() && d.front() == ' ') d.remove_prefix(1);
      s.every_ = parse_interval(d);
      if (s.every_ < 1) bad("'@every " + std::string(d) + "': the interval must be at least 1s");
      return s;
    }
    if (l == "@yearly" || l == "@annually")
      expr = "0 0 1 1 *";
    else if (l == "@monthly")
      expr = "0 0 1 * *";
    else if (l == "@weekly")
      expr = "0 0 * * 0";
    else if (l == "@daily" || l == "@midnight")
      expr = "0 0 * * *";
    else if (l == "@hourly")
      expr = "0 * * * *";
    else
      bad("unknown schedule '" + text + "': use @yearly, @monthly, @weekly, @daily, @hourly, @every DURATION or 5 cron fields");
  }
  std::vector<std::string_view> f;
  for (auto part : split(expr, ' '))
    if (!part.empty()) f.push_back(part);
  if (f.size() != 5)
    bad("schedule '" + text + "' has " + std::to_string(f.size()) +
        " fields; cron takes 5: minute hour day-of-month month day-of-week (e.g. '0 1 * * *')");
  parse_field(Field{"minute", 0, 59, nullptr}, f[0], s.minutes_);
  parse_field(Field{"hour", 0, 23, nullptr}, f[1], s.hours_);
  s.days_any_ = parse_field(Field{"day-of-month", 1, 31, nullptr}, f[2], s.days_);
  parse_field(Field{"month", 1, 12, &kMonths}, f[3], s.months_);
  s.weekdays_any_ = parse_field(Field{"day-of-week", 0, 6, &kWeekdays}, f[4], s.weekdays_);
  // A day of month no selected month has ("0 0 30 2 *") would never run.
  if (s.weekdays_any_) {
    bool possible = false;
    for (int m = 1; m <= 12; ++m)
      for (int d = 1; d <= days_in_month(2000, m); ++d) possible |= s.months_[size_t(m)] && s.days_[size_t(d)];
    if (!possible) bad("schedule '" + text + "' never runs: no selected month has the selected day of month");
  }
  return s;
}

bool Schedule::day_matches(int year, int month, int day, int weekday) const {
  if (!months_[size_t(month)]) return false;
  if (day > days_in_month(year, month)) return false;
  bool dom = days_[size_t(day)], dow = weekdays_[size_t(weekday)];
  if (days_any_ || weekdays_any_) return dom && dow;
  return dom || dow;
}

std::optional<int64_t> Schedule::next_after(int64_t t, const cctz::time_zone& tz) const {
  if (every_ > 0) return (t / every_ + 1) * every_;
  using clock = std::chrono::system_clock;
  auto tp = clock::time_point(std::chrono::seconds(t));
  cctz::civil_day day = cctz::civil_day(cctz::convert(std::chrono::time_point_cast<std::chrono::seconds>(tp), tz));
  // One day back: a time skipped by a DST change the day before may map after t.
  day -= 1;
  for (int i = 0; i < 366 * 30; ++i, ++day) {
    int wd = int(cctz::get_weekday(day));  // cctz: monday = 0 ... sunday = 6
    int weekday = (wd + 1) % 7;
    if (!day_matches(int(day.year()), day.month(), day.day(), weekday)) continue;
    for (int h = 0; h < 24; ++h) {
      if (!hours_[size_t(h)]) continue;
      for (int m = 0; m < 60; ++m) {
        if (!minutes_[size_t(m)]) continue;
        cctz::civil_second cs(day.year(), day.month(), day.day(), h, m, 0);
        auto lookup = tz.lookup(cs);
        auto at = lookup.kind == cctz::time_zone::civil_lookup::SKIPPED ? lookup.trans : lookup.pre;
        int64_t secs = std::chrono::duration_cast<std::chrono::seconds>(at.time_since_epoch()).count();
        if (secs > t) return secs;
      }
    }
  }
  return std::nullopt;
}

namespace {

// An IANA name ("UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires",
// "Etc/GMT+5"): components of letters, digits, '_', '-' and '+', never "." or
// "..", never absolute. cctz opens whatever path it is given (a FIFO would
// block the controller's loop, /etc/localtime is the host's, not a name).
bool iana_name(const std::string& n) {
  if (n.empty() || n.size() > 64 || n.front() == '/' || n.back() == '/') return false;
  size_t start = 0;
  for (;;) {
    size_t slash = n.find('/', start);
    std::string part = n.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (part.empty() || part == "." || part == "..") return false;
    for (char c : part)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-' && c != '+') return false;
    if (slash == std::string::npos) return true;
    start = slash + 1;
  }
}

}  // namespace

cctz::time_zone load_time_zone(const std::string& name) {
  cctz::time_zone tz;
  if (!iana_name(name))
    bad("time zone '" + name +
        "' is not an IANA name: give one such as 'UTC' or 'Europe/Berlin' (from tzdata, "
        "/usr/share/zoneinfo), not a path");
  if (name != "UTC") {
    // Only a regular file of the zoneinfo database (links to one are fine).
    const char* dir = std::getenv("TZDIR");
    const std::string file = std::string(dir && *dir ? dir : "/usr/share/zoneinfo") + "/" + name;
    struct stat st {};
    if (::stat(file.c_str(), &st) != 0 || !S_ISREG(st.st_mode))
      bad("unknown time zone '" + name + "': give an IANA name such as 'UTC' or 'Europe/Berlin' (from tzdata, /usr/share/zoneinfo)");
  }
  if (!cctz::load_time_zone(name, &tz))
    bad("unknown time zone '" + name + "': give an IANA name such as 'UTC' or 'Europe/Berlin' (from tzdata, /usr/share/zoneinfo)");
  return tz;
}

void check_policy(const catalog::Policy& p) {
  if (p.name.empty() || p.name.size() > 64) bad("a policy name must be 1 to 64 characters");
  for (char c : p.name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-')
      bad("policy name '" + p.name + "': only letters, digits, '.', '_' and '-' are allowed");
  if (p.schedule.empty()) bad("no schedule (e.g. '0 1 * * *', '@daily', '@every 15m')");
  Schedule::parse(p.schedule);
  if (!p.drill_schedule.empty()) Schedule::parse(p.drill_schedule);
  if (p.drill_on.size() > 64) bad("drill_on: an agent name is at most 64 characters");
  if (!p.copy_to.empty() && p.copy_to == p.repository)
    bad("copy_to '" + p.copy_to + "' is the policy's own repository: an offsite copy goes to another one");
  load_time_zone(p.time_zone);
  const auto& r = p.retention;
  for (int64_t v : {int64_t(r.last), int64_t(r.hourly), int64_t(r.daily), int64_t(r.weekly), int64_t(r.monthly), int64_t(r.yearly),
                    r.within, int64_t(r.min)})
    if (v < 0) bad("retention counts must not be negative");
  if (r.empty() && r.min > 0) bad("keep_min without a keep rule keeps everything anyway; add keep_last, keep_daily, ...");
}

std::string format_local(int64_t t, const cctz::time_zone& tz) {
  auto tp = std::chrono::system_clock::time_point(std::chrono::seconds(t));
  return cctz::format("%Y-%m-%d %H:%M:%S %Z", std::chrono::time_point_cast<std::chrono::seconds>(tp), tz);
}

}  // namespace cairn::controller
