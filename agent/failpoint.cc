#include "agent/failpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

namespace cairn::agent {

std::string failpoints_file() {
  const char* f = std::getenv("CAIRN_FAILPOINTS_FILE");
  return f && *f ? std::string(f) : std::string();
}

FailAction failpoint(const std::string& point) {
  static std::mutex mu;
  const std::string file = failpoints_file();
  if (file.empty()) return FailAction::none;
  std::lock_guard<std::mutex> lock(mu);
  std::ifstream in(file);
  if (!in) return FailAction::none;
  std::vector<std::string> keep;
  std::string line, action;
  bool hit = false;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string p, a;
    words >> p >> a;
    if (!hit && p == point) {
      hit = true;
      action = a;
      continue;  // fires once
    }
    if (!line.empty()) keep.push_back(line);
  }
  in.close();
  if (!hit) return FailAction::none;
  {
    // Rewritten before acting: a killed agent must not fire it again after its restart.
    std::string tmp = file + ".tmp";
    std::ofstream out(tmp, std::ios::trunc);
    for (const auto& k : keep) out << k << "\n";
    out.close();
    int fd = ::open(tmp.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)::fsync(fd);
      ::close(fd);
    }
    (void)::rename(tmp.c_str(), file.c_str());
  }
  spdlog::warn("failpoint '{}' fires: {}", point, action);
  spdlog::default_logger()->flush();
  if (action == "kill") {
    ::kill(::getpid(), SIGKILL);
    ::pause();
  }
  if (action == "freeze") {
    // To this thread (tgkill), so that it stops before it returns to the
    // code after the failpoint: a SIGSTOP sent to the process is taken by
    // another thread first, and this one ran on meanwhile (an OpenSearch
    // restore sent its next request after "freezing" at the failpoint
    // before it). The whole process stops either way.
    ::raise(SIGSTOP);
    return FailAction::none;  // continued by SIGCONT: the step goes on
  }
  if (action == "fail") return FailAction::fail;
  spdlog::error("failpoint '{}': unknown action '{}' (kill, fail or freeze)", point, action);
  return FailAction::none;
}

}  // namespace cairn::agent
