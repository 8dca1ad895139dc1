#include "agent/plan_gate.h"

#include <fstream>

#include "agent/config_reader.h"
#include "common/crypto/crypto.h"
#include "common/plan/verify_plan.h"
#include "common/util/error.h"

namespace cairn::agent {

namespace v1 = cairn::v1;

std::vector<plan::PublicKey> load_signing_keys(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path, 0, "cannot read the controller signing keys file");
  std::vector<plan::PublicKey> keys;
  std::string line;
  uint32_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) line.pop_back();
    size_t b = line.find_first_not_of(" \t");
    if (b == std::string::npos || line[b] == '#') continue;
    plan::PublicKey k;
    if (!plan::parse_public_key(line.substr(b), k))
      throw ConfigError(path, n, "not a controller signing key (expected 'ed25519:<base64 of 32 bytes>')");
    keys.push_back(k);
  }
  if (keys.empty()) throw ConfigError(path, n, "no controller signing key in the file; the agent could accept no plan");
  return keys;
}

PlanGate::PlanGate(const std::string& journal_path, const std::string& trust_path, const std::vector<plan::PublicKey>& config_keys,
                   const std::array<uint8_t, 32>& agent_key, int64_t now)
    : agent_key_(agent_key) {
  trust_ = plan::TrustStore::open(trust_path);
  for (const auto& k : config_keys) trust_.add(k, now, "config");
  trust_.save();
  try {
    journal_ = plan::ReplayJournal::open(journal_path);
  } catch (const Error& e) {
    broken_ = std::string("the replay journal cannot be read, so no plan is accepted: ") + e.what();
  }
}

PlanDecision PlanGate::on_plan(std::span<const uint8_t> envelope, int64_t now) {
  PlanDecision d;
  auto digest = crypto::sha256(envelope);
  d.ack.set_envelope_digest(digest.data(), digest.size());
  if (!journal_) {
    d.ack.set_accepted(false);
    d.ack.set_reason(v1::ERROR_CODE_INTERNAL);
    d.ack.set_detail(broken_);
    return d;
  }
  auto v = plan::accept_plan(envelope, trust_, agent_key_, now, *journal_);
  if (!v.ok()) {
    d.ack.set_accepted(false);
    d.ack.set_reason(v.code());
    d.ack.set_detail(v.message());
    return d;
  }
  d.ack.set_accepted(true);
  d.ack.set_reason(v1::ERROR_CODE_OK);
  d.ack.set_plan_id(v->plan.plan_id());
  d.ack.set_sequence(v->plan.sequence());
  d.plan = std::move(v).value().plan;
  return d;
}

v1::KeyAnnouncementAck PlanGate::on_key_announcement(std::span<const uint8_t> envelope, int64_t now) {
  v1::KeyAnnouncementAck ack;
  auto v = trust_.apply_announcement(envelope, now);
  if (!v.ok()) {
    ack.set_accepted(false);
    ack.set_reason(v.code());
    ack.set_detail(v.message());
    return ack;
  }
  ack.set_accepted(true);
  ack.set_reason(v1::ERROR_CODE_OK);
  ack.set_announcement_id(v->announcement_id);
  return ack;
}

}  // namespace cairn::agent
