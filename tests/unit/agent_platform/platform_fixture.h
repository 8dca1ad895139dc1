#pragma once
// Shared pieces of the agent/platform tests: a temp dir, liveness of a pid,
// and a helper process started in the background and killed by its pid.
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tests/unit/agent/agent_fixture.h"

namespace cairn::agent::platform::test {

// The agent tests' temporary directory (removed with everything in it).
using cairn::agent::test::TempDir;

inline void write_text(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// A process exists and is not a zombie (a killed orphan may wait as a zombie
// for a container's init to reap it).
inline bool alive(pid_t pid) {
  if (pid <= 0 || ::kill(pid, 0) != 0) return false;
  std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
  auto paren = stat.rfind(')');
  return paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] != 'Z';
}

// Waits up to `within` for a pid to be gone.
inline bool gone_within(pid_t pid, std::chrono::milliseconds within) {
  auto end = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < end) {
    if (!alive(pid)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return !alive(pid);
}

// A helper server (python3 script) run for the length of a test.
class Background {
 public:
  explicit Background(std::vector<std::string> argv) {
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    if (::posix_spawnp(&pid_, a[0], nullptr, nullptr, a.data(), environ) != 0) throw std::runtime_error("cannot start " + argv[0]);
  }
  ~Background() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
};

// Waits for a file that a helper writes once it listens (its port).
inline std::string wait_for_file(const std::string& path, std::chrono::milliseconds within = std::chrono::seconds(15)) {
  auto end = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < end) {
    std::string s = read_text(path);
    if (!s.empty() && s.back() == '\n') return s.substr(0, s.size() - 1);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  throw std::runtime_error("the helper did not write " + path);
}

}  // namespace cairn::agent::platform::test
