#pragma once
// Names of wire error codes for logs, audit events and JSON output.
#include <string>

#include "proto/cairn.pb.h"

namespace cairn::proto {

// Lowercase name without the prefix, e.g. "bad_signature"; a code this build
// does not know (from a newer peer) becomes "code_<number>".
std::string error_code_name(cairn::v1::ErrorCode code);

}  // namespace cairn::proto
