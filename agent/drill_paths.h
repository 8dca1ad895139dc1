#pragma once
// What a drill may touch of a restored tree (docs/drills.md § The sandbox):
// the tree and its metadata are the backup's, which any node holding the
// repository's password could have written, so a path it records and the
// links it holds are checked before the agent (root) or a server acts on
// them.
#include <optional>
#include <string>
#include <vector>

namespace cairn::agent {

// Where a path a snapshot recorded (a data directory, a log dir, a
// configuration file) lies in the sandbox `root`: root + recorded, when
// `recorded` is absolute with no ".." component and no component of it below
// `root` is a symbolic link. nullopt otherwise, `why` saying which.
std::optional<std::string> sandboxed_path(const std::string& root, const std::string& recorded, std::string* why);

// The symbolic links under `root` (not followed) that lead out of it,
// resolved as the kernel would (every link on the way followed; a missing
// rest taken as written): "path -> target", paths relative to root, at most
// `max`. A link loop counts as leading out.
std::vector<std::string> links_out_of(const std::string& root, size_t max = 10);

}  // namespace cairn::agent
