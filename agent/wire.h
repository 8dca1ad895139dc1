#pragma once
// Frames of the fleet protocol as the agent sees them (docs/protocol.md
// § Frames): [CAIRN-FLEET/1][ControllerMessage]. Decoding never throws and
// never asserts: whatever arrives, the answer is a message or a reason.
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "proto/cairn.pb.h"

namespace cairn::agent {

struct Decoded {
  std::optional<cairn::v1::ControllerMessage> message;
  cairn::v1::ErrorCode error = cairn::v1::ERROR_CODE_OK;  // why not, when message is empty
  std::string detail;
};

Decoded decode_controller_frames(const std::vector<std::string_view>& frames);
// The two frames of an agent message.
std::vector<std::string> encode_agent_message(const cairn::v1::AgentMessage& m);

}  // namespace cairn::agent
