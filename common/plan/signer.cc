#include "common/plan/signer.h"

#include "common/crypto/crypto.h"
#include "common/plan/envelope.h"
#include "proto/protocol.h"

namespace cairn::plan {

Bytes sign_plan(const SigningKey& key, const cairn::v1::PlanPayload& plan) {
  std::string body = plan.SerializeAsString();
  return sign_envelope(key, proto::kPlanPayloadType, as_bytes(body));
}

Bytes sign_key_announcement(const SigningKey& key, const cairn::v1::KeyAnnouncement& announcement) {
  std::string body = announcement.SerializeAsString();
  return sign_envelope(key, proto::kKeyAnnouncementPayloadType, as_bytes(body));
}

void set_random_nonce(cairn::v1::PlanPayload& plan) {
  auto nonce = crypto::random_array<16>();
  plan.set_nonce(nonce.data(), nonce.size());
}

}  // namespace cairn::plan
