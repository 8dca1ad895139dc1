#pragma once
// The controller's data directory (docs/configuration.md § Data directory):
// private to the controller's user, and held by one controller at a time.
//
//   auto held = DataDir::take("/var/lib/cairn");  // throws when another holds it
//
// take() creates the directory 0700, or tightens an existing one that group
// or others can reach (a warning naming it; an error when it cannot), then
// takes an exclusive flock on <data_dir>/controller.lock and writes the
// holder into it: "pid <n>\nhost <name>\nsince <ISO 8601 UTC>\n". The lock
// ends with the process (or the DataDir), so a crash leaves nothing to clean.
#include <string>

#include "common/util/fs.h"

namespace cairn::controller {

inline constexpr const char* kDataDirLockFile = "controller.lock";

class DataDir {
 public:
  // Throws cairn::Error(locked) naming the holder when another process holds
  // the directory, cairn::Error(io) when it cannot be created, tightened or
  // locked.
  static DataDir take(const std::string& path);

  const std::string& path() const { return path_; }

 private:
  DataDir(std::string path, Fd lock) : path_(std::move(path)), lock_(std::move(lock)) {}
  std::string path_;
  Fd lock_;
};

// Makes dir private to its owner (mode 0700) when group or others have any
// access; logs a warning naming it. Throws cairn::Error(io) when it cannot.
void tighten_dir(const std::string& dir);

}  // namespace cairn::controller
