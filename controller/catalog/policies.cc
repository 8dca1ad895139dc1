// Backup policies and their runs (migration 0008).
#include "common/util/error.h"
#include "controller/catalog/sqlite.h"
#include "controller/catalog/tx.h"

namespace cairn::catalog {
namespace {

constexpr const char* kPolicyColumns =
    "SELECT name, source, selector, repository, mode, schedule, time_zone, retention, paused, created_at, updated_at,"
    " next_run_at, drill_schedule, drill_on, keep_proven, drill_next_at, copy_to FROM policies ";

Policy read_policy(const sqlite::Stmt& s) {
  Policy p;
  p.name = s.text(0);
  p.source = s.text(1);
  p.selector = nlohmann::json::parse(s.text(2), nullptr, false);
  if (!p.selector.is_object()) p.selector = nlohmann::json::object();
  p.repository = s.text(3);
  p.mode = s.text(4);
  p.schedule = s.text(5);
  p.time_zone = s.text(6);
  p.retention = PolicyRetention::from_json(nlohmann::json::parse(s.text(7), nullptr, false));
  p.paused = s.integer(8) != 0;
  p.created_at = s.integer(9);
  p.updated_at = s.integer(10);
  if (!s.is_null(11)) p.next_run_at = s.integer(11);
  p.drill_schedule = s.text(12);
  p.drill_on = s.text(13);
  p.keep_proven = s.integer(14) != 0;
  if (!s.is_null(15)) p.drill_next_at = s.integer(15);
  p.copy_to = s.text(16);
  return p;
}

nlohmann::json policy_json(const Policy& p) {
  return {{"source", p.source},        {"selector", p.selector},   {"repository", p.repository},         {"mode", p.mode},
          {"schedule", p.schedule},    {"time_zone", p.time_zone}, {"retention", p.retention.to_json()}, {"paused", p.paused},
          {"drill", p.drill_schedule}, {"drill_on", p.drill_on},   {"keep_proven", p.keep_proven},       {"copy_to", p.copy_to}};
}

}  // namespace

nlohmann::json PolicyRetention::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  auto put = [&](const char* k, int64_t v) {
    if (v) j[k] = v;
  };
  put("last", last);
  put("hourly", hourly);
  put("daily", daily);
  put("weekly", weekly);
  put("monthly", monthly);
  put("yearly", yearly);
  put("within", within);
  put("min", min);
  return j;
}

PolicyRetention PolicyRetention::from_json(const nlohmann::json& j) {
  PolicyRetention r;
  if (!j.is_object()) return r;
  auto get = [&](const char* k, auto& v) {
    if (j.contains(k) && j[k].is_number_integer()) v = j[k].get<std::remove_reference_t<decltype(v)>>();
  };
  get("last", r.last);
  get("hourly", r.hourly);
  get("daily", r.daily);
  get("weekly", r.weekly);
  get("monthly", r.monthly);
  get("yearly", r.yearly);
  get("within", r.within);
  get("min", r.min);
  return r;
}

