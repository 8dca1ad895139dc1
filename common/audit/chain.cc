#include "common/audit/chain.h"

#include "common/crypto/crypto.h"
#include "common/util/encoding.h"

namespace cairn::audit {

void put_length_prefixed(Bytes& out, std::string_view v) {
  uint32_t n = uint32_t(v.size());
  uint8_t len[4] = {uint8_t(n >> 24), uint8_t(n >> 16), uint8_t(n >> 8), uint8_t(n)};
  out.insert(out.end(), len, len + 4);
  out.insert(out.end(), v.begin(), v.end());
}

std::string audit_hash(const AuditEvent& e) {
  constexpr std::string_view tag = "cairn-audit-v1";
  Bytes enc(tag.begin(), tag.end());
  put_length_prefixed(enc, e.event_id);
  put_length_prefixed(enc, std::to_string(e.seq));
  put_length_prefixed(enc, std::to_string(e.time));
  put_length_prefixed(enc, e.actor);
  put_length_prefixed(enc, e.action);
  put_length_prefixed(enc, e.target);
  put_length_prefixed(enc, e.outcome);
  put_length_prefixed(enc, e.reason);
  put_length_prefixed(enc, e.details);
  put_length_prefixed(enc, e.prev_hash);
  return to_hex(crypto::sha256(enc));
}

ChainReport verify_chain(const std::vector<AuditEvent>& events) {
  ChainReport r;
  const AuditEvent* prev = nullptr;
  for (const auto& e : events) {
    auto bad = [&](std::string why) {
      r.ok = false;
      r.first_bad_seq = e.seq;
      r.problem = "audit event " + std::to_string(e.seq) + " ('" + e.action + "'): " + why;
      return r;
    };
    if (prev && e.seq != prev->seq + 1) return bad("follows event " + std::to_string(prev->seq) + "; events in between are missing");
    if (prev && e.prev_hash != prev->hash) return bad("prev_hash does not match the previous event's hash");
    if (!prev && e.seq == 1 && e.prev_hash != kGenesisHash) return bad("first event does not start the chain");
    if (audit_hash(e) != e.hash) return bad("hash does not match its content; the row was changed");
    ++r.events;
    prev = &e;
  }
  return r;
}

}  // namespace cairn::audit
