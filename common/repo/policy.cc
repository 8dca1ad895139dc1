#include "common/repo/policy.h"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <map>

#include "common/util/error.h"

namespace cairn::repo {

namespace {

// Bucket keys: two snapshots share a bucket when their keys are equal.
int64_t hour_key(const std::tm& t) { return (int64_t(t.tm_year) * 400 + t.tm_yday) * 24 + t.tm_hour; }
int64_t day_key(const std::tm& t) { return int64_t(t.tm_year) * 400 + t.tm_yday; }
int64_t month_key(const std::tm& t) { return int64_t(t.tm_year) * 12 + t.tm_mon; }
int64_t year_key(const std::tm& t) { return t.tm_year; }
// ISO 8601 week: weeks start on Monday and belong to the year holding their Thursday.
int64_t week_key(const std::tm& t) {
  char buf[16];
  std::strftime(buf, sizeof buf, "%G%V", &t);
  return std::atoll(buf);
}

struct Bucket {
  const char* name;
  int count;
  int64_t (*key)(const std::tm&);
  bool has_last = false;
  int64_t last = 0;
  int used = 0;
};

}  // namespace

bool RetentionPolicy::empty() const {
  return keep_last == 0 && keep_hourly == 0 && keep_daily == 0 && keep_weekly == 0 && keep_monthly == 0 && keep_yearly == 0 &&
         keep_within == 0 && keep_tags.empty();
}

std::string format_duration(int64_t s) {
  if (s <= 0) return "0s";
  std::string out;
  auto part = [&](int64_t unit, const char* name) {
    if (s >= unit) {
      out += std::to_string(s / unit) + name;
      s %= unit;
    }
  };
  part(86400, "d");
  part(3600, "h");
  part(60, "min");
  part(1, "s");
  return out;
}

std::string RetentionPolicy::describe() const {
  std::string out;
  auto add = [&](const std::string& s) { out += (out.empty() ? "" : ", ") + s; };
  if (keep_last) add("last " + std::to_string(keep_last));
  if (keep_hourly) add("hourly " + std::to_string(keep_hourly));
  if (keep_daily) add("daily " + std::to_string(keep_daily));
  if (keep_weekly) add("weekly " + std::to_string(keep_weekly));
  if (keep_monthly) add("monthly " + std::to_string(keep_monthly));
  if (keep_yearly) add("yearly " + std::to_string(keep_yearly));
  if (keep_within) add("within " + format_duration(keep_within));
  for (const auto& t : keep_tags) add("tag '" + t + "'");
  return out.empty() ? "none" : out;
}

std::vector<RetentionGroup> apply_retention(const std::vector<Snapshot>& snapshots, const RetentionPolicy& p) {
  if (p.empty()) throw Error(Errc::invalid_input, "no policy given: nothing would be kept (give at least one --keep-* option)");
  for (int n : {p.keep_last, p.keep_hourly, p.keep_daily, p.keep_weekly, p.keep_monthly, p.keep_yearly})
    if (n < 0) throw Error(Errc::invalid_input, "a --keep-* count must not be negative");
  if (p.keep_within < 0) throw Error(Errc::invalid_input, "--keep-within must not be negative");

  std::map<std::string, std::vector<const Snapshot*>> by_source;
  for (const auto& s : snapshots) by_source[source_key(s)].push_back(&s);

  std::vector<RetentionGroup> out;
  for (auto& [key, members] : by_source) {
    // Newest first; equal times are ordered by id so the result does not depend on input order.
    std::sort(members.begin(), members.end(), [](const Snapshot* a, const Snapshot* b) {
      if (a->time_unix != b->time_unix) return a->time_unix > b->time_unix;
      if (a->time != b->time) return a->time > b->time;
      return a->id > b->id;
    });
    RetentionGroup g;
    g.hostname = members.front()->hostname;
    g.paths = members.front()->paths;
    std::sort(g.paths.begin(), g.paths.end());

    Bucket buckets[] = {{"hourly", p.keep_hourly, hour_key},
                        {"daily", p.keep_daily, day_key},
                        {"weekly", p.keep_weekly, week_key},
                        {"monthly", p.keep_monthly, month_key},
                        {"yearly", p.keep_yearly, year_key}};
    int last_used = 0;
    int64_t newest = members.front()->time_unix;
    for (const Snapshot* s : members) {
      RetentionDecision d;
      d.snapshot = *s;
      if (last_used < p.keep_last) d.reasons.push_back("last " + std::to_string(++last_used));
      std::tm tm{};
      if (p.civil_time) {
        tm = p.civil_time(s->time_unix);
      } else {
        time_t t = time_t(s->time_unix);
        gmtime_r(&t, &tm);
      }
      for (auto& b : buckets) {
        if (b.used >= b.count) continue;
        int64_t k = b.key(tm);
        if (b.has_last && b.last == k) continue;
        b.has_last = true;
        b.last = k;
        d.reasons.push_back(std::string(b.name) + " " + std::to_string(++b.used));
      }
      if (p.keep_within > 0 && s->time_unix >= newest - p.keep_within) d.reasons.push_back("within " + format_duration(p.keep_within));
      for (const auto& tag : p.keep_tags)
        if (std::find(s->tags.begin(), s->tags.end(), tag) != s->tags.end()) d.reasons.push_back("tag '" + tag + "'");
      d.keep = !d.reasons.empty();
      g.snapshots.push_back(std::move(d));
    }
    bool any = std::any_of(g.snapshots.begin(), g.snapshots.end(), [](const RetentionDecision& d) { return d.keep; });
    if (!any) {
      g.snapshots.front().keep = true;
      g.snapshots.front().reasons.push_back("newest of its group (the policy would remove every snapshot)");
      g.guard_kept_newest = true;
    }
    out.push_back(std::move(g));
  }
  return out;
}

std::string log_position(uint64_t position) {
  char pos[17];
  std::snprintf(pos, sizeof pos, "%016llx", static_cast<unsigned long long>(position));
  return pos;
}

std::string log_piece_tag(const std::string& chain, uint64_t position) { return "log:" + chain + ":" + log_position(position); }

std::vector<const Snapshot*> replayed_by(const Snapshot& piece, const std::vector<const Snapshot*>& kept) {
  std::vector<const Snapshot*> out;
  for (const auto& t : piece.tags) {
    if (t.rfind("log:", 0) != 0) continue;
    const size_t colon = t.rfind(':');
    if (colon <= 4 || t.size() - colon - 1 != 16) continue;
    const std::string chain = t.substr(4, colon - 4), pos = t.substr(colon + 1);
    for (const Snapshot* k : kept) {
      if (k->id == piece.id || k->partial || !k->component.is_object() || !k->component.contains("replays_log")) continue;
      const auto& r = k->component["replays_log"];
      if (!r.is_object() || r.value("log", "") != chain) continue;
      const std::string from = r.value("from", "");
      // Fixed-width hex: ordered as text as as numbers.
      if (from.size() == 16 && from <= pos) out.push_back(k);
    }
  }
  return out;
}

}  // namespace cairn::repo
