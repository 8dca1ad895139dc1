#pragma once
// The driver metadata the controller reads, in one place. A driver records a
// JSON object with each task it ends (TaskResult.component_metadata, stored
// as tasks.component_metadata, and the snapshot's "component" object); the
// controller reads only the keys declared here, and every key it reads is in
// the table of docs/protocol.md § Driver metadata the controller reads. A
// value that is absent or not an object reads as the defaults below.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

namespace cairn::controller::driver_metadata {

// The keys, as the drivers write them.
namespace key {
// Kafka (agent/drivers/kafka): a broker's backup.
inline constexpr const char* kMetadataMode = "metadata_mode";  // "kraft" or "zookeeper"
inline constexpr const char* kClusterId = "cluster_id";        // Kafka's cluster id; etcd's (older snapshots)
// PostgreSQL (agent/drivers/postgresql): a backup, a recovery.
inline constexpr const char* kMode = "mode";  // "physical" for a base backup
inline constexpr const char* kBackupEndTimeUs = "backup_end_time_us";
inline constexpr const char* kStopLsn = "stop_lsn";
inline constexpr const char* kTimeline = "timeline";
inline constexpr const char* kHistory = "history";  // [{timeline, switch_lsn}]
inline constexpr const char* kSwitchLsn = "switch_lsn";
inline constexpr const char* kRecovery = "recovery";  // {timeline, history}
// etcd: marks its snapshots (catalog rebuild of older ones).
inline constexpr const char* kEtcdVersion = "etcd_version";
// Cluster restore steps (agent/task_runner.cc, agent/driver.h).
inline constexpr const char* kWasRunning = "was_running";      // stop step (etcd, ZooKeeper)
inline constexpr const char* kStopWave = "stop_wave";          // preflight step
inline constexpr const char* kRollbackHalt = "rollback_halt";  // preflight step
// Any restore the agent finished after an interruption (agent/restore_journal.cc).
inline constexpr const char* kInterruptedRestore = "interrupted_restore";
// Drills: how a driver's snapshots are drilled together (any driver).
inline constexpr const char* kDrillGroup = "drill_group";    // one sandbox cluster per group
inline constexpr const char* kDrillBeside = "drill_beside";  // {"driver", "why"}: a snapshot started beside it
// A drill task (agent/drill_task.cc): {"drill": {"verdict": ...}}.
inline constexpr const char* kDrill = "drill";
inline constexpr const char* kVerdict = "verdict";
}  // namespace key

// A task's metadata: the parsed object, or null when there is none or it is
// not JSON (every accessor then reads its default).
nlohmann::json parse(std::string_view text);
nlohmann::json parse_optional(const std::optional<std::string>& text);  // a task's column

// --- Drills --------------------------------------------------------------
// The group a snapshot is drilled in: the snapshots of one set, repository,
// driver and group are started together as one sandbox cluster, each drill
// task carrying them all (Kafka's brokers of one cluster). "" when the
// snapshot is drilled alone. A Kafka broker's snapshot from before the key
// existed reads its cluster id.
std::string drill_group(const nlohmann::json& m);
// Another driver's snapshot, of the same set and repository, that the drill
// starts beside this one (a Kafka broker in ZooKeeper mode: the ensemble),
// and why, in the operator's words. An empty driver when none is needed.
struct DrillBeside {
  std::string driver, why;
};
DrillBeside drill_beside(const nlohmann::json& m);

// --- etcd ----------------------------------------------------------------
// An etcd snapshot from before the logical cluster (0014) named etcd's own
// cluster id; nullopt for other snapshots.
std::optional<std::string> etcd_legacy_cluster_id(const nlohmann::json& m);

// --- PostgreSQL ----------------------------------------------------------
// A physical base backup (point-in-time recovery can start from it).
bool pg_physical(const nlohmann::json& m);
// Whether it recorded when it became consistent.
bool pg_has_backup_end(const nlohmann::json& m);
int64_t pg_backup_end_time_us(const nlohmann::json& m);  // 0 when absent
uint64_t pg_stop_lsn(const nlohmann::json& m);           // 0 when absent or unparsable
uint32_t pg_timeline(const nlohmann::json& m);           // 0 when absent
nlohmann::json pg_history(const nlohmann::json& m);      // null when absent
// A history's entries: each ancestor timeline and the LSN where it ended
// ({"timeline": 1, "switch_lsn": "0/3000000"}); entries without a valid LSN
// are left out.
std::map<uint32_t, uint64_t> pg_history_switches(const nlohmann::json& history);
// A recovery's result: the timeline it ended on and that timeline's history.
struct PgRecovery {
  uint32_t timeline = 0;
  nlohmann::json history;
};
std::optional<PgRecovery> pg_recovery(const nlohmann::json& m);

// --- Cluster restore steps -----------------------------------------------
// A stop step that found the member's service down (rollback leaves it down).
bool stop_found_service_down(const nlohmann::json& m);
// The stop wave a member's preflight reported, 0..9; 0 when none.
int preflight_stop_wave(const nlohmann::json& m);
// Whether a member's preflight asked for the halt before a rollback.
bool preflight_rollback_halt(const nlohmann::json& m);

// --- Any restore ---------------------------------------------------------
// The agent finished a restore an interruption had stopped (its journal).
bool interrupted_restore(const nlohmann::json& m);

// A drill that could not run (its verdict "not_run"), as opposed to failed.
bool drill_not_run(const nlohmann::json& m);

}  // namespace cairn::controller::driver_metadata
