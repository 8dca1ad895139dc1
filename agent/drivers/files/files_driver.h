#pragma once
// The files driver: declared paths and globs, backed up into the repository and
// restored to their place or to the declared alternative directory. A restore
// only accepts a snapshot of this component whose every path is covered by the
// declared paths, so no plan can make it write anywhere else.
#include <functional>
#include <string>
#include <vector>

#include "agent/driver.h"
#include "agent/drivers/files/config.h"
#include "common/repo/snapshot.h"

namespace cairn::agent::files {

class FilesDriver : public Driver {
 public:
  FilesDriver(std::string component, Settings settings);

  std::string name() const override { return "files"; }
  DriverCaps capabilities() const override;
  bool has_restore_target(const std::string& target_name) const override;
  std::vector<std::string> config_warnings() const override;
  std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task& task) const override;
  void snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) override;
  std::vector<cairn::v1::Reason> check_snapshot(const repo::Snapshot& snap) const override;
  DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) override;
  // An in-place restore interrupted by the agent's death (the runner's
  // record): undone by `undo`, which the agent sets at its start
  // (undo_from_safety_snapshot, task_runner.h); unset, it is refused.
  std::string recover_interrupted_restore(const InPlaceRestore& r) override;
  void set_undo(std::function<std::string(const InPlaceRestore&)> undo) { undo_ = std::move(undo); }
  // That undo's restore: `snapshot_id` (the safety snapshot) restored in
  // place, in mirror mode, below the paths of `only` alone (the interrupted
  // restore's snapshot's paths); a path of `only` it does not reach is a reason.
  DriverResult restore_paths(TaskContext& ctx, const std::string& snapshot_id, const std::vector<std::string>& only);

  const Settings& settings() const { return settings_; }
  std::vector<std::string> data_paths() const override {
    std::vector<std::string> out;
    for (const auto& p : settings_.paths) out.push_back(p.substr(0, p.find_first_of("*?[")));
    if (!settings_.restore_to.empty()) out.push_back(settings_.restore_to);
    return out;
  }
  // Declared paths with globs expanded; paths without glob characters are kept
  // as they are (a missing one is reported by the backup). Sorted, unique.
  std::vector<std::string> expand_paths() const;
  // True when a snapshot path lies at or below a declared path, or matches a
  // declared glob (per path component).
  bool covers(const std::string& snapshot_path) const;

 private:
  DriverResult restore_within(TaskContext& ctx, const RestoreSpec& spec, const std::vector<std::string>* only);
  std::string component_;
  Settings settings_;
  std::function<std::string(const InPlaceRestore&)> undo_;
};

}  // namespace cairn::agent::files
