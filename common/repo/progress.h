#pragma once
// Progress events shared by the CLI (bar or JSON lines) and library callers (the
// agent forwards them to the controller).
#include <cstdint>
#include <functional>
#include <string>

namespace cairn::repo {

struct Progress {
  std::string phase;  // "scan", "backup", "finalize", "restore", "check", "done"
  uint64_t files_done = 0, files_total = 0;
  uint64_t bytes_done = 0, bytes_total = 0;
  uint64_t bytes_new = 0;  // backup: plaintext bytes not already in the repository
  uint64_t errors = 0;
  bool totals_known = false;  // false while the scan is still counting
  double elapsed_s = 0;
  std::string current;  // the file being worked on
};

using ProgressFn = std::function<void(const Progress&)>;

}  // namespace cairn::repo
