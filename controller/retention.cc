// Retention of a policy's backup sets (retention.h).
#include "controller/retention.h"

#include <cctz/civil_time.h>

#include <map>

#include "common/repo/policy.h"
#include "common/util/error.h"

namespace cairn::controller {
namespace {

std::tm civil_tm(int64_t t, const cctz::time_zone& tz) {
  auto tp = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::time_point(std::chrono::seconds(t)));
  cctz::civil_second cs = cctz::convert(tp, tz);
  std::tm tm{};
  tm.tm_year = int(cs.year() - 1900);
  tm.tm_mon = cs.month() - 1;
  tm.tm_mday = cs.day();
  tm.tm_hour = cs.hour();
  tm.tm_min = cs.minute();
  tm.tm_sec = cs.second();
  tm.tm_yday = cctz::get_yearday(cctz::civil_day(cs)) - 1;
  tm.tm_wday = (int(cctz::get_weekday(cctz::civil_day(cs))) + 1) % 7;  // cctz: Monday = 0
  return tm;
}

const char* group_of(catalog::SetState s) {
  return s == catalog::SetState::complete ? "complete" : s == catalog::SetState::partial ? "partial" : "failed";
}

// The repository's forget rules for a policy's retention.
repo::RetentionPolicy rules_of(const catalog::PolicyRetention& r) {
  repo::RetentionPolicy p;
  p.keep_last = r.last;
  p.keep_hourly = r.hourly;
  p.keep_daily = r.daily;
  p.keep_weekly = r.weekly;
  p.keep_monthly = r.monthly;
  p.keep_yearly = r.yearly;
  p.keep_within = r.within;
  return p;
}

}  // namespace

std::string describe(const catalog::PolicyRetention& r) {
  std::string out = r.empty() ? std::string("keep everything") : rules_of(r).describe();
  if (r.min) out += ", min " + std::to_string(r.min);
  return out;
}

std::vector<SetDecision> decide_retention(const std::vector<catalog::BackupSet>& sets, const catalog::PolicyRetention& r,
                                          const cctz::time_zone& tz) {
  std::vector<SetDecision> out;
  if (r.min < 0) throw Error(Errc::invalid_input, "retention: min must not be negative");
  // Each group on its own, through the repository's forget rules: one
  // "snapshot" per set, all of one source.
  std::map<std::string, std::vector<repo::Snapshot>> groups;
  std::map<std::string, const catalog::BackupSet*> by_id;
  // Sets of one second keep their order (newest first, as given): the rules'
  // sort breaks ties on `time`, here the rank from the oldest.
  char rank[24];
  size_t n = sets.size();
  for (const auto& s : sets) {
    --n;
    if (s.state == catalog::SetState::running || s.forgotten_at) continue;
    repo::Snapshot snap;
    snap.id = s.id;
    snap.time_unix = s.created_at;
    std::snprintf(rank, sizeof rank, "%020zu", n);
    snap.time = rank;
    groups[group_of(s.state)].push_back(std::move(snap));
    by_id[s.id] = &s;
  }
  repo::RetentionPolicy p = rules_of(r);
  p.civil_time = [&tz](int64_t t) { return civil_tm(t, tz); };
  for (const char* g : {"complete", "partial", "failed"}) {
    auto it = groups.find(g);
    if (it == groups.end()) continue;
    std::vector<SetDecision> part;
    if (r.empty()) {
      for (const auto& snap : it->second) part.push_back({*by_id[snap.id], g, true, {"no retention rule"}});
      std::stable_sort(part.begin(), part.end(),
                       [](const SetDecision& a, const SetDecision& b) { return a.set.created_at > b.set.created_at; });
    } else {
      for (auto& grp : repo::apply_retention(it->second, p))
        for (auto& d : grp.snapshots) part.push_back({*by_id[d.snapshot.id], g, d.keep, d.reasons});
    }
    if (std::string(g) == "complete" && r.min > 0) {
      int kept = 0;
      for (const auto& d : part) kept += d.keep;
      for (auto& d : part) {  // newest first
        if (kept >= r.min) break;
        if (!d.keep) {
          d.keep = true;
          d.reasons.push_back("min " + std::to_string(r.min));
          ++kept;
        }
      }
    }
    for (auto& d : part) out.push_back(std::move(d));
  }
  std::map<std::string, size_t> order;  // the input's position
  for (size_t i = 0; i < sets.size(); ++i) order[sets[i].id] = i;
  std::sort(out.begin(), out.end(), [&](const SetDecision& a, const SetDecision& b) { return order[a.set.id] < order[b.set.id]; });
  return out;
}

}  // namespace cairn::controller
