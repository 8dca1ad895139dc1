#pragma once
// The driver contract: what a component's driver does for the task runner.
// Callers (task runner, tests) see only this header; a driver lives in its own
// folder under agent/drivers/<name>/ and joins the explicit list in
// agent/drivers/registry.cc. A driver reads and writes only what its own
// settings declare: the plan picks a component, never a path.
#include <atomic>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/util/terminal_text.h"
#include "proto/cairn.pb.h"

namespace cairn::repo {
class Repository;
}

namespace cairn::agent {

// What a driver can do, as data: the runner reads this instead of asking
// which driver it is.
struct DriverCaps {
  bool backup = true;
  bool restore = true;
  bool restore_to_alternate = false;  // has declared alternative restore targets
  std::vector<std::string> restore_targets;  // their names, reported to the controller
  bool needs_service_stop = false;    // a consistent copy needs the service stopped
  bool safety_backup = true;          // can back up the current state before a restore
};

struct WorkProgress {
  cairn::v1::Phase phase = cairn::v1::PHASE_UNSPECIFIED;
  uint64_t bytes_done = 0, bytes_total = 0;  // total 0 = unknown
  uint64_t files_done = 0, files_total = 0;
  std::string current;
};

// What the runner hands a driver for one task.
struct TaskContext {
  std::string plan_id;
  std::string task_id;
  std::string backup_set_id;
  std::string component;
  repo::Repository* repo = nullptr;  // opened, index loaded, shared lock held
  // Throws when that lock may no longer be held (its refreshes failed); call
  // before committing a snapshot. Empty in tests without a lock.
  std::function<void()> check_lock;
  std::function<void(const WorkProgress&)> progress;
  const std::atomic<bool>* cancel = nullptr;
  // The parent of the backup this task writes (a restore: of its safety
  // backup): the one the plan names, already found among the snapshots this
  // agent wrote itself. Empty: none, every file is read. A driver never
  // searches the repository for a parent (docs/protocol.md § Task).
  std::string parent_snapshot_id;
  // Tells the operator something that is no failure (a parent not used).
  std::function<void(const std::string&)> note;
};

struct RestoreSpec {
  std::string snapshot_id;
  std::string target_name;  // empty: in place; otherwise a declared target
  bool skip_safety_backup = false;
  std::string safety_task_id;  // recorded in the safety snapshot's tags
  // Mirror: the target ends as in the snapshot (entries added since are
  // removed; the safety backup holds them). Merge: other entries are left.
  cairn::v1::RestoreWriteMode write_mode = cairn::v1::RESTORE_WRITE_MODE_MIRROR;
};

struct DriverResult {
  cairn::v1::TaskOutcome outcome = cairn::v1::TASK_OUTCOME_FAILED;
  std::vector<cairn::v1::Reason> reasons;  // every reason; empty only when succeeded
  std::string snapshot_id;
  std::string manifest_digest;
  std::string safety_snapshot_id;  // restore: the snapshot of what was there before
  // restore with a safety backup asked for: SUCCEEDED when taken (or nothing
  // existed to save), FAILED when it failed; UNSPECIFIED when it did not run.
  cairn::v1::TaskOutcome safety_outcome = cairn::v1::TASK_OUTCOME_UNSPECIFIED;
  std::string safety_detail;
  uint64_t bytes = 0, files = 0;
};

class Driver {
 public:
  virtual ~Driver() = default;
  virtual std::string name() const = 0;
  virtual DriverCaps capabilities() const = 0;
  // True when target_name names a restore target this component declares.
  virtual bool has_restore_target(const std::string& target_name) const = 0;
  // What `cairn-agent --check-config` warns about: declared things that do not
  // exist now (they may appear later, so these are warnings, not errors).
  virtual std::vector<std::string> config_warnings() const { return {}; }
  // Read-only checks before a task starts. Empty when the task may run.
  virtual std::vector<cairn::v1::Reason> preflight(cairn::v1::TaskKind kind, const std::string& target_name) const = 0;
  // Neither throws for per-item problems (they become reasons); a thrown
  // cairn::Error is a failure of the whole task, mapped by the runner.
  virtual DriverResult backup(TaskContext& ctx) = 0;
  virtual DriverResult restore(TaskContext& ctx, const RestoreSpec& spec) = 0;
};

// Builds a Reason in one line.
inline cairn::v1::Reason make_reason(cairn::v1::ErrorCode code, const std::string& detail, const std::string& item = {}) {
  cairn::v1::Reason r;
  r.set_code(code);
  // File names are bytes; the wire's strings must be UTF-8 or the controller
  // cannot parse the whole result (docs/protocol.md § Messages).
  r.set_detail(utf8_or_escaped(detail));
  r.set_item(utf8_or_escaped(item));
  return r;
}

}  // namespace cairn::agent
