#pragma once
// Frame convention of the cairn wire protocol (docs/protocol.md § Frames).
// Every ZeroMQ message is [protocol id][one serialized message]; a ROUTER
// sees the peer's routing id in front. The id carries the version so a peer
// can refuse a protocol it does not speak before it parses anything.
#include <cstddef>
#include <string_view>

namespace cairn::proto {

// Agent <-> controller messages (AgentMessage / ControllerMessage).
inline constexpr std::string_view kFleetProtocolId = "CAIRN-FLEET/1";
// cairnctl <-> controller messages (OperatorRequest / OperatorResponse).
inline constexpr std::string_view kOperatorProtocolId = "CAIRN-OP/1";

// Payload types of a SignedEnvelope; the signature binds them.
inline constexpr std::string_view kPlanPayloadType = "application/vnd.cairn.plan.v1+protobuf";
inline constexpr std::string_view kKeyAnnouncementPayloadType = "application/vnd.cairn.key-announcement.v1+protobuf";

// Larger messages are dropped by ZMQ_MAXMSGSIZE before anything parses them.
inline constexpr size_t kMaxMessageBytes = 4u << 20;

}  // namespace cairn::proto
