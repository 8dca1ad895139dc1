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

// Header line plus one line per task, then every reason of every task.
void print_tasks(const google::protobuf::RepeatedPtrField<cairn::v1::TaskInfo>& tasks);

struct WaitView {
  std::string title;  // "backup set bs-..." or "restore rs-..."
  cairn::v1::SetState state = cairn::v1::SET_STATE_UNSPECIFIED;
  google::protobuf::RepeatedPtrField<cairn::v1::TaskInfo> tasks;
};

// Polls fetch() until the state is no longer running or cancel is set;
// returns the exit code (0 complete, 3 partial, 1 failed or interrupted).
int wait_for(const OpOptions& o, const std::function<WaitView()>& fetch, const std::atomic<bool>& cancel);

}  // namespace cairn::ctl
