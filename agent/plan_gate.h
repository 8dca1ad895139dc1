#pragma once
// The agent's gate for everything signed that arrives from the controller:
// plans (accept_plan: signature before parsing, target, window, replay
// journal) and key announcements (the trust store). It owns the persisted
// state that makes a restart safe: the replay journal and the trusted keys.
#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/plan/replay_journal.h"
#include "common/plan/signing_key.h"
#include "common/plan/trust_store.h"
#include "proto/cairn.pb.h"

namespace cairn::agent {

struct AgentConfig;

// Reads the controller signing keys file: one "ed25519:<base64>" per line,
// '#' comments and blank lines ignored. Throws ConfigError with the line.
std::vector<plan::PublicKey> load_signing_keys(const std::string& path);

struct PlanDecision {
  cairn::v1::PlanAck ack;
  std::optional<cairn::v1::PlanPayload> plan;  // set only when accepted
};

class PlanGate {
 public:
  // Opens the trust store (adding the configured keys) and the replay
  // journal. A journal that exists but does not parse does not stop the
  // agent: every plan is then refused with 'internal' and the reason, so the
  // controller and its audit trail see why.
  PlanGate(const std::string& journal_path, const std::string& trust_path, const std::vector<plan::PublicKey>& config_keys,
           const std::array<uint8_t, 32>& agent_key, int64_t now);

  PlanDecision on_plan(std::span<const uint8_t> envelope, int64_t now);
  cairn::v1::KeyAnnouncementAck on_key_announcement(std::span<const uint8_t> envelope, int64_t now);

  uint64_t highest_sequence() const { return journal_ ? journal_->highest_sequence_any() : 0; }
  std::vector<std::string> trusted_key_ids() const { return trust_.key_ids(); }
  // Empty when plans can be accepted; else why not.
  const std::string& broken() const { return broken_; }

 private:
  plan::TrustStore trust_;
  std::optional<plan::ReplayJournal> journal_;
  std::string broken_;
  std::array<uint8_t, 32> agent_key_;
};

}  // namespace cairn::agent
