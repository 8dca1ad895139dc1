#include "common/plan/envelope.h"

#include "common/plan/trust_store.h"
#include "proto/cairn.pb.h"
#include "proto/protocol.h"

namespace cairn::plan {
namespace {

// Key ids and types come from the network; keep what we echo short.
std::string clip(std::string_view s) {
  constexpr size_t kMax = 80;
  return s.size() <= kMax ? std::string(s) : std::string(s.substr(0, kMax)) + "...";
}

}  // namespace

Bytes pae(std::string_view payload_type, std::span<const uint8_t> payload) {
  std::string head = "DSSEv1 " + std::to_string(payload_type.size()) + " ";
  head.append(payload_type);
  head += " " + std::to_string(payload.size()) + " ";
  Bytes out(head.begin(), head.end());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

Bytes sign_envelope(const SigningKey& key, std::string_view payload_type, std::span<const uint8_t> payload) {
  Signature sig = key.sign(pae(payload_type, payload));
  cairn::v1::SignedEnvelope env;
  env.set_payload_type(std::string(payload_type));
  env.set_payload(payload.data(), payload.size());
  env.set_key_id(key.key_id());
  env.set_signature(sig.data(), sig.size());
  std::string wire = env.SerializeAsString();
  return Bytes(wire.begin(), wire.end());
}

Verdict<OpenedEnvelope> open_envelope(std::span<const uint8_t> envelope, const TrustStore& trust, std::string_view expected_type) {
  using V = Verdict<OpenedEnvelope>;
  cairn::v1::SignedEnvelope env;
  if (envelope.size() > proto::kMaxMessageBytes || !env.ParseFromArray(envelope.data(), int(envelope.size())))
    return V::reject(cairn::v1::ERROR_CODE_MALFORMED_ENVELOPE, "signed envelope does not parse");
  if (env.signature().empty() || env.key_id().empty())
    return V::reject(cairn::v1::ERROR_CODE_MISSING_SIGNATURE,
                     env.signature().empty() ? "envelope carries no signature" : "envelope names no signing key");
  const TrustedKey* key = trust.find(env.key_id());
  if (!key) {
    std::string why = trust.is_retired(env.key_id()) ? "' was retired" : "' is not a trusted controller key";
    return V::reject(cairn::v1::ERROR_CODE_UNKNOWN_KEY, "signing key '" + clip(env.key_id()) + why);
  }
  const auto& sig = env.signature();
  const auto* sig_bytes = reinterpret_cast<const uint8_t*>(sig.data());
  const auto* body = reinterpret_cast<const uint8_t*>(env.payload().data());
  if (!verify_signature(key->public_key, pae(env.payload_type(), {body, env.payload().size()}), {sig_bytes, sig.size()}))
    return V::reject(cairn::v1::ERROR_CODE_BAD_SIGNATURE, "signature does not verify under key '" + env.key_id() + "'");
  // Only now is the type trustworthy enough to act on.
  if (env.payload_type() != expected_type)
    return V::reject(cairn::v1::ERROR_CODE_UNKNOWN_PAYLOAD_TYPE,
                     "payload type '" + clip(env.payload_type()) + "' is not '" + std::string(expected_type) + "'");
  OpenedEnvelope out;
  out.key_id = env.key_id();
  out.payload_type = env.payload_type();
  out.payload.assign(body, body + env.payload().size());
  return V::accept(std::move(out));
}

}  // namespace cairn::plan
