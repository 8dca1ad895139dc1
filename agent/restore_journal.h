#pragma once
// An in-place restore's record on the agent's own disk (docs/protocol.md §
// An agent stopped during an in-place restore). A driver that stops a
// service and swaps its data (postgresql, prometheus) writes it before it
// stops the service, rewrites it with every move it is about to make before
// the first rename, and removes it when the restore ends, whichever way.
// SIGKILL, a crash or a power cut between leaves it: at its next start the
// agent stops the service, puts the previous data back, removes the
// restore's scratch directories, starts the service again, and reports what
// it did on the restore's task (the controller had ended it `agent_lost`).
#include <functional>
#include <string>
#include <vector>

#include "agent/restore_record.h"  // the record of a restore in steps, on a member's disk

namespace cairn::v1 {
class TaskResult;
}

namespace cairn::agent {

class Driver;
struct TaskContext;

struct InPlaceRestore {
  std::string component, restore_id, task_id, plan_id;
  std::string stamp;  // the suffix of every name the restore made (<path>.cairn-old-<stamp>, ...)
  enum class State { stopping, swapping };
  State state = State::stopping;
  struct Move {
    std::string path;   // what the restore replaces
    std::string aside;  // where its previous contents go; "" when there were none
  };
  std::vector<Move> moves;           // in the order they are made
  std::vector<std::string> scratch;  // directories the restore made that go with it (staging, fetched WAL)
};

// A record for the restore task ctx runs (component, restore, task, plan),
// its names suffixed with stamp.
InPlaceRestore in_place_restore(const TaskContext& ctx, std::string stamp, InPlaceRestore::State state = InPlaceRestore::State::stopping);

class RestoreJournal {
 public:
  explicit RestoreJournal(std::string dir) : dir_(std::move(dir)) {}
  const std::string& dir() const { return dir_; }
  // Written whole (atomic rename, fsynced) or not at all; throws cairn::Error.
  void write(const InPlaceRestore& r) const;
  // Removes the component's record; returns "" or why it could not.
  std::string clear(const std::string& component) const;
  // Every record left; one that cannot be read is named in *problems.
  std::vector<InPlaceRestore> load(std::vector<std::string>* problems) const;

 private:
  std::string path_of(const std::string& component) const;
  std::string dir_;
};

// Puts back what r's moves did, the last first: whatever is at a path now
// (the restored copy) goes to <path>.cairn-failed-<stamp>, then `aside` back
// to path. A move that never happened (aside missing, path in place) is left
// as it is, so this is safe to run again. Returns one line per path it could
// not put back ("" when all are).
std::string put_back_moves(const InPlaceRestore& r);
// Removes r's scratch directories; returns what could not be removed.
std::string remove_scratch(const InPlaceRestore& r);

// What a driver holds through its restore: write() at each state, keep() when
// a failure could not put everything back (the next start tries again); the
// record goes when the guard does, unless kept. Without a journal (unit
// tests of a driver alone) it does nothing.
class JournalGuard {
 public:
  JournalGuard(const RestoreJournal* journal, InPlaceRestore r) : journal_(journal), r_(std::move(r)) {}
  JournalGuard(const JournalGuard&) = delete;
  JournalGuard& operator=(const JournalGuard&) = delete;
  ~JournalGuard();
  InPlaceRestore& record() { return r_; }
  void write();  // throws cairn::Error: the caller changes nothing then
  void keep() { keep_ = true; }

 private:
  const RestoreJournal* journal_;
  InPlaceRestore r_;
  bool written_ = false, keep_ = false;
};

namespace platform {
class Service;
}

// The undo of a driver that stops a service around its swap, at the agent's
// start: the service stopped (a failed stop is accepted only when
// stopped_anyway() says nothing runs on the data), the moves put back, the
// scratch removed, the service started. `server` names it in the account
// returned; throws cairn::Error (Errc::io) saying what is left.
std::string undo_around_service(const InPlaceRestore& r, const platform::Service& service, const std::string& server,
                                const std::string& data_dir, const std::function<bool()>& stopped_anyway);

// The undo of a driver restored in steps (etcd, ZooKeeper, Kafka), for a
// whole restore on one member: its own rollback step, run as that restore
// (r.restore_id), which stops the service, puts back what that restore's
// own record says it moved, and starts the service. Throws cairn::Error with
// the step's reasons when it does not succeed.
std::string roll_back_by_step(Driver& driver, const InPlaceRestore& r);

// At the agent's start: every record left is handed to its component's
// driver (driver_of: null when the component is no longer declared), and
// one result per record is returned for the restore's task: failed, saying
// the agent stopped during the restore and what was done about it. A record
// put right is removed; one that could not be is kept for the next start.
std::vector<cairn::v1::TaskResult> recover_in_place_restores(const RestoreJournal& journal,
                                                             const std::function<Driver*(const std::string&)>& driver_of);

}  // namespace cairn::agent
