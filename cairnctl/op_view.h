#pragma once
// Showing backup sets and restores: a task table with every reason, and the
// --wait loop (a redrawn display on a terminal, lines otherwise).
#include <atomic>
#include <functional>
#include <string>

#include "cairnctl/op_client.h"
#include "proto/cairn.pb.h"

namespace cairn::ctl {

std::string set_state_name(cairn::v1::SetState s);
std::string task_state_name(cairn::v1::TaskState s);
std::string phase_name(cairn::v1::Phase p);

// Local time "YYYY-MM-DD HH:MM:SS", or "-" for 0.
std::string local_time(int64_t unix_s);

// For a task not yet taken by its agent while that agent is not connected:
// "queued: agent 'x' not connected since <time>, expires at <time>"; else "".
std::string queued_note(const cairn::v1::TaskInfo& t);

// After a create: one line naming the agents that are not connected (their
// tasks wait until they connect or their plan expires); nothing when all are.
void print_offline_agents(const google::protobuf::RepeatedPtrField<cairn::v1::TaskInfo>& tasks);

// Header line plus one line per task, then every reason of every task.
void print_tasks(const google::protobuf::RepeatedPtrField<cairn::v1::TaskInfo>& tasks);

struct WaitView {
  std::string title;  // "backup set bs-..." or "restore rs-..."
  cairn::v1::SetState state = cairn::v1::SET_STATE_UNSPECIFIED;
  google::protobuf::RepeatedPtrField<cairn::v1::TaskInfo> tasks;
};

// The --wait view of a restore (op_restore.cc); `backup watch rs-...` uses it.
int watch_restore(const OpOptions& o, const std::string& id, const std::atomic<bool>& cancel);

// Polls fetch() until the state is no longer running or cancel is set;
// returns the exit code (0 complete, 3 partial, 1 failed or interrupted).
int wait_for(const OpOptions& o, const std::function<WaitView()>& fetch, const std::atomic<bool>& cancel);

}  // namespace cairn::ctl
