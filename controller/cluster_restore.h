#pragma once
// The controller's side of a whole-cluster restore (docs/protocol.md § The
// cluster restore): from the tasks one restore made on one cluster's
// members, which step comes next and on which members, as the table below
// says. It decides only; Orders::next_cluster_step makes the tasks, signs
// their plans, holds the cluster's lock and fails the members that are not
// connected. Each row is a column of the restore fault matrix
// (tests/integration/test_restore_faults.py: a member failed, killed, frozen
// or cancelled at that step; docs/testing.md § The restore fault matrix).
//
// | step      | on disk after it (a member)                         | who undoes it                          | next: all ok / one failed |
// invariant |
// |-----------|-----------------------------------------------------|----------------------------------------|---------------------------|-----------|
// | preflight | as before; the safety backup taken                  | nothing to undo                        | stop / (restore failed)   |
// nothing is stopped until every member is connected and read its snapshot back | | stop      | as before, the service stopped | the
// controller: rollback (starts it)   | data / rollback           | stop goes out in waves (stop_wave), to every member or to none | | data
// | the member's record first, then the data swapped in | the controller: rollback (the record)  | start / rollback          | the record
// names this restore; only its steps act on it | | start     | the service running on the restored data            | the controller: halt?,
// rollback        | verify / halt or rollback | no member starts on its previous data beside restored ones (halt) | | verify    | same |
// the controller: halt?, rollback        | commit / halt or rollback | every member on the backup's data, or every member on its own | |
// commit    | the record removed; the data set aside kept         | nothing (the restore is complete)      | —                         | a
// record left by a failed commit is never acted on by another restore | | halt      | the service stopped again                           |
// the controller: rollback               | rollback (either way)     | waits for an absent member; made again when its plan expires | |
// rollback  | the previous data back, the service started         | — (retried: lost agent, 3 tries)       | —                         |
// acts on this restore's record only; waits for an absent member |
//
// A whole restore on one member (RESTORE_STEP_ALL) is undone by its agent at
// its next start instead (agent/restore_journal.h, docs/protocol.md § An
// agent stopped during an in-place restore).
#include <map>
#include <string>
#include <vector>

#include "controller/catalog/types.h"

namespace cairn::controller {

class ClusterRestore {
 public:
  // A rollback or halt whose agent was lost while it ran is made again, at
  // most this many tries a member.
  static constexpr int kTries = 3;

  // What follows the end of one task of the restore.
  struct Next {
    cairn::v1::RestoreStep step = cairn::v1::RESTORE_STEP_ALL;  // ALL: nothing to make now
    std::vector<catalog::Task> members;                         // each member's last task of the step that ended
    std::vector<std::string> later_waves;                       // agents of the stop waves after this one
  };

  // same: every task of the restore on the cluster's members (one component,
  // one cluster_id), as the catalog lists them.
  explicit ClusterRestore(std::vector<catalog::Task> same) : same_(std::move(same)) {}

  // After `ended` (as it ended; the catalog may not list that yet) the step
  // to make and its members: nothing until every member ended the step in
  // progress (a barrier), then the table's next step.
  Next after(const catalog::Task& ended) const;

  // The table's "next" columns: the step after `step` when every member
  // ended it as ok says; ALL when the restore is over. halt: the members'
  // preflight asked for the halt before a rollback.
  static cairn::v1::RestoreStep next_step(cairn::v1::RestoreStep step, bool ok, bool halt);
  // Steps in the order they run (commit, halt, rollback last); 0 for none.
  static int rank(cairn::v1::RestoreStep step);

 private:
  std::vector<catalog::Task> same_;
};

}  // namespace cairn::controller
