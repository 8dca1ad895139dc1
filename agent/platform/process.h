#pragma once
// Runs a program with a deadline and captured output: the one way cairn's
// drivers start `etcdctl`, `haproxy -c`, a declared service command. The child
// gets its own process group; at the deadline (or on cancel) the whole group is
// sent SIGTERM, then SIGKILL after `kill_grace`. The child never outlives the
// call. Nothing is run through a shell; argv is used as given and is never
// logged with secrets (pass those through `stdin_data` or a file).
#include <atomic>
#include <chrono>
#include <string>
#include <vector>

namespace cairn::agent::platform {

struct ProcessSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in PATH when it has no '/'
  std::vector<std::string> env;   // "KEY=VALUE" added to (or replacing in) the agent's environment
  std::string cwd;                // empty: the agent's
  std::string stdin_data;         // written to the child's stdin, then closed
  std::chrono::milliseconds timeout{60'000};
  std::chrono::milliseconds kill_grace{5'000};
  size_t max_output = 1 << 20;  // per stream; the rest is dropped and `truncated` set
  const std::atomic<bool>* cancel = nullptr;
};

struct ProcessResult {
  int exit_code = -1;      // -1 when killed by a signal
  int signal = 0;          // the signal that ended it, 0 when it exited
  bool timed_out = false;  // killed at the deadline
  bool cancelled = false;  // killed because *cancel became true
  bool truncated = false;
  std::chrono::milliseconds timeout{0};  // the deadline it ran under (for describe())
  std::string out, err;
  bool ok() const { return exit_code == 0 && !timed_out && !cancelled; }
  // "exited with status 3: <last line of stderr>", "killed after 60 s (timeout)", ...
  std::string describe() const;
};

// Throws cairn::Error (Errc::not_found, Errc::io) only when the program cannot
// be started (not found, not executable): the message names argv[0] and why.
// The program's own exit ends the call; a background process it left running
// (a service a start command launched) is not killed, and its hold on the
// output pipes is waited for at most one second more: such a command should
// redirect the background process's output.
ProcessResult run_process(const ProcessSpec& spec);

// Whether run_process could start `prog`: a path with a '/' that is
// executable, or a bare name found executable on the agent's PATH.
bool find_program(const std::string& prog);
// The same search, giving the path found ("" when none): for a caller that
// must exec it itself (a drill's sandbox forks and execs by path).
std::string program_path(const std::string& prog);

}  // namespace cairn::agent::platform
