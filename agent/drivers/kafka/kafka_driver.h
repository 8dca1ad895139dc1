#pragma once
// The kafka driver: one broker's log directories (log_dir.h), backed up
// online (crash-consistent per partition: the checkpoints first, hard links of
// the segments below the high watermark, copies of the rest) or offline (the
// broker stopped, every file linked, started again once stored and back in
// the ISR of its partitions), restored by swapping the log dirs with the
// broker stopped (the old ones kept), and checked through the broker itself
// (broker.h). The replicas of a partition on several brokers are stored
// once: segments are cut between record batches (common/repo/chunker.h,
// profile `kafka`) and every broker's agent finds what the others stored.
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/driver.h"
#include "agent/drivers/kafka/broker.h"
#include "agent/drivers/kafka/config.h"
#include "agent/drivers/kafka/log_dir.h"

namespace cairn::agent::kafka {

class KafkaDriver : public Driver {
 public:
  KafkaDriver(std::string component, Settings settings);

  std::string name() const override { return "kafka"; }
  DriverCaps capabilities() const override;
  bool has_restore_target(const std::string& target_name) const override {
    (void)target_name;
    return false;
  }
  std::vector<std::string> config_warnings() const override;
  std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task& task) const override;
  void snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) override;
  std::vector<cairn::v1::Reason> check_snapshot(const repo::Snapshot& snap) const override;
  DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) override;
  // A whole restore on this member that the agent was killed in: the rollback step, as that restore.
  std::string recover_interrupted_restore(const InPlaceRestore& r) override { return roll_back_by_step(*this, r); }
  DriverResult restore_commit(TaskContext& ctx, const RestoreSpec& spec) override;
  std::vector<cairn::v1::Reason> restore_preflight(TaskContext& ctx, const RestoreSpec& spec) override;
  // 1 for a KRaft node with the controller role (process.roles in
  // config_file), stopped after the broker-only nodes; 0 otherwise.
  int stop_wave() const override;
  // The brokers keep their cluster.id (and a KRaft node its quorum) across a
  // restore: one rolled back beside brokers still on the restored logs would
  // mix the two metadata logs (a fatal fault at its next start).
  bool rollback_needs_halt() const override { return true; }
  std::vector<cairn::v1::Reason> verify(TaskContext& ctx, const nlohmann::json& recorded) override;

  const Settings& settings() const { return settings_; }
  std::vector<std::string> data_paths() const override {
    std::vector<std::string> out = settings_.log_dirs;
    out.push_back(settings_.config_file);
    return out;
  }
  // A restore swaps the log dirs only (the configuration stays).
  std::vector<std::string> set_aside_paths() const override { return settings_.log_dirs; }
  std::vector<std::string> restore_record_files() const override { return {settings_.staging_dir + "/restore-state.json"}; }

 private:
  // meta.properties of the log dirs, which must agree. Throws cairn::Error.
  MetaProperties identity() const;
  std::string kafka_version() const;
  bool answers() const;
  // Stops the broker and waits until it no longer answers; a stop that fails
  // while the broker does not answer anyway is no failure. A broker not
  // stopped after the service's kill_after is killed: returns what was
  // killed and why ("" when it stopped by itself).
  std::string stop_broker(TaskContext& ctx) const;
  // Starts it and waits until it answers as node_id and is in the ISR of
  // every partition it holds a replica of. Throws cairn::Error saying which
  // partitions are missing it.
  void start_broker(TaskContext& ctx, const std::string& node_id) const;
  // start_again: called when the broker has not answered for 30 s (it exited while starting).
  void wait_in_isr(TaskContext& ctx, const std::string& node_id, const std::function<void()>& start_again = {}) const;
  std::vector<cairn::v1::Reason> backup_checks(bool offline) const;
  std::vector<cairn::v1::Reason> verify_once(const nlohmann::json& recorded) const;

  struct Prepared {
    std::string snapshot_id, cluster_id, node_id;  // the snapshot's broker
    std::string stamp, staging;                    // the snapshot read into <staging_dir>/restore-<stamp>
  };
  std::optional<Prepared> prepare(TaskContext& ctx, const RestoreSpec& spec, DriverResult& res) const;
  void swap_all(TaskContext& ctx, const Prepared& p, std::vector<std::pair<std::string, std::string>>& swapped) const;
  std::string undo_swaps(TaskContext& ctx, std::vector<std::pair<std::string, std::string>>& swapped, const std::string& stamp) const;

  std::string component_;
  Settings settings_;
  BrokerClient client_;
  // Why the last backup preflight could not ask the broker at `bootstrap`
  // ("" when it answered): an online backup goes on without it, and says so.
  mutable std::string broker_error_;
};

}  // namespace cairn::agent::kafka
