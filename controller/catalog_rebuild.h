#pragma once
// Rebuilding the controller's catalog from what its repositories hold, when
// the controller's disk is lost (`cairnctl catalog rebuild`,
// docs/operations.md § Catalog rebuild).
//
// Every snapshot an agent stores is tagged with its backup set, task,
// component, the agent's name and CURVE key, and for a backup its set's task
// count and policy (agent/task_runner.cc). From these the rebuild recreates:
//  - agents, as `pending`: the repository proves nothing about trust, so an
//    operator approves each again when it connects (same key, same identity);
//  - backup sets and their tasks and snapshots, with their outcome: a set is
//    `complete` only when it holds a snapshot for every task it had and none
//    is partial; `partial` otherwise, with the reason.
// Safety backups (taken before a restore) and snapshots without cairn's tags
// are left out and counted. Nothing in the repositories is changed.
#include <string>
#include <vector>

namespace cairn::controller {

struct RebuildSource {
  std::string name;           // the repository's name, as the agents declare it
  std::string path;
  std::string password_file;  // mode 0600
};

struct RebuildReport {
  size_t sets = 0, sets_complete = 0, snapshots = 0, agents = 0;
  size_t skipped_safety = 0, skipped_untagged = 0, skipped_unreadable = 0;
  std::vector<std::string> notes;  // one line each: what was left out and why
};

// Takes the data directory (no controller may run on it) and refuses, before
// reading anything, when a catalog is there. Throws cairn::Error.
RebuildReport rebuild_catalog(const std::string& data_dir, const std::vector<RebuildSource>& repositories);

}  // namespace cairn::controller
