#pragma once
// Words of a restore's outcome that the controller writes and cairnctl reads.

namespace cairn::plan {

// The detail of the reason an operator's cancel gives the rollback an ended
// restore owed a member (docs/protocol.md § A rollback owed to a member that
// was away): given up for good, it is never made again.
inline constexpr const char* kOwedRollbackGivenUp =
    "the rollback this member was owed is given up by the operator: its data is left as it is";

}  // namespace cairn::plan
