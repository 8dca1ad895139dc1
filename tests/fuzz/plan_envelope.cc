// The plan envelope and its verification (common/plan): what an agent checks
// before any task runs, and the key announcements it applies to its trust
// store.
//
// Input, by first byte: 'P' the rest is a PlanPayload (wire bytes) signed with
// the trusted key, so the payload rules are reached; 'K' the same for a
// KeyAnnouncement; otherwise the whole input is a SignedEnvelope as received.
// Each envelope goes through verify_plan, accept_plan (into a journal in
// memory) and TrustStore::apply_announcement.
#include <array>
#include <cstdint>

#include "common/plan/envelope.h"
#include "common/plan/replay_journal.h"
#include "common/plan/trust_store.h"
#include "common/plan/verify_plan.h"
#include "proto/protocol.h"

using namespace cairn;

namespace {

constexpr int64_t kNow = 1'700'000'000;

const plan::SigningKey& key() {
  static const plan::SigningKey k = plan::SigningKey::from_seed(std::array<uint8_t, 32>{3});
  return k;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  plan::TrustStore trust;
  trust.add(key().public_key(), kNow - 100, "config");
  std::array<uint8_t, 32> me{};
  me.fill(1);

  Bytes envelope;
  std::span<const uint8_t> rest(data + (size ? 1 : 0), size ? size - 1 : 0);
  if (size && data[0] == 'P')
    envelope = plan::sign_envelope(key(), proto::kPlanPayloadType, rest);
  else if (size && data[0] == 'K')
    envelope = plan::sign_envelope(key(), proto::kKeyAnnouncementPayloadType, rest);
  else
    envelope.assign(data, data + size);

  plan::ReplayJournal journal;
  auto v = plan::verify_plan(envelope, trust, me, kNow, journal);
  if (v.ok()) {
    auto again = plan::accept_plan(envelope, trust, me, kNow, journal);
    // Accepted once: the same envelope is a replay from then on.
    if (again.ok() && plan::verify_plan(envelope, trust, me, kNow, journal).ok()) __builtin_trap();
  }
  (void)trust.apply_announcement(envelope, kNow);
  return 0;
}
