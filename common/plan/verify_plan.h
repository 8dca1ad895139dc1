#pragma once
// The agent's gate for plans. Everything a plan must satisfy before any task
// runs is checked here, each refusal with its own ErrorCode (docs/protocol.md
// § Validity rules), in this order:
//   envelope parses                      malformed_envelope
//   signature and key id present         missing_signature
//   key id trusted                       unknown_key
//   signature verifies over PAE          bad_signature
//   payload type is the plan type        unknown_payload_type
//   payload parses and keeps the rules   malformed_payload
//   target is this agent's CURVE key     wrong_target
//   now >= not_before - skew             not_yet_valid
//   now < expires_at                     expired
//   plan id and nonce never accepted     replayed
//   sequence above highest accepted      older_sequence
#include <cstdint>
#include <span>

#include "common/plan/replay_journal.h"
#include "common/plan/trust_store.h"
#include "common/plan/verdict.h"
#include "proto/cairn.pb.h"

namespace cairn::plan {

struct VerifyOptions {
  // Tolerates an agent clock running behind the controller's at not_before.
  // Expiry gets no tolerance: the journal forgets a plan once it expires.
  int64_t clock_skew_seconds = 60;
  // Longest not_before..expires_at window accepted; bounds the journal's size
  // and how long a captured plan stays dangerous.
  int64_t max_validity_seconds = 7 * 24 * 3600;
  size_t min_nonce_bytes = 16;
};

struct VerifiedPlan {
  std::string key_id;
  cairn::v1::PlanPayload plan;
};

// Checks without changing anything. agent_key is this agent's 32-byte CURVE
// public key; now is unix seconds.
[[nodiscard]] Verdict<VerifiedPlan> verify_plan(std::span<const uint8_t> envelope, const TrustStore& trust,
                                                std::span<const uint8_t> agent_key, int64_t now, const ReplayJournal& journal,
                                                const VerifyOptions& options = {});

// verify_plan(), then records the plan in the journal (persisted before this
// returns). A journal that cannot be written refuses the plan with `internal`:
// accepting what cannot be remembered would reopen the replay window.
[[nodiscard]] Verdict<VerifiedPlan> accept_plan(std::span<const uint8_t> envelope, const TrustStore& trust,
                                                std::span<const uint8_t> agent_key, int64_t now, ReplayJournal& journal,
                                                const VerifyOptions& options = {});

}  // namespace cairn::plan
