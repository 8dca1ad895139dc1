#pragma once
// The etcd driver: a snapshot of one member's keyspace through the v3
// Maintenance.Snapshot stream (client.h), streamed into the repository as one
// file with its trailing SHA-256 checked; restore with `etcdctl snapshot
// restore` into a fresh data dir, the old one kept aside; verify through the
// API across every member. Cluster-scoped: the controller backs up one member
// and restores every member from the same snapshot in steps (driver.h
// RestoreStep); each step here acts on this member only. See README.md.
#include <mutex>
#include <string>
#include <vector>

#include "agent/driver.h"
#include "agent/drivers/etcd/client.h"
#include "agent/drivers/etcd/config.h"

namespace cairn::agent::etcd {

// The name of the stream in the snapshot.
inline constexpr const char* kSnapshotFileName = "etcd-snapshot.db";

class EtcdDriver : public Driver {
 public:
  EtcdDriver(std::string component, Settings settings);

  std::string name() const override { return "etcd"; }
  DriverCaps capabilities() const override;
  bool has_restore_target(const std::string& target_name) const override { return false; }
  std::vector<std::string> config_warnings() const override;
  std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task& task) const override;
  void snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) override;
  std::vector<cairn::v1::Reason> check_snapshot(const repo::Snapshot& snap) const override;
  DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) override;
  // A whole restore on this member that the agent was killed in: the rollback step, as that restore.
  std::string recover_interrupted_restore(const InPlaceRestore& r) override { return roll_back_by_step(*this, r); }
  std::vector<cairn::v1::Reason> restore_preflight(TaskContext& ctx, const RestoreSpec& spec) override;
  DriverResult restore_commit(TaskContext& ctx, const RestoreSpec& spec) override;
  std::vector<cairn::v1::Reason> verify(TaskContext& ctx, const nlohmann::json& recorded) override;

  const Settings& settings() const { return settings_; }
  std::vector<std::string> data_paths() const override { return {settings_.data_dir}; }
  // The data step's record beside the data dir (restore.cc, marker_path).
  std::vector<std::string> restore_record_files() const override {
    const auto slash = settings_.data_dir.find_last_of('/');
    return {settings_.data_dir.substr(0, slash + 1) + "." + settings_.data_dir.substr(slash + 1) + ".cairn-restore.json"};
  }
  // The client settings (the auth file read now). Throws cairn::Error.
  ClientOptions client_options(const std::string& endpoint = {}) const;

 private:
  // One step of a restore on this member (restore.cc); each returns the
  // result of its step and never leaves a half-swapped data dir. The runner
  // calls verify() itself (after step all, and for step verify).
  DriverResult restore_all(TaskContext& ctx, const RestoreSpec& spec);
  DriverResult step_stop(TaskContext& ctx);
  DriverResult step_data(TaskContext& ctx, const RestoreSpec& spec);
  DriverResult step_start(TaskContext& ctx);
  DriverResult step_verify(TaskContext& ctx, const RestoreSpec& spec);
  // options: the step's cluster options ("was_running": "false" when the
  // member's stop step found etcd not running: it is left stopped).
  DriverResult step_rollback(TaskContext& ctx, const std::map<std::string, std::string>& options = {});
  // Waits until the member answers Status (after a start); throws on timeout.
  void wait_until_answering(TaskContext& ctx) const;
  void remember_ids(const MemberStatus& st) const;
  // The ids from the member (short timeout), else from the file the last
  // answer was kept in.
  void learn_ids() const;
  // etcdctl's --initial-cluster for this restore (restore.cc).
  std::string initial_cluster_for(const RestoreSpec& spec, const nlohmann::json& recorded) const;

  std::string component_;
  Settings settings_;
  mutable std::mutex mu_;
  mutable std::string seen_cluster_id_, seen_member_id_;
};

// The metadata a snapshot of this component recorded (Snapshot::component,
// loaded from the repository); an empty object when it recorded none.
nlohmann::json recorded_metadata(TaskContext& ctx, const std::string& snapshot_id);

}  // namespace cairn::agent::etcd
