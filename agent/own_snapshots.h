#pragma once
// The snapshots this agent wrote itself, per repository and component, kept in
// the state directory. A parent that a plan names is used only when it is
// among them: the controller's catalog chooses the parent, and this record
// makes sure that even a catalog that names another writer's snapshot (a bug,
// or a controller gone wrong) cannot make this agent reuse content it never
// read. A snapshot id names its content (docs/repository-format.md), so an id
// in the record cannot be replaced by someone else's snapshot.
//
// The file is small and bounded: the newest kKeepPerSource ids per
// (repository, component), at most kMaxSources sources; a file over
// kMaxFileBytes, or one that does not parse, is set aside with a warning and
// the record starts empty (the next backup of each component reads every file).
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace cairn::agent {

class OwnSnapshots {
 public:
  static constexpr size_t kKeepPerSource = 16;
  static constexpr size_t kMaxSources = 1024;
  static constexpr size_t kMaxFileBytes = 4 << 20;

  // path empty: kept in memory only (tests).
  explicit OwnSnapshots(std::string path);

  bool contains(const std::string& repository, const std::string& component, const std::string& snapshot_id) const;
  // Records a snapshot this agent has just written and saves the file
  // (atomically, fsynced). Returns an empty string, or why it could not be saved.
  std::string add(const std::string& repository, const std::string& component, const std::string& snapshot_id);

 private:
  using Source = std::pair<std::string, std::string>;  // repository path, component
  void load();
  std::string save() const;

  std::string path_;
  mutable std::mutex mu_;
  std::map<Source, std::vector<std::string>> ids_;  // oldest first
};

}  // namespace cairn::agent
