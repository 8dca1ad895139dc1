// The audit topic's verifier (common/audit/verifier.h) on records in memory:
// a clean chain with checkpoints verifies; each kind of tampering is reported
// as exactly that, naming the event's seq; a rotated key is followed through
// its announcement. The real broker round trips are in
// tests/integration/test_audit_kafka.py.
#include "common/audit/verifier.h"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/audit/topic.h"
#include "common/plan/signer.h"
#include "common/plan/signing_key.h"
#include "common/plan/trust_store.h"
#include "proto/cairn.pb.h"

using namespace cairn;
using namespace cairn::audit;

namespace {

struct Topic {
  std::vector<std::string> values;
  std::vector<AuditEvent> events;
  plan::SigningKey key = plan::SigningKey::generate();

  AuditEvent make(int64_t seq) {
    AuditEvent e;
    e.event_id = "ev" + std::to_string(seq);
    e.seq = seq;
    e.time = 1'700'000'000'000 + seq;
    e.actor = "operator:alice";
    e.action = "backup.create";
    e.target = "set:bs-" + std::to_string(seq);
    e.outcome = "ok";
    e.details = "{\"n\":" + std::to_string(seq) + "}";
    e.prev_hash = events.empty() ? kGenesisHash : events.back().hash;
    e.hash = audit_hash(e);
    return e;
  }
  void event() {
    events.push_back(make(int64_t(events.size()) + 1));
    values.push_back(encode_event(events.back()));
  }
  Checkpoint checkpoint_for(const plan::SigningKey& k, int64_t seq, const std::string& hash) {
    Checkpoint c;
    c.seq = seq;
    c.hash = hash;
    c.time = 1'700'000'100'000;
    c.key_id = k.key_id();
    c.public_key = plan::format_public_key(k.public_key());
    c.signature = to_base64(k.sign(checkpoint_signing_bytes(c.seq, c.hash, c.time)));
    return c;
  }
  void checkpoint() { values.push_back(encode_checkpoint(checkpoint_for(key, events.back().seq, events.back().hash))); }
};

struct Run {
  std::vector<int64_t> seqs;  // verified events, in order
  std::vector<Problem> problems;
  int64_t checkpoints = 0;
};

Run verify(const std::vector<std::string>& values, plan::TrustStore& trust) {
  Verifier v(trust);
  Run r;
  for (size_t i = 0; i < values.size(); ++i)
    v.feed(int64_t(i), kRecordKey, values[i], [&](const AuditEvent& e, int64_t) { r.seqs.push_back(e.seq); });
  r.problems = v.problems();
  r.checkpoints = v.checkpoints_verified();
  return r;
}

plan::TrustStore trusting(const plan::SigningKey& k) {
  plan::TrustStore t;
  t.add(k.public_key(), 1'700'000'000, "test");
  return t;
}

Topic ten_events() {
  Topic t;
  for (int i = 0; i < 10; ++i) {
    t.event();
    if (i % 4 == 3) t.checkpoint();
  }
  t.checkpoint();
  return t;
}

}  // namespace

TEST_CASE("a clean audit topic verifies: every event in order, every checkpoint", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  Run r = verify(t.values, trust);
  CHECK(r.problems.empty());
  CHECK(r.seqs == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  CHECK(r.checkpoints == 3);
}

TEST_CASE("a removed event is a gap naming its seq", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  std::vector<std::string> v = t.values;
  v.erase(v.begin() + 5);  // event 5 (after the checkpoint at index 4)
  Run r = verify(v, trust);
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].kind == "gap");
  CHECK(r.problems[0].first_seq == 5);
  CHECK(r.problems[0].last_seq == 5);
}

TEST_CASE("an altered event is reported as altered, and the genuine chain goes on", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  AuditEvent forged = t.events[6];  // seq 7
  forged.outcome = "failed";        // content changed, hash kept
  std::vector<std::string> v = t.values;
  v.insert(v.begin() + 8, encode_event(forged));  // before the genuine 7
  Run r = verify(v, trust);
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].kind == "altered");
  CHECK(r.problems[0].first_seq == 7);
  CHECK(r.seqs.size() == 10);
}

