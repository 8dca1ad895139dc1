#pragma once
// The prometheus driver: the server's own snapshot through its admin API
// (hard links of the persisted blocks plus the head written as a block),
// stored at the stable path <data_dir> with the declared configuration files;
// restored by stopping the service, moving the TSDB directory aside and
// putting the snapshot's blocks in its place. See README.md.
#include <string>
#include <vector>

#include "agent/driver.h"
#include "agent/drivers/prometheus/api.h"
#include "agent/drivers/prometheus/config.h"

namespace cairn::agent::prometheus {

class PrometheusDriver : public Driver {
 public:
  PrometheusDriver(std::string component, Settings settings);

  std::string name() const override { return "prometheus"; }
  DriverCaps capabilities() const override;
  bool has_restore_target(const std::string&) const override { return false; }
  std::vector<std::string> config_warnings() const override;
  std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task& task) const override;
  void snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) override;
  // A snapshot this component restores holds data_dir and nothing but
  // data_dir and the declared config files.
  std::vector<cairn::v1::Reason> check_snapshot(const repo::Snapshot& snap) const override;
  DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) override;
  std::string recover_interrupted_restore(const InPlaceRestore& r) override;
  std::vector<cairn::v1::Reason> verify(TaskContext& ctx, const nlohmann::json& recorded) override;

  const Settings& settings() const { return settings_; }
  std::vector<std::string> data_paths() const override {
    std::vector<std::string> out = settings_.config_files;
    out.push_back(settings_.data_dir);
    return out;
  }

 private:
  // The checks a snapshot needs: server ready, admin API on, the data dir the
  // server's, room for the head block.
  std::vector<cairn::v1::Reason> snapshot_checks() const;
  // Polls /-/ready until it answers 200 or the service timeout passes.
  bool wait_ready(const std::atomic<bool>* cancel, std::string* why) const;

  std::string component_;
  Settings settings_;
  Api api_;
};

}  // namespace cairn::agent::prometheus
