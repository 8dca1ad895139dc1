#pragma once
// What in-place restores set aside beside a component's live data, and the
// rule that keeps it (docs/set-aside.md). Every driver names what it moves
// away the same way: beside each path a restore replaces
// (Driver::set_aside_paths), `<path>.cairn-old-<stamp>` (the data the restore
// replaced), `<path>.cairn-failed-<stamp>` (what was in place when a restore
// was rolled back) and `<path>.cairn-restore-<x>` (a restore's working
// directory). The keeper finds them by that name alone, whatever the driver,
// and records in a small ledger (<state_dir>/set-aside.json) which restore
// made each and whether the repository holds its data.
//
// The rule, per declared path: the newest `keep_last` copies and every copy
// younger than `keep_days` stay; so does a copy that is the only copy of data
// the repository does not hold (its restore's safety backup was skipped or
// empty, or is no longer in the repository, or the keeper does not know which
// restore made it), and everything of a restore still on record (a restore
// journal or a driver's restore record names it). A working directory of no
// restore on record is removed. A symlink is never followed nor removed.
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "proto/cairn.pb.h"

namespace cairn::agent {

class Driver;
class RestoreJournal;

struct SetAsideRule {
  uint32_t keep_last = 1;  // newest copies kept per declared path
  // Copies younger than this are kept too; 0 by default: every copy the
  // rule removes is one the repository holds (checked), so the disk copy is
  // only the faster way back, and one per path is enough for "undo the last
  // restore" while a burst of restores stays bounded.
  int64_t keep_seconds = 0;
};

struct AsideCopy {
  enum class Kind { old, failed, work };
  std::string component, data_path, path;
  Kind kind = Kind::old;
  uint64_t bytes = 0;
  int64_t at = 0;  // when the restore set it aside (unix seconds)
  std::string restore_id;
  // Where the repository holds the same data: the restore's safety snapshot
  // (old) or the snapshot it restored (failed); "" when nowhere.
  std::string held_by;
  bool recorded = false;  // the ledger knows which restore made it
  // Why it stays: "newest", "young", "only-copy", "in-progress",
  // "unrecorded"; "" when the rule removes it.
  std::string keep;
};
const char* kind_name(AsideCopy::Kind k);

// The copies found beside `paths` (the component's set_aside_paths), by name;
// symlinks and anything that is neither a directory nor a regular file are
// skipped. Bytes: the regular files below, each inode once, links not followed.
std::vector<AsideCopy> find_set_aside(const std::string& component, const std::vector<std::string>& paths);

// What one restore left in the ledger.
struct RestoreEntry {
  std::string component;
  std::string safety;    // the safety snapshot's id; "" when skipped or empty
  std::string restored;  // the snapshot restored ("" when the step did not say)
  int64_t at = 0;
};

// Tri-state: whether the component's repository holds snapshot `id` now;
// nullopt when that could not be found out.
using SnapshotCheck = std::function<std::optional<bool>(const std::string& component, const std::string& id)>;

// Applies the rule to one component's copies (ledger fields filled in):
// fills each copy's `keep`. Working dirs are marked "in-progress" while
// `busy` (a restore of the component is on record), else "".
void decide(std::vector<AsideCopy>& copies, const SetAsideRule& rule, int64_t now, const std::set<std::string>& restores_on_record,
            bool busy, const SnapshotCheck& held);

class SetAsideKeeper {
 public:
  struct Component {
    std::string name;
    Driver* driver = nullptr;
  };
  SetAsideKeeper(std::string ledger_path, SetAsideRule rule, std::vector<Component> components, const RestoreJournal* journal);
  void set_snapshot_check(SnapshotCheck c) { held_ = std::move(c); }

  // After a restore task of `restore_id` on `component` ended: what its step
  // said of its safety backup (took_safety: the step was the one that takes
  // it), the copies that appeared since are recorded as this restore's, then
  // the rule is applied to the component. Returns one line per copy removed.
  std::vector<std::string> after_restore(const std::string& component, const std::string& restore_id, bool took_safety,
                                         const std::string& safety_snapshot, const std::string& restored_snapshot);
  // At the agent's start (and on a timer): copies no ledger names are
  // recorded as unrecorded (kept), then the rule is applied to every component.
  std::vector<std::string> sweep();
  // The copies now, with why each stays ("" for none: it would be removed).
  std::vector<AsideCopy> list();
  // Removes copies by hand (cairn-agent --set-aside remove): `path` (one
  // copy) or every copy when empty. A copy the rule keeps as the only copy
  // or unrecorded needs force; one of a restore on record never goes.
  // Returns one line per copy (removed or why not); *failed set when any
  // was refused.
  std::vector<std::string> remove(const std::string& path, bool force, bool* failed);

  // The last report, for the heartbeat.
  void report(cairn::v1::Heartbeat& hb) const;

 private:
  std::vector<AsideCopy> scan(const Component& c, std::set<std::string>* on_record, bool* busy);
  std::vector<std::string> apply(const Component& c);
  void load();
  void save() const;
  void publish();

  std::string ledger_path_;
  SetAsideRule rule_;
  std::vector<Component> components_;
  const RestoreJournal* journal_;
  SnapshotCheck held_;
  std::map<std::string, RestoreEntry> restores_;                   // restore id -> entry
  std::map<std::string, std::pair<std::string, int64_t>> copies_;  // path -> (restore id, at); "" restore: unrecorded
  std::mutex mu_;                                                  // the ledger: the worker's sweeps and the start's
  mutable std::mutex report_mu_;
  std::map<std::string, std::vector<AsideCopy>> last_;  // component -> its copies as last seen
};

}  // namespace cairn::agent
