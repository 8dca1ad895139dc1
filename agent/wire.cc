#include "agent/wire.h"

#include "proto/protocol.h"

namespace cairn::agent {

namespace v1 = cairn::v1;

Decoded decode_controller_frames(const std::vector<std::string_view>& frames) {
  Decoded d;
  if (frames.size() != 2) {
    d.error = v1::ERROR_CODE_PROTOCOL_UNSUPPORTED;
    d.detail = "expected 2 frames, got " + std::to_string(frames.size());
    return d;
  }
  if (frames[0] != proto::kFleetProtocolId) {
    d.error = v1::ERROR_CODE_PROTOCOL_UNSUPPORTED;
    d.detail = "this agent speaks '" + std::string(proto::kFleetProtocolId) + "' only";
    return d;
  }
  if (frames[1].size() > proto::kMaxMessageBytes) {
    d.error = v1::ERROR_CODE_MALFORMED_MESSAGE;
    d.detail = "message larger than the protocol allows";
    return d;
  }
  v1::ControllerMessage m;
  if (!m.ParseFromArray(frames[1].data(), int(frames[1].size()))) {
    d.error = v1::ERROR_CODE_MALFORMED_MESSAGE;
    d.detail = "the message does not parse as a 'ControllerMessage'";
    return d;
  }
  if (m.body_case() == v1::ControllerMessage::BODY_NOT_SET) {
    d.error = v1::ERROR_CODE_MALFORMED_MESSAGE;
    d.detail = "the message carries no body (or one this agent does not know)";
    return d;
  }
  d.message = std::move(m);
  return d;
}

std::vector<std::string> encode_agent_message(const v1::AgentMessage& m) {
  return {std::string(proto::kFleetProtocolId), m.SerializeAsString()};
}

}  // namespace cairn::agent
