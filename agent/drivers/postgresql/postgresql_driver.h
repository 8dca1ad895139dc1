#pragma once
// The postgresql driver (docs/postgresql.md): physical base backups through
// the non-exclusive backup API while the server runs, continuous WAL
// archiving through the agent's archive socket (wal_archive.h), and
// point-in-time recovery from a base backup and the archived WAL.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "agent/driver.h"
#include "agent/drivers/postgresql/config.h"
#include "agent/drivers/postgresql/wal_archive.h"

namespace cairn::agent::postgresql {

class PostgresqlDriver : public Driver {
 public:
  PostgresqlDriver(std::string component, Settings settings);
  ~PostgresqlDriver() override;

  std::string name() const override { return "postgresql"; }
  DriverCaps capabilities() const override;
  // The target of a logical dump's restore under other names (logical_restore_as).
  bool has_restore_target(const std::string& name) const override {
    return !settings_.logical_restore_as.empty() && name == settings_.restore_to_name;
  }
  std::vector<std::string> config_warnings() const override;
  std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task& task) const override;
  void snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) override;
  std::vector<cairn::v1::Reason> check_snapshot(const repo::Snapshot& snap) const override;
  DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) override;
  // A physical restore's recovery planned before the safety backup: the
  // target on the timeline it names, and the archive whole up to it.
  std::vector<cairn::v1::Reason> restore_preflight(TaskContext& ctx, const RestoreSpec& spec) override;
  std::vector<cairn::v1::Reason> verify(TaskContext& ctx, const nlohmann::json& recorded) override;
  void start_background(BackgroundContext ctx) override;
  void stop_background() override;
  void report_background(cairn::v1::Heartbeat& hb) const override;
  std::string recover_interrupted_restore(const InPlaceRestore& r) override;

  const Settings& settings() const { return settings_; }
  std::vector<std::string> data_paths() const override { return {settings_.data_dir, settings_.dump_dir}; }

 private:
  // Why a backup cannot be taken now (server down, another data directory,
  // WAL not archived through this agent); empty when it can.
  std::vector<cairn::v1::Reason> backup_checks(bool logical) const;
  // Logical mode: pg_dumpall --globals-only and pg_dump -Fc of every database.
  void dump(TaskContext& ctx, SnapshotSink& sink);
  // With `as` (logical_restore_as): only those databases, each into a new
  // database of its new name; roles and every other database left alone.
  DriverResult restore_dumps(TaskContext& ctx, const repo::Snapshot& snap, const std::map<std::string, std::string>* as = nullptr);
  // libpq's environment for the client programs; the password goes through a
  // 0600 passfile written in `dir`, never argv or the environment.
  std::vector<std::string> client_env(const std::string& dir) const;

  std::string component_;
  Settings settings_;
  mutable std::mutex archive_mu_;  // the session's thread reads, main starts and stops
  std::unique_ptr<WalArchive> archive_;
};

}  // namespace cairn::agent::postgresql
