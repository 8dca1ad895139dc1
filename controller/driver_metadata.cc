// The driver metadata the controller reads (driver_metadata.h); each accessor
// reads its key as the code that read it before did, a wrong type included.
#include "controller/driver_metadata.h"

#include <algorithm>

#include "common/plan/recovery_target.h"

namespace cairn::controller::driver_metadata {

using nlohmann::json;

json parse(std::string_view text) { return json::parse(text, nullptr, false); }

json parse_optional(const std::optional<std::string>& text) {
  if (!text) return json();
  return parse(*text);
}

namespace {

std::string string_at(const json& m, const char* k) {
  if (!m.is_object() || !m.contains(k) || !m[k].is_string()) return {};
  return m[k].get<std::string>();
}

// What an agent wrote, shown in an operator's error: printable and short.
std::string printable(std::string s) {
  if (s.size() > 300) s.resize(300);
  for (auto& ch : s)
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) ch = ' ';
  return s;
}

// A Kafka broker's snapshot from before drill_group / drill_beside: its
// metadata_mode and cluster_id say the same.
bool legacy_kafka(const json& m) { return m.is_object() && !m.contains(key::kDrillGroup) && m.contains(key::kMetadataMode); }

}  // namespace

std::string drill_group(const json& m) {
  if (legacy_kafka(m)) return string_at(m, key::kClusterId);
  return string_at(m, key::kDrillGroup);
}

DrillBeside drill_beside(const json& m) {
  if (legacy_kafka(m)) {
    if (string_at(m, key::kMetadataMode) != "zookeeper") return {};
    return {"zookeeper", "a Kafka broker in ZooKeeper mode: its topics' metadata lives in ZooKeeper"};
  }
  if (!m.is_object() || !m.contains(key::kDrillBeside) || !m[key::kDrillBeside].is_object()) return {};
  const auto& b = m[key::kDrillBeside];
  DrillBeside out{printable(string_at(b, "driver")), printable(string_at(b, "why"))};
  if (out.why.empty()) out.why = "its drill starts a " + out.driver + " snapshot beside it";
  return out;
}

std::optional<std::string> etcd_legacy_cluster_id(const json& m) {
  if (m.is_object() && m.contains(key::kEtcdVersion) && m.value(key::kClusterId, json()).is_string())
    return m[key::kClusterId].get<std::string>();
  return std::nullopt;
}

bool pg_physical(const json& m) { return m.is_object() && m.value(key::kMode, std::string()) == "physical"; }

bool pg_has_backup_end(const json& m) { return m.is_object() && m.contains(key::kBackupEndTimeUs); }

int64_t pg_backup_end_time_us(const json& m) { return m.is_object() ? m.value(key::kBackupEndTimeUs, int64_t(0)) : 0; }

uint64_t pg_stop_lsn(const json& m) {
  uint64_t lsn = 0;
  if (m.is_object()) plan::parse_lsn(m.value(key::kStopLsn, std::string()), &lsn);
  return lsn;
}

uint32_t pg_timeline(const json& m) { return m.is_object() ? m.value(key::kTimeline, 0u) : 0u; }

json pg_history(const json& m) { return m.is_object() ? m.value(key::kHistory, json()) : json(); }

std::map<uint32_t, uint64_t> pg_history_switches(const json& history) {
  std::map<uint32_t, uint64_t> out;
  if (!history.is_array()) return out;
  for (const auto& e : history) {
    uint64_t lsn = 0;
    if (!e.is_object() || !plan::parse_lsn(e.value(key::kSwitchLsn, std::string()), &lsn)) continue;
    out[e.value(key::kTimeline, 0u)] = lsn;
  }
  return out;
}

std::optional<PgRecovery> pg_recovery(const json& m) {
  if (!m.is_object() || !m.contains(key::kRecovery) || !m[key::kRecovery].is_object()) return std::nullopt;
  const auto& r = m[key::kRecovery];
  return PgRecovery{r.value(key::kTimeline, 0u), r.value(key::kHistory, json())};
}

bool stop_found_service_down(const json& m) { return m.is_object() && m.contains(key::kWasRunning) && m[key::kWasRunning] == false; }

int preflight_stop_wave(const json& m) {
  if (!m.is_object() || !m.contains(key::kStopWave) || !m[key::kStopWave].is_number_integer()) return 0;
  return std::clamp(m[key::kStopWave].get<int>(), 0, 9);
}

bool preflight_rollback_halt(const json& m) { return m.is_object() && m.value(key::kRollbackHalt, false) == true; }

bool interrupted_restore(const json& m) { return m.is_object() && m.contains(key::kInterruptedRestore); }

bool drill_not_run(const json& m) {
  return m.is_object() && m.contains(key::kDrill) && m[key::kDrill].is_object() &&
         m[key::kDrill].value(key::kVerdict, std::string()) == "not_run";
}

}  // namespace cairn::controller::driver_metadata
