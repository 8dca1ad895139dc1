#pragma once
// The audit topic's records (docs/audit.md): what the controller publishes and
// cairn-audit reads. Every record of one controller goes to partition 0 of the
// topic with the key "cairn-audit", so Kafka keeps their order. A record's
// value is one JSON object:
//
//   {"kind":"event","v":1,"seq":N,"event_id":"…","time":MS,"actor":"…",
//    "action":"…","target":"…","outcome":"…","reason":"…",
//    "details":"<the stored JSON text, as a string>","prev_hash":"…","hash":"…"}
//
//   {"kind":"checkpoint","v":1,"seq":N,"hash":"<hash of event N>","time":MS,
//    "key_id":"…","public_key":"ed25519:…","signature":"<base64>",
//    "announcements":["<base64 SignedEnvelope(KeyAnnouncement)>", …]}
//
// A checkpoint's signature is Ed25519 over checkpoint_signing_bytes(): the
// chain head (seq and hash of the newest event published before it) signed
// with the controller's plan-signing key. A reader that trusts the key can
// tell a truncated tail (a checkpoint names an event the topic does not hold)
// and a rewritten one (the hash differs). `announcements` carries the key
// announcements that introduced the signing key after a rotation (signed by
// the key before it), so a reader follows rotations as agents do.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/audit/chain.h"
#include "common/util/encoding.h"

namespace cairn::audit {

inline constexpr const char* kRecordKey = "cairn-audit";
inline constexpr const char* kDefaultTopic = "cairn.audit";

struct Checkpoint {
  int64_t seq = 0;
  std::string hash;
  int64_t time = 0;  // unix milliseconds
  std::string key_id;
  std::string public_key;                  // "ed25519:<base64>"
  std::string signature;                   // base64 of 64 bytes
  std::vector<std::string> announcements;  // base64 SignedEnvelope bytes
};

// The bytes a checkpoint's signature covers: "cairn-audit-checkpoint-v1", then
// seq, hash and time, each as a 4-byte big-endian length and its bytes (seq
// and time in ASCII decimal).
Bytes checkpoint_signing_bytes(int64_t seq, const std::string& hash, int64_t time);

std::string encode_event(const AuditEvent& e);
std::string encode_checkpoint(const Checkpoint& c);

struct Record {
  enum class Kind { event, checkpoint } kind = Kind::event;
  AuditEvent event;
  Checkpoint checkpoint;
};

// Parses a record's value; nullopt (and why) when it is not a well-formed
// record of a known kind and version.
std::optional<Record> decode_record(std::string_view value, std::string& why);

}  // namespace cairn::audit
