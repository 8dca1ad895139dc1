#pragma once
// The zookeeper driver: one server's consistent on-disk state (layout.h,
// staging.h) backed up online through hard links, restored in the steps of a
// cluster restore (stop, data, start, verify, rollback) or all at once, and
// checked through the four-letter words (four_letter.h).
#include <string>
#include <vector>

#include "agent/driver.h"
#include "agent/drivers/zookeeper/config.h"
#include "agent/drivers/zookeeper/four_letter.h"
#include "agent/drivers/zookeeper/layout.h"

namespace cairn::agent::zookeeper {

class ZooKeeperDriver : public Driver {
 public:
  ZooKeeperDriver(std::string component, Settings settings);

  std::string name() const override { return "zookeeper"; }
  DriverCaps capabilities() const override;
  bool has_restore_target(const std::string& target_name) const override { return false; }
  std::vector<std::string> config_warnings() const override;
  std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task& task) const override;
  void snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) override;
  std::vector<cairn::v1::Reason> check_snapshot(const repo::Snapshot& snap) const override;
  DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) override;
  // A whole restore on this member that the agent was killed in: the rollback step, as that restore.
  std::string recover_interrupted_restore(const InPlaceRestore& r) override { return roll_back_by_step(*this, r); }
  DriverResult restore_commit(TaskContext& ctx, const RestoreSpec& spec) override;
  std::vector<cairn::v1::Reason> restore_preflight(TaskContext& ctx, const RestoreSpec& spec) override;
  // The ensemble keeps its configuration across a restore: a server rolled
  // back beside servers still on the restored data syncs from (or to) them.
  bool rollback_needs_halt() const override { return true; }
  std::vector<cairn::v1::Reason> verify(TaskContext& ctx, const nlohmann::json& recorded) override;

  const Settings& settings() const { return settings_; }
  std::vector<std::string> data_paths() const override { return {settings_.data_dir, settings_.data_log_dir, settings_.config_file}; }
  // A restore swaps version-2 inside dataDir (and dataLogDir): the copies
  // are version-2.cairn-old-* there (staging.h).
  std::vector<std::string> set_aside_paths() const override {
    std::vector<std::string> out = {settings_.data_dir + "/version-2"};
    if (!settings_.data_log_dir.empty() && settings_.data_log_dir != settings_.data_dir)
      out.push_back(settings_.data_log_dir + "/version-2");
    return out;
  }
  std::vector<std::string> restore_record_files() const override { return {settings_.data_dir + "/.cairn-restore-state.json"}; }
  // The client address for the four-letter words: declared, or zoo.cfg's
  // clientPortAddress (127.0.0.1 when unset or 0.0.0.0) and clientPort.
  std::string client_address(const ZooConfig* cfg = nullptr) const;

 private:
  // zoo.cfg, checked to name the declared directories. Throws cairn::Error.
  ZooConfig checked_config() const;
  std::optional<ServerStatus> try_status(std::string* why) const;
  bool answers() const;
  // Whether '<data_dir>/version-2' holds a snapshot (the server has data of its own).
  bool has_own_data() const;  // ruok -> imok
  void wait_down(TaskContext& ctx) const;
  void step_stop(TaskContext& ctx, DriverResult& res);
  void step_data(TaskContext& ctx, const RestoreSpec& spec, DriverResult& res);
  void step_start(TaskContext& ctx, DriverResult& res);
  void step_verify(TaskContext& ctx, DriverResult& res);
  void step_rollback(TaskContext& ctx, DriverResult& res);

  std::string component_;
  Settings settings_;
};

}  // namespace cairn::agent::zookeeper
