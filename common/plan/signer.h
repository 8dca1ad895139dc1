#pragma once
// The controller's side of signed envelopes: serialize, sign, wrap.
#include "common/plan/signing_key.h"
#include "common/util/encoding.h"
#include "proto/cairn.pb.h"

namespace cairn::plan {

// Returns a serialized SignedEnvelope of type kPlanPayloadType.
Bytes sign_plan(const SigningKey& key, const cairn::v1::PlanPayload& plan);
// Returns a serialized SignedEnvelope of type kKeyAnnouncementPayloadType.
Bytes sign_key_announcement(const SigningKey& key, const cairn::v1::KeyAnnouncement& announcement);
// Fills a fresh random nonce (16 bytes) into plan.
void set_random_nonce(cairn::v1::PlanPayload& plan);

}  // namespace cairn::plan
