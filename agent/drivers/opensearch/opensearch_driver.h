#pragma once
// The opensearch driver (OpenSearch 1.x/2.x, Elasticsearch 7.x): the
// server's own snapshot into a shared filesystem repository (snapshot_path),
// whose write-once files are hard-linked into a per-run tree and stored at
// the stable path snapshot_path; restored by putting the stored repository
// back beside it, registering it read-only and calling _restore. See README.md.
#include <string>
#include <vector>

#include "agent/driver.h"
#include "agent/drivers/opensearch/api.h"
#include "agent/drivers/opensearch/config.h"

namespace cairn::agent::opensearch {

// What a restore does through the API, written into its staging directory
// before the first index is deleted: the agent's next start applies it again
// when the agent was killed in between (recover_interrupted_restore).
struct RestorePlan {
  std::string repository;            // the read-only repository registered on the staged tree
  std::string location;              // its location
  std::string snapshot;              // the snapshot's name in it
  std::vector<std::string> remove;   // indices deleted first (mirror: replaced or not in the snapshot)
  std::vector<std::string> restore;  // indices restored
  bool global_state = false;
  // The safety backup's snapshot in the live repository (taken by this
  // restore's task just before): what an interrupted restore puts back; ""
  // when none was taken (then the next start finishes the restore).
  std::string rollback;
  nlohmann::json to_json() const;
  static RestorePlan from_json(const nlohmann::json& j);
};

class OpenSearchDriver : public Driver {
 public:
  OpenSearchDriver(std::string component, Settings settings);

  std::string name() const override { return "opensearch"; }
  DriverCaps capabilities() const override;
  bool has_restore_target(const std::string&) const override { return false; }
  std::vector<std::string> config_warnings() const override;
  std::vector<std::string> data_paths() const override { return {settings_.snapshot_path}; }
  std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task& task) const override;
  void snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) override;
  std::vector<cairn::v1::Reason> check_snapshot(const repo::Snapshot& snap) const override;
  std::vector<cairn::v1::Reason> restore_preflight(TaskContext& ctx, const RestoreSpec& spec) override;
  DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) override;
  std::string recover_interrupted_restore(const InPlaceRestore& r) override;
  std::vector<cairn::v1::Reason> verify(TaskContext& ctx, const nlohmann::json& recorded) override;

  const Settings& settings() const { return settings_; }

 private:
  // Cluster answers, not red, repository registered (or registered now) at
  // snapshot_path and verified on every node.
  std::vector<cairn::v1::Reason> backup_checks() const;
  // The reasons a restore of a snapshot recording `meta` onto this cluster is refused.
  std::vector<cairn::v1::Reason> identity_checks(const nlohmann::json& meta, bool force_identity) const;
  // Deletes plan.remove (and plan.restore when recovering), restores, waits
  // for health; throws cairn::Error.
  void apply_plan(const RestorePlan& plan, bool recovering, const std::atomic<bool>* cancel) const;
  // Every index of `names` green (yellow on a one-node cluster) within the timeout; else why not.
  std::string wait_healthy(const std::vector<std::string>& names, const std::atomic<bool>* cancel) const;
  // Per index what the cluster holds now: {uuid, docs, primaries, replicas, health, status}.
  nlohmann::json index_stats(bool refresh) const;
  // Reasons for each recorded index missing or short of documents or shards.
  std::vector<cairn::v1::Reason> check_counts(const nlohmann::json& recorded_indices, const std::vector<std::string>& only) const;

  std::string component_;
  Settings settings_;
  Api api_;
};

}  // namespace cairn::agent::opensearch
