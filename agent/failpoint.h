#pragma once
// Fault injection for the restore fault matrix (docs/testing.md § The
// restore fault matrix). Off unless the agent's environment names a file in
// CAIRN_FAILPOINTS_FILE, which only whoever starts the agent (root, its
// systemd unit) can set; the agent logs a warning at start when it is set.
//
// The file holds one failpoint a line, "<point> <action>", e.g.
//   restore.data.after kill
// Points: restore.<step>.before (the step's task starts) and
// restore.<step>.after (its work is done, its result not yet sent), <step>
// one of preflight, stop, data, start, verify, commit, rollback, all.
// Actions: kill (SIGKILL to the agent itself), fail (the step fails with a
// reason naming the failpoint), freeze (SIGSTOP raised in the calling
// thread, which stops before it goes past the failpoint; the whole agent goes
// silent until someone sends SIGCONT). A failpoint fires once: its line is removed from the
// file before it acts, so a restarted agent does not fire it again.
#include <string>

namespace cairn::agent {

enum class FailAction { none, kill, fail, freeze };

// Reads CAIRN_FAILPOINTS_FILE (when set) for `point`; kill and freeze act
// here (kill does not return). Returns what the caller does: none, or fail.
FailAction failpoint(const std::string& point);

// The file named by CAIRN_FAILPOINTS_FILE, or "" when fault injection is off.
std::string failpoints_file();

}  // namespace cairn::agent
