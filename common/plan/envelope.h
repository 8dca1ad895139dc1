#pragma once
// Signed envelopes (DSSE-style): the signature covers PAE(payload_type,
// payload), so the type is bound to the bytes and no canonical encoding of the
// payload is needed. open_envelope() checks the signature before anyone
// parses the payload.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "common/plan/signing_key.h"
#include "common/plan/verdict.h"
#include "common/util/encoding.h"

namespace cairn::plan {

class TrustStore;

// "DSSEv1" SP len(type) SP type SP len(payload) SP payload, lengths in ASCII decimal.
Bytes pae(std::string_view payload_type, std::span<const uint8_t> payload);

// Returns a serialized cairn.v1.SignedEnvelope.
Bytes sign_envelope(const SigningKey& key, std::string_view payload_type, std::span<const uint8_t> payload);

// An envelope whose signature verified under a trusted key and whose type is
// the expected one; payload is still untrusted in shape, only its origin is known.
struct OpenedEnvelope {
  std::string key_id;
  std::string payload_type;
  Bytes payload;
};

// Checks, in this order: envelope parses (malformed_envelope), signature and
// key id present (missing_signature), key id trusted (unknown_key), signature
// valid (bad_signature), payload type is expected_type (unknown_payload_type).
[[nodiscard]] Verdict<OpenedEnvelope> open_envelope(std::span<const uint8_t> envelope, const TrustStore& trust,
                                                    std::string_view expected_type);

}  // namespace cairn::plan