void Tx::put_policy(const Policy& p, bool create) {
  auto old = policy(p.name);
  if (create && old) throw Error(Errc::exists, "a policy named '" + p.name + "' exists; edit it, or pick another name");
  if (!create && !old) throw Error(Errc::not_found, "no policy '" + p.name + "'");
  int64_t created = old ? old->created_at : now();
  db_.prepare(
         "INSERT OR REPLACE INTO policies (name, source, selector, repository, mode, schedule, time_zone, retention,"
         " paused, created_at, updated_at, next_run_at, drill_schedule, drill_on, keep_proven, drill_next_at, copy_to)"
         " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
      .bind_all(p.name, p.source, p.selector.dump(), p.repository, p.mode, p.schedule, p.time_zone, p.retention.to_json().dump(),
                int64_t(p.paused), created, now(), p.next_run_at, p.drill_schedule, p.drill_on, int64_t(p.keep_proven), p.drill_next_at,
                p.copy_to)
      .run();
  audit({old ? "policy.edit" : "policy.add", "policy:" + p.name, "ok", "", policy_json(p)});
}

bool Tx::remove_policy(const std::string& name) {
  auto old = policy(name);
  if (!old) return false;
  db_.prepare("DELETE FROM policies WHERE name = ?").bind(1, name).run();
  audit({"policy.remove", "policy:" + name, "ok", "", policy_json(*old)});
  return true;
}

std::optional<Policy> Tx::policy(const std::string& name) const {
  auto s = db_.prepare(std::string(kPolicyColumns) + "WHERE name = ?");
  s.bind(1, name);
  if (!s.step()) return std::nullopt;
  return read_policy(s);
}

std::vector<Policy> Tx::policies() const {
  auto s = db_.prepare(std::string(kPolicyColumns) + "ORDER BY name");
  std::vector<Policy> out;
  while (s.step()) out.push_back(read_policy(s));
  return out;
}

void Tx::set_policy_paused(const std::string& name, bool paused) {
  auto old = policy(name);
  if (!old) throw Error(Errc::not_found, "no policy '" + name + "'");
  if (old->paused == paused) return;
  db_.prepare("UPDATE policies SET paused = ?, updated_at = ? WHERE name = ?").bind_all(int64_t(paused), now(), name).run();
  audit({paused ? "policy.pause" : "policy.resume", "policy:" + name, "ok", "", nlohmann::json::object()});
}

void Tx::set_policy_next_run(const std::string& name, std::optional<int64_t> at) {
  db_.prepare("UPDATE policies SET next_run_at = ? WHERE name = ?").bind_all(at, name).run();
}

void Tx::set_policy_next_drill(const std::string& name, std::optional<int64_t> at) {
  db_.prepare("UPDATE policies SET drill_next_at = ? WHERE name = ?").bind_all(at, name).run();
}

std::map<std::string, std::string> Tx::newest_proven_sets(const std::string& policy) const {
  // Per component: the newest set of the policy a drill proved (a drill task
  // that succeeded). SQLite takes the bare columns from the max() row.
  auto s = db_.prepare(
      "SELECT t.component, r.source_set_id, max(b.created_at) FROM restores r JOIN tasks t ON t.restore_id = r.id"
      " JOIN backup_sets b ON b.id = r.source_set_id WHERE r.kind = 'drill' AND t.state = 'succeeded' AND b.policy = ?"
      " GROUP BY t.component");
  s.bind(1, policy);
  std::map<std::string, std::string> out;
  while (s.step()) out[s.text(0)] = s.text(1);
  return out;
}

std::vector<std::string> Tx::sets_being_drilled(const std::string& policy) const {
  auto s = db_.prepare(
      "SELECT DISTINCT r.source_set_id FROM restores r JOIN backup_sets b ON b.id = r.source_set_id"
      " WHERE r.kind = 'drill' AND r.state = 'running' AND b.policy = ? ORDER BY 1");
  s.bind(1, policy);
  std::vector<std::string> out;
  while (s.step()) out.push_back(s.text(0));
  return out;
}

void Tx::record_policy_run(const PolicyRun& r) {
  db_.prepare(
         "INSERT INTO policy_runs (policy, scheduled_for, at, trigger, outcome, backup_set_id, reason)"
         " VALUES (?, ?, ?, ?, ?, ?, ?)")
      .bind_all(r.policy, r.scheduled_for, now(), r.trigger, r.outcome, r.backup_set_id, r.reason)
      .run();
  nlohmann::json d = {{"trigger", r.trigger}, {"scheduled_for", r.scheduled_for}};
  if (r.backup_set_id) d["backup_set_id"] = *r.backup_set_id;
  audit({"policy.run", "policy:" + r.policy, r.outcome, r.reason, d});
}

std::vector<PolicyRun> Tx::policy_runs(const std::string& name, size_t limit) const {
  auto s = db_.prepare(
      "SELECT seq, policy, scheduled_for, at, trigger, outcome, backup_set_id, reason FROM policy_runs"
      " WHERE policy = ? ORDER BY seq DESC LIMIT ?");
  s.bind(1, name).bind(2, int64_t(limit));
  std::vector<PolicyRun> out;
  while (s.step()) {
    PolicyRun r;
    r.seq = s.integer(0);
    r.policy = s.text(1);
    r.scheduled_for = s.integer(2);
    r.at = s.integer(3);
    r.trigger = s.text(4);
    r.outcome = s.text(5);
    if (!s.is_null(6)) r.backup_set_id = s.text(6);
    r.reason = s.text(7);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace cairn::catalog
