// The controller's periodic verification of its repositories (verification.h).
#include "controller/verification.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>

#include "common/repo/repository.h"
#include "common/util/error.h"
#include "controller/catalog/tx.h"
#include "controller/schedule.h"

namespace cairn::controller {
namespace {

// CAIRN_VERIFY_INTERVAL_SECONDS_FOR_TESTS, else the configuration's.
int64_t interval_of(const ControllerConfig& c) {
  const char* v = std::getenv("CAIRN_VERIFY_INTERVAL_SECONDS_FOR_TESTS");
  long long n = v ? std::atoll(v) : 0;
  return n > 0 ? int64_t(n) : c.verify_interval_seconds;
}

// A failed listing (the store away, a password file unreadable) is tried
// again within ten minutes, not a whole interval later.
constexpr int64_t kRetrySeconds = 600;

// The audit event names at most this many snapshots (and counts them all).
constexpr size_t kAuditListed = 100;

}  // namespace

std::vector<catalog::StoredSnapshot> missing_snapshots(const std::vector<catalog::StoredSnapshot>& before,
                                                       const std::set<std::string>& listed,
                                                       const std::vector<catalog::StoredSnapshot>& after) {
  std::set<std::string> still;
  for (const auto& s : after) still.insert(s.snapshot_id);
  std::vector<catalog::StoredSnapshot> out;
  std::set<std::string> seen;
  for (const auto& s : before)
    if (!listed.count(s.snapshot_id) && still.count(s.snapshot_id) && seen.insert(s.snapshot_id).second) out.push_back(s);
  return out;
}

std::string missing_line(const catalog::StoredSnapshot& s) {
  return s.snapshot_id + " (set " + s.set_id + ", task " + s.task_id + ", agent " + s.agent + ", component " + s.component + ", made " +
         (s.made_at ? format_local(s.made_at, cctz::utc_time_zone()) : std::string("-")) + (s.copy ? ", the controller's copy" : "") + ")";
}

std::string protection_line(const repo::StoreProtection& p) {
  return std::string("store protection: ") + repo::protection_name(p.state) + (p.detail.empty() ? "" : " (" + p.detail + ")");
}

Verifier::Verifier(catalog::Catalog& catalog, const Maintenance& maintenance, const ControllerConfig& config)
    : catalog_(catalog), maintenance_(maintenance), config_(config), interval_(interval_of(config)), worker_([this](const Job& j) {
        return run(j);
      }) {
  for (const auto& r : config.repositories) {
    auto& st = state_[r.name];
    st.repository = r.name;
    st.remote = repo::is_remote_location(r.path);
  }
}

Verifier::~Verifier() = default;

std::vector<RepositoryVerification> Verifier::states() const {
  std::vector<RepositoryVerification> out;
  for (const auto& r : config_.repositories)
    if (auto it = state_.find(r.name); it != state_.end()) out.push_back(it->second);
  return out;
}

Verifier::Result Verifier::run(const Job& job) {
  Result res;
  res.job = job;
  try {
    const ControllerConfig::Repository* decl = config_.repository(job.repository);
    if (!decl) throw Error(Errc::not_found, "repository '" + job.repository + "' is not declared in the controller's configuration");
    auto it = open_.find(job.repository);
    if (it == open_.end()) it = open_.emplace(job.repository, open_controller_repository(*decl)).first;
    for (auto& name : it->second->list(repo::FileType::snapshot)) res.listed.insert(std::move(name));
    res.ok = true;
    try {
      res.protection = it->second->backend().protection();
    } catch (const std::exception& e) {
      res.protection = {repo::Protection::unknown, std::string("the store did not say: ") + e.what()};
    }
    res.protection_known = true;
  } catch (const std::exception& e) {
    open_.erase(job.repository);  // opened again next time (a password file changed, a disk remounted)
    res.error = e.what();
  }
  return res;
}

void Verifier::record(Result res, int64_t now) {
  const std::string& repo = res.job.repository;
  in_flight_.erase(repo);
  auto& st = state_[repo];
  st.repository = repo;
  st.tried_at = now;
  if (!res.ok) {
    if (st.error != res.error)
      spdlog::warn("verify: repository '{}' cannot be listed: {}; tried again in {} s", repo, res.error,
                   std::min(interval_, kRetrySeconds));
    st.error = res.error;
    next_at_[repo] = std::min(next_at_[repo], now + kRetrySeconds);
    return;
  }
  auto after = catalog_.read([&](const catalog::Tx& tx) { return tx.snapshots_in(repo); });
  auto missing = missing_snapshots(res.job.expected, res.listed, after);
  std::set<std::string> known;
  for (const auto& m : st.missing) known.insert(m.snapshot_id);
  size_t fresh = 0;
  for (const auto& m : missing) fresh += !known.count(m.snapshot_id);
  st.error.clear();
  st.verified_at = res.job.started_at;  // what it found holds as of the listing, not of this tick
  st.expected = res.job.expected.size();
  st.listed = res.listed.size();
  if (res.protection_known) {
    if (!st.protection_known || st.protection.state != res.protection.state)
      spdlog::info("verify: repository '{}': store protection {}{}", repo, repo::protection_name(res.protection.state),
                   res.protection.detail.empty() ? "" : " (" + res.protection.detail + ")");
    st.protection_known = true;
    st.protection = res.protection;
    st.protection_at = now;
  }
  if (fresh) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& m : missing) {
      if (list.size() == kAuditListed) break;
      list.push_back({{"snapshot", m.snapshot_id},
                      {"set", m.set_id},
                      {"task", m.task_id},
                      {"agent", m.agent},
                      {"component", m.component},
                      {"made_at", m.made_at},
                      {"copy", m.copy}});
    }
    std::string why = std::to_string(missing.size()) + " snapshot(s) the catalog holds are not in the repository";
    catalog_.transaction("controller", [&](catalog::Tx& tx) {
      tx.audit({"repository.snapshots_missing",
                "repository:" + repo,
                "missing",
                why,
                {{"missing", missing.size()}, {"new", fresh}, {"expected", st.expected}, {"listed", st.listed}, {"snapshots", list}}});
    });
    for (const auto& m : missing)
      if (!known.count(m.snapshot_id))
        spdlog::error("verify: repository '{}': snapshot {} is in the catalog but not in the repository", repo, missing_line(m));
  } else if (missing.empty() && !known.empty()) {
    spdlog::info("verify: repository '{}': every snapshot the catalog holds is there again", repo);
  }
  spdlog::debug("verify: repository '{}': {} snapshot(s) listed, {} held by the catalog, {} missing", repo, st.listed, st.expected,
                missing.size());
  st.missing = std::move(missing);
}

void Verifier::tick(int64_t now) {
  for (auto& res : worker_.take_results()) record(std::move(res), now);
  for (const auto& r : config_.repositories) {
    if (in_flight_.count(r.name)) continue;
    auto& at = next_at_[r.name];  // 0 at first: right after the start
    if (at > now) continue;
    // Retention removes snapshots while its job runs: listed then, they
    // would read as missing. The turn comes once the job ends.
    if (maintenance_.busy(r.name)) continue;
    Job job{r.name, catalog_.read([&](const catalog::Tx& tx) { return tx.snapshots_in(r.name); }), now};
    at = now + interval_;
    in_flight_.insert(r.name);
    worker_.submit(std::move(job));
  }
}

}  // namespace cairn::controller
