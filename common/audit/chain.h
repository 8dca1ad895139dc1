#pragma once
// Audit events and their hash chain: written by the controller's catalog,
// published to Kafka (common/audit/topic.h), verified by cairn-audit.
//
// hash = hex(SHA-256(encoding)), where encoding is the ASCII tag
// "cairn-audit-v1" followed by, for each field in this order, its length as a
// 4-byte big-endian integer and its bytes:
//   event_id, seq, time, actor, action, target, outcome, reason, details,
//   prev_hash
// seq and time are written as ASCII decimal; details is the stored JSON text
// byte for byte (written once as compact JSON with sorted keys, never
// re-serialised before hashing). The first event's prev_hash is 64 zeros.
// Length prefixes make the encoding unambiguous without escaping.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/encoding.h"

namespace cairn::audit {

// Appends v as a 4-byte big-endian length and its bytes: the field encoding of
// the chain's hash (below) and of a checkpoint's signature (topic.h).
void put_length_prefixed(Bytes& out, std::string_view v);

struct AuditEvent {
  std::string event_id;
  int64_t seq = 0;
  int64_t time = 0;  // unix milliseconds
  std::string actor;
  std::string action;
  std::string target;
  std::string outcome;
  std::string reason;
  std::string details;  // JSON text as stored
  std::string prev_hash;
  std::string hash;
};

inline const std::string kGenesisHash(64, '0');

// The hash of e as defined above (e.hash is ignored).
std::string audit_hash(const AuditEvent& e);

struct ChainReport {
  bool ok = true;
  int64_t events = 0;
  int64_t first_bad_seq = 0;  // 0 when ok
  std::string problem;        // lowercase, empty when ok
};

// Checks that seq runs without gaps, each prev_hash is the previous event's
// hash (the genesis hash for seq 1) and each hash matches its event. The
// first listed event anchors the chain when earlier ones were pruned.
ChainReport verify_chain(const std::vector<AuditEvent>& events);

}  // namespace cairn::audit
