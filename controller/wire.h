#pragma once
// Frames in and out of the controller's sockets (docs/protocol.md § Frames).
// Everything here takes bytes from the network and never throws or asserts on
// them: a refusal is a value with the ErrorCode to answer with.
#include <string>
#include <string_view>
#include <vector>

#include "proto/cairn.pb.h"

namespace cairn::controller {

template <class M>
struct Parsed {
  cairn::v1::ErrorCode code = cairn::v1::ERROR_CODE_OK;
  std::string detail;  // lowercase, why the input was refused
  M message;
  bool ok() const { return code == cairn::v1::ERROR_CODE_OK; }
};

// frames are the message's frames after the ROUTER's routing id.
Parsed<cairn::v1::AgentMessage> parse_agent_message(const std::vector<std::string>& frames);
Parsed<cairn::v1::OperatorRequest> parse_operator_request(const std::vector<std::string>& frames);

// Field rules beyond what protobuf parsing checks (sizes, required ids,
// enum ranges). Empty when the message keeps them.
std::string check_agent_message(const cairn::v1::AgentMessage& m);

// Free text an agent reports (reason details and items, progress items,
// refusal details) is kept up to kMaxAgentText bytes; longer text is cut at a
// UTF-8 boundary and ends with kTruncationMark. A TaskResult keeps at most
// kMaxReasons reasons, the last one saying how many more there were.
// parse_agent_message applies this to every message (docs/protocol.md § Bounds).
inline constexpr size_t kMaxAgentText = 4096;
inline constexpr size_t kMaxReasons = 100;
inline constexpr std::string_view kTruncationMark = "...[truncated]";
void bound_agent_text(cairn::v1::AgentMessage& m);
// s cut to at most max bytes, at a code point boundary, with kTruncationMark.
std::string truncate_utf8(std::string s, size_t max);
std::string check_operator_request(const cairn::v1::OperatorRequest& m);

// [protocol id][serialized message]
std::vector<std::string> fleet_frames(const cairn::v1::ControllerMessage& m);
std::vector<std::string> operator_frames(const cairn::v1::OperatorResponse& m);

}  // namespace cairn::controller
