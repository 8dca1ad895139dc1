#pragma once
// The haproxy driver: the configuration (the files and directories given to
// haproxy -f) and every file it references, plus the runtime state kept only
// in the running process (servers' weights and forced states, stick tables,
// map entries changed at runtime), read over the stats socket. A restore puts
// the files back only after `haproxy -c` accepted the restored configuration,
// reloads the service and sets the runtime state back (README.md).
#include <chrono>
#include <string>
#include <vector>

#include "agent/driver.h"
#include "agent/drivers/haproxy/cfg_parser.h"
#include "agent/drivers/haproxy/config.h"
#include "agent/drivers/haproxy/runtime.h"

namespace cairn::agent::haproxy {

// What a backup of the configuration holds.
struct FileSet {
  std::vector<std::string> present;        // paths to add (files or directories), no one below another
  std::vector<cairn::v1::Reason> missing;  // referenced and absent: the backup is partial
  std::vector<std::string> warnings;       // what the reader could not follow (environment variables)
  ParseResult parsed;
};

class HaproxyDriver : public Driver {
 public:
  HaproxyDriver(std::string component, Settings settings);

  std::string name() const override { return "haproxy"; }
  DriverCaps capabilities() const override;
  bool has_restore_target(const std::string&) const override { return false; }
  std::vector<std::string> config_warnings() const override;
  std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task& task) const override;
  std::vector<cairn::v1::Reason> check_snapshot(const repo::Snapshot& snap) const override;
  void snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) override;
  DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) override;
  // An agent killed while the restored files were going in or before its end:
  // the previous files back, haproxy reloaded on them.
  std::string recover_interrupted_restore(const InPlaceRestore& r) override;
  std::vector<cairn::v1::Reason> verify(TaskContext& ctx, const nlohmann::json& recorded) override;

  const Settings& settings() const { return settings_; }
  std::vector<std::string> data_paths() const override {
    std::vector<std::string> out = settings_.config;
    out.insert(out.end(), settings_.extra_files.begin(), settings_.extra_files.end());
    return out;
  }
  // The live configuration's files, read from read_root ("" = this host).
  FileSet files(const std::string& read_root = {}) const;
  // Where the runtime state is stored in a snapshot: a fixed path, so the
  // next backup finds its parent's entry.
  std::string runtime_snapshot_path() const;
  // One command over the stats socket; throws cairn::Error (io) naming the socket.
  std::string cli(const std::string& command, std::chrono::milliseconds timeout = std::chrono::seconds(10)) const;
  // The runtime state now.
  RuntimeState read_runtime() const;
  // The restore once the snapshot is extracted to <stage>/root (the
  // snapshot's paths below it): check, swap, reload, runtime state. `label`
  // names the source in messages ("snapshot '1a2b3c4d'").
  DriverResult restore_staged(TaskContext& ctx, const std::string& stage, const std::string& label, cairn::v1::RestoreWriteMode write_mode);

 private:
  std::string component_;
  Settings settings_;
};

// Compares the servers' forced state and weight now with what was recorded
// (the snapshot's metadata "server_state": [[backend, server, state, weight]]).
std::vector<cairn::v1::Reason> compare_servers(const nlohmann::json& recorded, const std::vector<ServerState>& now);

}  // namespace cairn::agent::haproxy
