#pragma once
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/repo/repository.h"

namespace cairn::repo {

struct SnapshotError {
  std::string path;
  std::string reason;
};

// The start of an error's reason for a file that was read whole but changed
// while it was read (it is in the snapshot's tree, unlike an unreadable one).
inline constexpr std::string_view kChangedWhileRead = "changed while it was read";

// What a user reads about one entry of Snapshot::errors: a file that changed
// while it was read is stored (as read), one that could not be read is not.
inline std::string describe_item_error(const std::string& path, const std::string& reason) {
  if (reason.rfind(kChangedWhileRead, 0) == 0) return "stored '" + path + "' as it was read, but it " + reason;
  return "could not back up '" + path + "': " + reason;
}

struct Snapshot {
  std::string id;  // the file's name; not stored inside
  std::string time;
  int64_t time_unix = 0;
  std::string hostname, username;
  std::vector<std::string> paths;  // absolute source paths, or "stdin:NAME"
  std::vector<std::string> tags;
  BlobId tree{};
  std::string parent;
  bool partial = false;
  std::vector<SnapshotError> errors;
  nlohmann::json summary = nlohmann::json::object();
  std::string program;
  // The component's metadata a driver recorded (etcd revision and member
  // list, ZooKeeper zxid, versions): a JSON object, or null.
  nlohmann::json component;
};

nlohmann::json encode_snapshot(const Snapshot& s);
Snapshot decode_snapshot(const nlohmann::json& j, const std::string& id);
std::string save_snapshot(Repository& r, Snapshot& s);
Snapshot load_snapshot(Repository& r, const std::string& id);
// Every readable snapshot, oldest first. Unreadable ones are reported through bad.
std::vector<Snapshot> load_snapshots(Repository& r, std::vector<std::pair<std::string, std::string>>* bad = nullptr);
// True for a full snapshot id (64 hex digits): safe to name a file with.
bool is_snapshot_id(const std::string& s);
// Resolves "latest", a full id or a unique prefix of at least 4 hex digits.
// "latest" refuses (Errc::corrupt, naming each) while any snapshot is unreadable:
// a damaged one may be the newest, and an older one must not stand in for it
// silently. With skip_damaged it takes the newest readable one and reports what it
// passed over through skipped (id, why).
std::string resolve_snapshot(Repository& r, const std::string& ref, bool skip_damaged = false,
                             std::vector<std::pair<std::string, std::string>>* skipped = nullptr);
// The tags of the form key:value as a map (cairn's agents tag with set:,
// task:, component:, agent:...); a key's first value wins.
std::map<std::string, std::string> tag_values(const Snapshot& s);
// A snapshot's source key: host and sorted paths. Parents and retention groups use it.
std::string source_key(const Snapshot& s);
int64_t parse_rfc3339(const std::string& s);
// "YYYY-MM-DDTHH:MM:SSZ" (UTC, whole seconds) of unix seconds.
std::string format_rfc3339(int64_t unix_s);

}  // namespace cairn::repo
