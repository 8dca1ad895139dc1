#pragma once
// Mirror after a restore: below each restored snapshot path, remove what the
// snapshot does not hold, so the target ends as the snapshot describes it.
// Every step is an openat/unlinkat relative to a directory opened with
// O_NOFOLLOW: a symbolic link is removed as a link, never followed, so the
// walk cannot leave the target. The target root and the snapshot roots
// themselves are never removed.
#include <atomic>
#include <cstdint>
#include <string>
#include <unordered_set>
#include <vector>

#include "common/repo/walk.h"

namespace cairn::agent::files {

// Directories nested deeper than this below a root are not entered; what lies
// there is reported, never removed blind. The repository's one depth limit:
// nothing deeper can be in a snapshot. One directory descriptor is held per
// level (the agent raises its descriptor limit at start).
inline constexpr size_t kMirrorMaxDepth = repo::kMaxTreeDepth;

struct MirrorProblem {
  std::string path;  // as in the snapshot, e.g. /srv/data/new.txt
  std::string reason;
};

struct MirrorResult {
  uint64_t removed = 0;  // entries removed: each file, link and directory once
  std::vector<MirrorProblem> problems;
};

struct MirrorSpec {
  std::string target;                                     // "" or "/" for in place, else the alternative target directory
  std::vector<std::string> roots;                         // the snapshot's paths (absolute)
  const std::unordered_set<std::string>* keep = nullptr;  // every path the snapshot holds
  std::vector<std::string> excludes;                      // the component's exclude globs: such entries are left alone
  const std::atomic<bool>* cancel = nullptr;
};

MirrorResult mirror_prune(const MirrorSpec& spec);

}  // namespace cairn::agent::files
