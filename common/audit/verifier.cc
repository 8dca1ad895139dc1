#include "common/audit/verifier.h"

#include <algorithm>
#include <utility>

#include "common/plan/signing_key.h"

namespace cairn::audit {
namespace {

std::string short_hash(const std::string& h) { return h.size() > 12 ? h.substr(0, 12) + "…" : h; }

std::string range(int64_t first, int64_t last) { return std::to_string(first) + (first == last ? "" : ".." + std::to_string(last)); }

}  // namespace

Verifier::Verifier(plan::TrustStore& trust, VerifierState state, VerifierOptions options)
    : trust_(trust), st_(std::move(state)), opt_(options) {
  if (st_.expected_seq > 0 && !st_.last_hash.empty()) remember(st_.expected_seq - 1, st_.last_hash);
  max_seq_read_ = std::max<int64_t>(0, st_.expected_seq - 1);
  reported_through_ = max_seq_read_;
  for (const auto& p : st_.pending) max_seq_read_ = std::max(max_seq_read_, p.event.seq);
  reindex();
}

void Verifier::reindex() {
  first_at_seq_.clear();
  at_hash_.clear();
  for (size_t i = 0; i < st_.pending.size(); ++i) {
    first_at_seq_.emplace(st_.pending[i].event.seq, i);
    at_hash_.emplace(st_.pending[i].event.hash, i);
  }
}

void Verifier::index_last() {
  const size_t i = st_.pending.size() - 1;
  first_at_seq_.emplace(st_.pending[i].event.seq, i);
  at_hash_.emplace(st_.pending[i].event.hash, i);
}

const PendingEvent* Verifier::first_pending_at(int64_t seq) const {
  auto it = first_at_seq_.find(seq);
  return it == first_at_seq_.end() ? nullptr : &st_.pending[it->second];
}

int Verifier::pending_index(int64_t seq, const std::string& hash) const {
  auto it = at_hash_.find(hash);
  return it != at_hash_.end() && st_.pending[it->second].event.seq == seq ? int(it->second) : -1;
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

void Verifier::set_head(int64_t seq, const std::string& hash) {
  remember(seq, hash);
  st_.expected_seq = seq + 1;
  st_.last_hash = hash;
  reported_through_ = std::max(reported_through_, seq);
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
  if (rec->kind == Record::Kind::event)
    on_event_record(offset, rec->event);
  else
    on_checkpoint(offset, rec->checkpoint, on_event);
}

void Verifier::on_event_record(int64_t offset, const AuditEvent& e) {
  const std::string at = " (offset " + std::to_string(offset) + ")";
  const std::string name = "event " + std::to_string(e.seq) + " '" + e.action + "'" + at;
  if (audit_hash(e) != e.hash) {
    problem("altered", e.seq, e.seq, offset, name + ": its hash does not match its content; the event was altered");
    return;
  }
  if (e.seq < 1) {
    problem("malformed", e.seq, e.seq, offset, name + ": seq must be 1 or more");
    return;
  }
  if (opt_.from_seq > 0 && e.seq < opt_.from_seq && st_.expected_seq == 0) return;  // before the requested start
  if (st_.expected_seq > 0 && e.seq < st_.expected_seq) {
    // At or before the verified head.
    if (const std::string* h = seen_hash(e.seq); h && *h != e.hash)
      problem("forged", e.seq, e.seq, offset,
              name + " differs from the event " + std::to_string(e.seq) + " a signed checkpoint verified (hash " + short_hash(*h) +
                  ", this one " + short_hash(e.hash) + "): it is forged");
    else
      problem("duplicate", e.seq, e.seq, offset, name + " arrives again after the chain was verified past it (replayed)");
    return;
  }
  bool conflict = false;
  if (int i = pending_index(e.seq, e.hash); i >= 0) {
    problem("duplicate", e.seq, e.seq, offset,
            name + " is a duplicate of the event read at offset " + std::to_string(st_.pending[size_t(i)].offset) + " (replayed)");
    return;
  }
  if (const PendingEvent* p = first_pending_at(e.seq)) {
    problem("conflict", e.seq, e.seq, offset,
            name + " and the event read at offset " + std::to_string(p->offset) + " are two different events with seq " +
                std::to_string(e.seq) + " (hashes " + short_hash(p->event.hash) + " and " + short_hash(e.hash) +
                "); the signed checkpoint that covers it decides which one is genuine");
    conflict = true;
  }
  if (!conflict && e.seq < max_seq_read_)
    problem("reordered", e.seq, e.seq, offset, name + " arrives after event " + std::to_string(max_seq_read_));
  max_seq_read_ = std::max(max_seq_read_, e.seq);
  if (st_.pending.size() >= kMaxPending) {
    // Dropped a tenth at a time: one erase from the front per event would
    // move the whole vector each time.
    const size_t n = kMaxPending / 10;
    int64_t first = st_.pending.front().event.seq, last = first;
    for (size_t i = 0; i < n; ++i) {
      first = std::min(first, st_.pending[i].event.seq);
      last = std::max(last, st_.pending[i].event.seq);
    }
    problem("unsigned", first, last, st_.pending.front().offset,
            std::to_string(n) + " event(s) " + range(first, last) + " (from offset " + std::to_string(st_.pending.front().offset) +
                ") and " + std::to_string(kMaxPending - n) + " more after them are not covered by any signed checkpoint; the oldest " +
                std::to_string(n) + " are not verified");
    st_.pending.erase(st_.pending.begin(), st_.pending.begin() + ptrdiff_t(n));
    reindex();
  }
  st_.pending.push_back({e, offset});
  index_last();
}

void Verifier::on_checkpoint(int64_t offset, const Checkpoint& c, const std::function<void(const AuditEvent&, int64_t)>& out) {
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
  // A genuine checkpoint from here on.
  ++checkpoints_;
  if (c.seq < 1) return;  // signs no event
  if (c.time > st_.checkpoint_time) {
    st_.checkpoint_time = c.time;
    stale_reported_ = false;
  }
  if (st_.expected_seq > 0 && c.seq < st_.expected_seq) {
    // Covers events verified before (the controller signs the head again while idle).
    if (const std::string* h = seen_hash(c.seq); h && *h != c.hash)
      problem("checkpoint_mismatch", c.seq, c.seq, offset,
              at + ": the controller signed hash " + short_hash(c.hash) + " but the verified event has " + short_hash(*h) +
                  "; the chain was rewritten");
    return;
  }
  if (opt_.from_seq > 0 && st_.expected_seq == 0 && c.seq < opt_.from_seq) return;  // before the requested start

  auto& pend = st_.pending;
  auto find = [&](int64_t seq, const std::string& hash) { return pending_index(seq, hash); };
  // Pending events at or below c.seq that the signed chain does not reach are
  // dropped with the problem that explains them.
  auto below = [&](int64_t upto, int64_t lo) {
    int64_t first = 0, last = 0;
    for (const auto& p : pend)
      if (p.event.seq <= upto && p.event.seq >= lo) {
        first = first ? std::min(first, p.event.seq) : p.event.seq;
        last = std::max(last, p.event.seq);
      }
    return first ? "; events " + range(first, last) + " read before it are not covered by the signed chain and are not verified"
                 : std::string();
  };
  auto drop_upto = [&](int64_t upto) {
    std::erase_if(pend, [&](const PendingEvent& p) { return p.event.seq <= upto; });
    reindex();
  };
  const int64_t first_expected = st_.expected_seq > 0 ? st_.expected_seq : std::max<int64_t>(1, opt_.from_seq);

  int top = find(c.seq, c.hash);
  if (top < 0) {
    if (first_pending_at(c.seq)) {
      problem("checkpoint_mismatch", c.seq, c.seq, offset,
              at + ": the controller signed hash " + short_hash(c.hash) +
                  " but no event with that seq on the topic has it; the chain was rewritten" + below(c.seq, 0));
    } else {
      int64_t have_to = first_expected - 1;
      for (const auto& p : pend)
        if (p.event.seq <= c.seq) have_to = std::max(have_to, p.event.seq);
      problem("truncated", have_to + 1, c.seq, offset,
              at + ": the controller signed events up to " + std::to_string(c.seq) + " but the topic holds them only up to " +
                  std::to_string(have_to) + "; events " + range(have_to + 1, c.seq) + " were removed" + below(c.seq, 0));
    }
    drop_upto(c.seq);
    // The signature tells event c.seq's genuine hash: what follows links to it.
    set_head(c.seq, c.hash);
    st_.checkpoint_seq = std::max(st_.checkpoint_seq, c.seq);
    return;
  }

  // Walk back from the signed event along prev_hash.
  std::vector<int> path{top};
  bool linked = false;
  for (;;) {
    const AuditEvent& e = pend[size_t(path.back())].event;
    if (st_.expected_seq > 0 && e.seq == st_.expected_seq) {
      linked = e.prev_hash == st_.last_hash;
      break;
    }
    if (st_.expected_seq == 0 && e.seq == 1) {
      linked = e.prev_hash == kGenesisHash;
      break;
    }
    if (st_.expected_seq == 0 && opt_.from_seq > 0 && e.seq == opt_.from_seq) {
      linked = true;  // where the reader was told the trail starts
      break;
    }
    int prev = find(e.seq - 1, e.prev_hash);
    if (prev < 0) break;
    path.push_back(prev);
  }
  const PendingEvent& start = pend[size_t(path.back())];
  if (!linked) {
    const int64_t s = start.event.seq;
    if (s > first_expected) {
      // Events missing below the start of the signed chain.
      int64_t lo = first_expected;
      for (const auto& p : pend)
        if (p.event.seq < s) lo = std::max(lo, p.event.seq + 1);
      int64_t first = std::max(lo, reported_through_ + 1);
      if (first <= s - 1 || !below(s - 1, 0).empty()) {
        std::string msg;
        if (first <= s - 1) {
          msg = "events " + range(first, s - 1) + " are missing: the " + at + " signs a chain that reaches back to event " +
                std::to_string(s) + " (offset " + std::to_string(start.offset) + ")";
          if (st_.expected_seq == 0 && opt_.from_seq == 0 && first == 1)
            msg +=
                "; the trail does not start at event 1 (its head was removed, or is gone with the topic's retention): "
                "to verify from there on purpose, give --from-seq " +
                std::to_string(s);
        } else {
          msg = "event " + std::to_string(s) + " (offset " + std::to_string(start.offset) + ") does not link to the event " +
                std::to_string(s - 1) + " read before it: the chain was rewritten";
        }
        problem(first <= s - 1 ? "gap" : "altered", first <= s - 1 ? first : s, first <= s - 1 ? s - 1 : s, offset, msg + below(s - 1, 0));
      }
    } else {
      // The first event after the verified head does not link to it.
      problem("altered", s, s, start.offset,
              "event " + std::to_string(s) + " (offset " + std::to_string(start.offset) + "), which the " + at +
                  " signs through, does not link to the verified event " + std::to_string(s - 1) + ": the chain was rewritten");
    }
  }
  // The signed chain: verified, handed out in seq order.
  std::vector<bool> on_path(pend.size());
  std::unordered_map<int64_t, int64_t> genuine_at;  // seq -> offset of the signed event
  for (int i : path) {
    on_path[size_t(i)] = true;
    genuine_at[pend[size_t(i)].event.seq] = pend[size_t(i)].offset;
  }
  for (auto it = path.rbegin(); it != path.rend(); ++it) {
    const PendingEvent& p = pend[size_t(*it)];
    remember(p.event.seq, p.event.hash);
    ++events_;
    out(p.event, p.offset);
  }
  // Others within the signed range are not what the controller signed.
  for (size_t i = 0; i < pend.size(); ++i) {
    const PendingEvent& p = pend[i];
    if (on_path[i] || p.event.seq > c.seq || p.event.seq < start.event.seq) continue;
    auto g = genuine_at.find(p.event.seq);
    const int64_t genuine = g == genuine_at.end() ? -1 : g->second;
    problem("forged", p.event.seq, p.event.seq, p.offset,
            "event " + std::to_string(p.event.seq) + " '" + p.event.action + "' (offset " + std::to_string(p.offset) +
                ") is not the event the controller signed: the " + at + " verifies " +
                (genuine >= 0 ? "the event at offset " + std::to_string(genuine) : std::string("another chain")) + "; it is forged");
  }
  drop_upto(c.seq);
  set_head(c.seq, c.hash);
  st_.checkpoint_seq = std::max(st_.checkpoint_seq, c.seq);
}

std::string Verifier::expire(int64_t now_ms) {
  std::vector<PendingEvent> old;
  std::erase_if(st_.pending, [&](const PendingEvent& p) {
    bool expired = now_ms - p.event.time > opt_.max_unsigned_ms || p.event.time - now_ms > opt_.max_unsigned_ms;
    if (expired) old.push_back(p);
    return expired;
  });
  if (!old.empty()) reindex();
  if (!old.empty()) {
    int64_t first = old.front().event.seq, last = first;
    for (const auto& p : old) {
      first = std::min(first, p.event.seq);
      last = std::max(last, p.event.seq);
    }
    problem("unsigned", first, last, old.front().offset,
            std::to_string(old.size()) + " event(s) " + range(first, last) + " (from offset " + std::to_string(old.front().offset) +
                ") are not covered by any signed checkpoint " + std::to_string(opt_.max_unsigned_ms / 1000) +
                " s after they were written (the controller signs at least every checkpoint interval): a tail rewritten "
                "or cut after its last checkpoint, or forged events; they are not verified");
  }
  const bool any = st_.expected_seq > 0 || st_.checkpoint_time > 0 || !old.empty() || !st_.pending.empty();
  if (any && !stale_reported_ && now_ms - st_.checkpoint_time > opt_.max_unsigned_ms) {
    stale_reported_ = true;
    problem("stale", st_.checkpoint_seq, st_.checkpoint_seq, -1,
            st_.checkpoint_time == 0 ? std::string("no signed checkpoint was read at all: nothing on the topic can be verified")
                                     : "the newest signed checkpoint (event " + std::to_string(st_.checkpoint_seq) + ") was signed " +
                                           std::to_string((now_ms - st_.checkpoint_time) / 1000) +
                                           " s ago; the controller signs one at least every checkpoint interval while it runs: the tail "
                                           "after it was cut, or the controller is not publishing");
  }
  if (st_.pending.empty()) return {};
  int64_t first = st_.pending.front().event.seq, last = first;
  for (const auto& p : st_.pending) {
    first = std::min(first, p.event.seq);
    last = std::max(last, p.event.seq);
  }
  return std::to_string(st_.pending.size()) + " event(s) " + range(first, last) + " written in the last " +
         std::to_string(opt_.max_unsigned_ms / 1000) +
         " s are held back until a signed checkpoint covers them (not written to the output yet)";
}

}  // namespace cairn::audit