TEST_CASE("a replayed event is a duplicate naming its seq", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  std::vector<std::string> v = t.values;
  v.push_back(encode_event(t.events[2]));  // seq 3 again at the end
  Run r = verify(v, trust);
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].kind == "duplicate");
  CHECK(r.problems[0].first_seq == 3);
}

TEST_CASE("events out of order are reported as reordered, and the checkpoint still verifies them all", "[audit]") {
  Topic t;
  for (int i = 0; i < 5; ++i) t.event();
  t.checkpoint();
  auto trust = trusting(t.key);
  std::vector<std::string> v = t.values;
  std::swap(v[2], v[3]);  // 1 2 4 3 5
  Run r = verify(v, trust);
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].kind == "reordered");
  CHECK(r.problems[0].first_seq == 3);
  CHECK(r.seqs == std::vector<int64_t>{1, 2, 3, 4, 5});
}

TEST_CASE("nothing is verified before a signed checkpoint covers it", "[audit]") {
  Topic t;
  for (int i = 0; i < 5; ++i) t.event();
  auto trust = trusting(t.key);
  Verifier v(trust);
  std::vector<int64_t> seqs;
  for (size_t i = 0; i < t.values.size(); ++i)
    v.feed(int64_t(i), kRecordKey, t.values[i], [&](const AuditEvent& e, int64_t) { seqs.push_back(e.seq); });
  CHECK(seqs.empty());
  CHECK(v.problems().empty());
  CHECK(v.state().pending.size() == 5);
  // Soon after they were written: held back, not a problem yet... (no checkpoint at all is stale, though)
  std::string note = v.expire(t.events.back().time + 1000);
  CHECK(note.find("5 event(s) 1..5") != std::string::npos);
  REQUIRE(v.problems().size() == 1);
  CHECK(v.problems()[0].kind == "stale");
  // ...and past the limit they are a problem: a chain rebuilt from genesis with no checkpoint at all.
  note = v.expire(t.events.back().time + 121'000);
  CHECK(note.empty());
  REQUIRE(v.problems().size() == 2);
  CHECK(v.problems()[1].kind == "unsigned");
  CHECK(v.problems()[1].first_seq == 1);
  CHECK(v.problems()[1].last_seq == 5);
  CHECK(v.state().pending.empty());
}

TEST_CASE("the newest checkpoint too old is stale: a tail cut right after a checkpoint", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  Verifier v(trust);
  for (size_t i = 0; i < t.values.size(); ++i) v.feed(int64_t(i), kRecordKey, t.values[i], [](const AuditEvent&, int64_t) {});
  CHECK(v.expire(1'700'000'100'000 + 60'000).empty());
  CHECK(v.problems().empty());
  CHECK(v.expire(1'700'000'100'000 + 121'000).empty());
  REQUIRE(v.problems().size() == 1);
  CHECK(v.problems()[0].kind == "stale");
  CHECK(v.problems()[0].first_seq == 10);
  v.expire(1'700'000'100'000 + 200'000);
  CHECK(v.problems().size() == 1);  // said once
}

TEST_CASE("two events with one seq: both reported, the checkpoint decides, the forged one never verifies", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  AuditEvent forged = t.events[6];  // seq 7, placed before the genuine one, consistent hash
  forged.actor = "operator:mallory";
  forged.hash = audit_hash(forged);
  std::vector<std::string> v = t.values;
  v.insert(v.begin() + 8, encode_event(forged));  // index 8: the genuine event 7 follows
  Verifier ver(trust);
  std::vector<AuditEvent> out;
  for (size_t i = 0; i < v.size(); ++i) ver.feed(int64_t(i), kRecordKey, v[i], [&](const AuditEvent& e, int64_t) { out.push_back(e); });
  REQUIRE(ver.problems().size() == 2);
  CHECK(ver.problems()[0].kind == "conflict");
  CHECK(ver.problems()[0].first_seq == 7);
  CHECK(ver.problems()[1].kind == "forged");
  CHECK(ver.problems()[1].offset == 8);
  REQUIRE(out.size() == 10);
  CHECK(out[6].actor == "operator:alice");
  CHECK(out[6].hash == t.events[6].hash);
}

TEST_CASE("a head removed is a problem unless the reader was told where the trail starts", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  // Events 1..5 and the first checkpoint gone (DeleteRecords): the topic starts at event 6.
  std::vector<std::string> v(t.values.begin() + 6, t.values.end());
  Run r = verify(v, trust);
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].kind == "gap");
  CHECK(r.problems[0].first_seq == 1);
  CHECK(r.problems[0].last_seq == 5);
  CHECK(r.problems[0].message.find("--from-seq 6") != std::string::npos);
  CHECK(r.seqs == std::vector<int64_t>{6, 7, 8, 9, 10});

  auto trust2 = trusting(t.key);
  VerifierOptions o;
  o.from_seq = 6;
  Verifier from6(trust2, {}, o);
  std::vector<int64_t> seqs;
  for (size_t i = 0; i < v.size(); ++i)
    from6.feed(int64_t(i), kRecordKey, v[i], [&](const AuditEvent& e, int64_t) { seqs.push_back(e.seq); });
  CHECK(from6.problems().empty());
  CHECK(seqs == std::vector<int64_t>{6, 7, 8, 9, 10});
}

TEST_CASE("a reader resumed from its state verifies what was pending when it stopped", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  // Stops after event 10, before its checkpoint: 9 and 10 pending.
  Verifier first(trust);
  std::vector<int64_t> seqs;
  auto out = [&](const AuditEvent& e, int64_t) { seqs.push_back(e.seq); };
  for (size_t i = 0; i + 1 < t.values.size(); ++i) first.feed(int64_t(i), kRecordKey, t.values[i], out);
  CHECK(seqs.size() == 8);
  VerifierState st = first.state();
  CHECK(st.pending.size() == 2);
  Verifier second(trust, st);
  second.feed(int64_t(t.values.size() - 1), kRecordKey, t.values.back(), out);
  CHECK(second.problems().empty());
  CHECK(seqs == std::vector<int64_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
}

TEST_CASE("a rewritten chain with recomputed hashes is caught by the signed checkpoint", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  // Rebuild events 9 and 10 with other content and consistent hashes: the chain
  // alone cannot tell, the controller's signature over event 10's hash can.
  Topic forged;
  for (int i = 0; i < 8; ++i) forged.events.push_back(t.events[size_t(i)]);
  std::vector<std::string> v(t.values.begin(), t.values.begin() + 10);  // 8 events, 2 checkpoints
  for (int s = 9; s <= 10; ++s) {
    AuditEvent e = forged.make(s);
    e.outcome = "forged";
    e.hash = audit_hash(e);
    forged.events.push_back(e);
    v.push_back(encode_event(e));
  }
  v.push_back(t.values.back());  // the genuine final checkpoint
  Run r = verify(v, trust);
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].kind == "checkpoint_mismatch");
  CHECK(r.problems[0].first_seq == 10);
}

TEST_CASE("a truncated tail is caught by a checkpoint naming events the topic lacks", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  std::vector<std::string> v = t.values;
  v.erase(v.end() - 3, v.end() - 1);  // events 9 and 10 gone, their checkpoint kept
  Run r = verify(v, trust);
  REQUIRE(r.problems.size() == 1);
  CHECK(r.problems[0].kind == "truncated");
  CHECK(r.problems[0].first_seq == 9);
  CHECK(r.problems[0].last_seq == 10);
}

TEST_CASE("a checkpoint signed by an untrusted key, or with a bad signature, is refused", "[audit]") {
  Topic t = ten_events();
  plan::SigningKey other = plan::SigningKey::generate();
  auto trust = trusting(other);
  Run r = verify(t.values, trust);
  REQUIRE(r.problems.size() == 3);
  CHECK(r.problems[0].kind == "checkpoint_key");

  auto trust2 = trusting(t.key);
  Checkpoint c = t.checkpoint_for(t.key, 10, t.events[9].hash);
  c.time += 1;  // signature no longer covers it
  std::vector<std::string> v = t.values;
  v.push_back(encode_checkpoint(c));
  Run r2 = verify(v, trust2);
  REQUIRE(r2.problems.size() == 1);
  CHECK(r2.problems[0].kind == "checkpoint_signature");
}

TEST_CASE("a key rotation is followed through the announcement the new key's checkpoint carries", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  plan::SigningKey next = plan::SigningKey::generate();
  cairn::v1::KeyAnnouncement a;
  a.set_announcement_id("ka-1");
  a.set_new_public_key(std::string(next.public_key().begin(), next.public_key().end()));
  a.set_issued_at(1'700'000'000);
  a.set_expires_at(1'800'000'000);
  Bytes env = plan::sign_key_announcement(t.key, a);
  t.event();
  Checkpoint c = t.checkpoint_for(next, 11, t.events[10].hash);
  c.announcements.push_back(to_base64(env));
  t.values.push_back(encode_checkpoint(c));
  Run r = verify(t.values, trust);
  CHECK(r.problems.empty());
  CHECK(r.checkpoints == 4);
  CHECK(trust.find(next.key_id()) != nullptr);

  // The same checkpoint without the announcement is refused.
  t.values.back() = encode_checkpoint(t.checkpoint_for(next, 11, t.events[10].hash));
  auto fresh = trusting(t.key);
  Run r2 = verify(t.values, fresh);
  REQUIRE(r2.problems.size() == 1);
  CHECK(r2.problems[0].kind == "checkpoint_key");
}

TEST_CASE("a record that is not an audit record is reported as malformed", "[audit]") {
  Topic t = ten_events();
  auto trust = trusting(t.key);
  std::vector<std::string> v = t.values;
  v.insert(v.begin() + 3, "{\"hello\": 1}");
  v.insert(v.begin() + 3, "not json");
  Run r = verify(v, trust);
  REQUIRE(r.problems.size() == 2);
  CHECK(r.problems[0].kind == "malformed");
  CHECK(r.problems[1].kind == "malformed");
  CHECK(r.seqs.size() == 10);
}

TEST_CASE("a long unsigned stretch and a flood of forgeries at one seq are read in linear time", "[audit]") {
  // 200,000 events before the first checkpoint, then 50,000 forged events all
  // claiming seq 7. Each lookup of a pending event by seq or hash is indexed:
  // with the linear scans of before, this case was ~10^10 comparisons (minutes);
  // now it takes a fraction of a second, and every genuine event verifies.
  // The sanitizer build runs the same paths at a tenth of the size (60 s at
  // full size there; the normal build is what would time out on a quadratic).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  constexpr int kGenuine = 20'000, kForged = 5'000;
#else
  constexpr int kGenuine = 200'000, kForged = 50'000;
#endif
  Topic t;
  for (int i = 0; i < kGenuine; ++i) t.event();
  std::vector<std::string> v = t.values;
  for (int i = 0; i < kForged; ++i) {
    AuditEvent f = t.events[6];
    f.details = "{\"forged\":" + std::to_string(i) + "}";
    f.hash = audit_hash(f);
    v.push_back(encode_event(f));
  }
  v.push_back(encode_checkpoint(t.checkpoint_for(t.key, t.events.back().seq, t.events.back().hash)));
  auto trust = trusting(t.key);
  Run r = verify(v, trust);
  REQUIRE(r.seqs.size() == size_t(kGenuine));
  CHECK(r.seqs.front() == 1);
  CHECK(r.seqs.back() == int64_t(kGenuine));
  size_t conflicts = 0, forged = 0;
  for (const auto& p : r.problems) {
    conflicts += p.kind == "conflict";
    forged += p.kind == "forged";
    CHECK(p.first_seq == 7);
  }
  CHECK(conflicts == size_t(kForged));
  CHECK(forged == size_t(kForged));
}
