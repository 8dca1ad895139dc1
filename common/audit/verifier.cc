#include "common/audit/verifier.h"

#include <utility>

#include "common/plan/signing_key.h"

namespace cairn::audit {
namespace {

std::string short_hash(const std::string& h) { return h.size() > 12 ? h.substr(0, 12) + "…" : h; }

constexpr int64_t kMaxRemembered = 100'000;  // a gap larger than this is not tracked seq by seq

}  // namespace

Verifier::Verifier(plan::TrustStore& trust, VerifierState state) : trust_(trust), st_(std::move(state)) {
  if (st_.expected_seq > 0 && !st_.last_hash.empty()) remember(st_.expected_seq - 1, st_.last_hash);
}

void Verifier::problem(std::string kind, int64_t first, int64_t last, int64_t offset, std::string message) {
  problems_.push_back({std::move(kind), first, last, offset, std::move(message)});
}

std::vector<Problem> Verifier::take_problems() { return std::exchange(problems_, {}); }

void Verifier::remember(int64_t seq, const std::string& hash) {
  hashes_[seq] = hash;
  while (hashes_.size() > kWindow) hashes_.erase(hashes_.begin());
}

const std::string* Verifier::seen_hash(int64_t seq) const {
  auto it = hashes_.find(seq);
  return it == hashes_.end() ? nullptr : &it->second;
}

void Verifier::feed(int64_t offset, std::string_view key, std::string_view value,
                    const std::function<void(const AuditEvent&, int64_t)>& on_event) {
  st_.next_offset = offset + 1;
  std::string why;
  auto rec = decode_record(value, why);
  if (!rec) {
    problem("malformed", 0, 0, offset, "record at offset " + std::to_string(offset) + " is not an audit record: " + why);
    return;
  }
  if (key != kRecordKey)
    problem("malformed", 0, 0, offset,
            "record at offset " + std::to_string(offset) + " has key '" + std::string(key) + "', not '" + kRecordKey + "'");
  if (rec->kind == Record::Kind::event) on_event_record(offset, rec->event, on_event);
  else on_checkpoint(offset, rec->checkpoint);
}

void Verifier::on_event_record(int64_t offset, const AuditEvent& e,
                               const std::function<void(const AuditEvent&, int64_t)>& out) {
  const std::string at = " (offset " + std::to_string(offset) + ")";
  const std::string name = "event " + std::to_string(e.seq) + " '" + e.action + "'" + at;
  if (audit_hash(e) != e.hash) {
    problem("altered", e.seq, e.seq, offset, name + ": its hash does not match its content; the event was altered");
    return;
  }
  auto accept = [&] {
    remember(e.seq, e.hash);
    st_.expected_seq = e.seq + 1;
    st_.last_hash = e.hash;
    ++events_;
    out(e, offset);
  };
  if (st_.expected_seq == 0) {  // the first event this reader sees
    if (e.seq == 1 && e.prev_hash != kGenesisHash) {
      problem("altered", 1, 1, offset, name + ": the first event does not start the chain (prev_hash is not the genesis hash)");
      return;
    }
    if (e.seq != 1) anchored_at_ = e.seq;
    accept();
    return;
  }
  if (e.seq == st_.expected_seq) {
    if (e.prev_hash != st_.last_hash) {
      problem("altered", e.seq, e.seq, offset,
              name + ": prev_hash " + short_hash(e.prev_hash) + " is not event " + std::to_string(e.seq - 1) +
                  "'s hash " + short_hash(st_.last_hash) + "; an event was inserted or rewritten");
      return;
    }
    accept();
    return;
  }
  if (e.seq > st_.expected_seq) {
    int64_t first = st_.expected_seq, last = e.seq - 1;
    problem("gap", first, last, offset,
            "events " + std::to_string(first) + (first == last ? "" : ".." + std::to_string(last)) +
                " are missing: event " + std::to_string(e.seq) + at + " follows event " + std::to_string(first - 1));
    if (last - first < kMaxRemembered)
      for (int64_t s = first; s <= last; ++s) missing_.insert(s);
    accept();  // the chain goes on from here; the missing ones are the problem
    return;
  }
  // e.seq < expected: seen before, or one a gap skipped arriving late.
  if (missing_.erase(e.seq)) {
    const std::string* before = seen_hash(e.seq - 1);
    bool links = !before || *before == e.prev_hash;
    problem("reordered", e.seq, e.seq, offset,
            name + " arrives after event " + std::to_string(st_.expected_seq - 1) +
                (links ? "" : ", and its prev_hash does not link to event " + std::to_string(e.seq - 1)));
    remember(e.seq, e.hash);
    return;
  }
  if (const std::string* h = seen_hash(e.seq)) {
    if (*h == e.hash)
      problem("duplicate", e.seq, e.seq, offset, name + " is a duplicate of the event already read with that seq (replayed)");
    else
      problem("conflict", e.seq, e.seq, offset,
              name + ": a different event with seq " + std::to_string(e.seq) + " was read before (hash " + short_hash(*h) +
                  ", this one " + short_hash(e.hash) + "); one of them is forged");
    return;
  }
  problem("duplicate", e.seq, e.seq, offset,
          name + " comes after event " + std::to_string(st_.expected_seq - 1) + ": an old event replayed");
}

void Verifier::on_checkpoint(int64_t offset, const Checkpoint& c) {
  const std::string at = "checkpoint at offset " + std::to_string(offset) + " for event " + std::to_string(c.seq);
  plan::PublicKey pub{};
  if (!plan::parse_public_key(c.public_key, pub) || plan::key_id(pub) != c.key_id) {
    problem("checkpoint_key", c.seq, c.seq, offset, at + ": its public key is malformed or does not match its key id");
    return;
  }
  const plan::TrustedKey* k = trust_.find(c.key_id);
  if (!k) {
    // A rotation: the announcements that introduced the key, signed by one trusted before it.
    for (const auto& a : c.announcements) {
      Bytes env;
      if (!from_base64(a, env)) continue;
      (void)trust_.apply_announcement(env, c.time / 1000);
    }
    k = trust_.find(c.key_id);
  }
  if (!k || k->public_key != pub) {
    problem("checkpoint_key", c.seq, c.seq, offset,
            at + ": signed by key " + c.key_id + ", which is not a trusted controller key (nor announced by one)");
    return;
  }
  Bytes sig;
  Bytes msg = checkpoint_signing_bytes(c.seq, c.hash, c.time);
  if (!from_base64(c.signature, sig) || !plan::verify_signature(pub, msg, sig)) {
    problem("checkpoint_signature", c.seq, c.seq, offset, at + ": the signature does not verify under key " + c.key_id);
    return;
  }
  if (st_.expected_seq == 0 || c.seq >= st_.expected_seq) {
    int64_t have = st_.expected_seq == 0 ? 0 : st_.expected_seq - 1;
    problem("truncated", have + 1, c.seq, offset,
            at + ": the controller signed events up to " + std::to_string(c.seq) + " but the topic holds them only up to " +
                std::to_string(have) + "; events " + std::to_string(have + 1) + ".." + std::to_string(c.seq) +
                " were removed");
    return;
  }
  if (const std::string* h = seen_hash(c.seq)) {
    if (*h != c.hash) {
      problem("checkpoint_mismatch", c.seq, c.seq, offset,
              at + ": the controller signed hash " + short_hash(c.hash) + " but the topic's event has " + short_hash(*h) +
                  "; the chain was rewritten");
      return;
    }
  } else if (missing_.count(c.seq)) {
    return;  // the event it signs is missing: reported once, as the gap
  }
  ++checkpoints_;
  if (c.seq > st_.checkpoint_seq) st_.checkpoint_seq = c.seq;
}

std::string Verifier::unsigned_tail() const {
  if (st_.expected_seq == 0) return {};
  int64_t last = st_.expected_seq - 1;
  if (last <= st_.checkpoint_seq) return {};
  int64_t first = std::max(st_.checkpoint_seq + 1, anchored_at_.value_or(1));
  return "events " + std::to_string(first) + ".." + std::to_string(last) +
         " are not covered by a signed checkpoint yet (the controller signs at least every minute while it publishes); "
         "a tail cut after the last checkpoint cannot be told from one not yet written";
}

}  // namespace cairn::audit
