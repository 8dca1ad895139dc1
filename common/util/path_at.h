#pragma once
// Paths too long for one system call (PATH_MAX is 4,096 bytes; a tree 1,500
// directories deep with long names needs far more).
#include <string>

#include "common/util/fs.h"

namespace cairn {

// An O_PATH descriptor of a directory prefix, opened a part at a time, and the rest
// of the path relative to it, for the *at calls (fstatat, openat, readlinkat...).
// A short path: no descriptor (AT_FDCWD) and the path itself, at no cost.
// Directories on the way are followed as a path-based call follows them.
struct PathAt {
  Fd dir;
  std::string rest;
  int fd() const;
  // For calls without an *at form (lgetxattr...): through /proc/self/fd when split.
  std::string proc() const;
};
PathAt path_at(const std::string& path);

}  // namespace cairn
