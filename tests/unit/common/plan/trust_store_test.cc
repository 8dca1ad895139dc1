// Controller key rotation through signed key announcements.
#include "common/plan/trust_store.h"

#include <catch2/catch.hpp>

#include "common/plan/envelope.h"
#include "common/plan/signer.h"
#include "common/plan/verify_plan.h"
#include "plan_fixture.h"
#include "proto/protocol.h"

using namespace cairn;
using namespace cairn::plan;
using namespace cairn::plan::test;
using cairn::v1::ErrorCode;

namespace {

cairn::v1::KeyAnnouncement announce(const SigningKey& next, std::vector<std::string> retire = {}) {
  cairn::v1::KeyAnnouncement a;
  a.set_announcement_id("rot-" + next.key_id());
  a.set_new_public_key(next.public_key().data(), next.public_key().size());
  for (auto& r : retire) a.add_retire_key_ids(r);
  a.set_issued_at(kNow - 5);
  a.set_expires_at(kNow + 3600);
  return a;
}

}  // namespace

TEST_CASE("an announcement signed by a trusted key adds the new key, which then signs plans") {
  TempDir dir;
  SigningKey old_key = SigningKey::generate();
  SigningKey new_key = SigningKey::generate();
  auto trust = TrustStore::open(dir.file("keys.json"));
  REQUIRE(trust.add(old_key.public_key(), kNow, "config"));
  trust.save();

  auto change = trust.apply_announcement(sign_key_announcement(old_key, announce(new_key)), kNow);
  REQUIRE(change.ok());
  REQUIRE(change->added_key_id == new_key.key_id());
  REQUIRE(change->signed_by == old_key.key_id());
  REQUIRE(trust.find(new_key.key_id()) != nullptr);
  REQUIRE(trust.find(old_key.key_id()) != nullptr);

  // Survives a restart, and the new key's plans are accepted.
  auto reloaded = TrustStore::open(dir.file("keys.json"));
  REQUIRE(reloaded.size() == 2);
  ReplayJournal journal;
  auto me = agent_key(1);
  REQUIRE(verify_plan(sign_plan(new_key, make_plan("p1", 1)), reloaded, me, kNow, journal).ok());
}

TEST_CASE("rotation can retire the old key, which is then refused for good") {
  TempDir dir;
  SigningKey old_key = SigningKey::generate();
  SigningKey new_key = SigningKey::generate();
  auto trust = TrustStore::open(dir.file("keys.json"));
  trust.add(old_key.public_key(), kNow, "config");

  auto change = trust.apply_announcement(sign_key_announcement(old_key, announce(new_key, {old_key.key_id()})), kNow);
  REQUIRE(change.ok());
  REQUIRE(change->retired == std::vector<std::string>{old_key.key_id()});
  REQUIRE(trust.key_ids() == std::vector<std::string>{new_key.key_id()});

  ReplayJournal journal;
  auto me = agent_key(1);
  auto v = verify_plan(sign_plan(old_key, make_plan("p1", 1)), trust, me, kNow, journal);
  REQUIRE(v.code() == ErrorCode::ERROR_CODE_UNKNOWN_KEY);
  REQUIRE_THAT(v.message(), Catch::Contains("retired"));

  // Configuration cannot bring it back, nor can an announcement by the new key.
  auto reloaded = TrustStore::open(dir.file("keys.json"));
  REQUIRE_FALSE(reloaded.add(old_key.public_key(), kNow, "config"));
  auto back = reloaded.apply_announcement(sign_key_announcement(new_key, announce(old_key)), kNow);
  REQUIRE(back.code() == ErrorCode::ERROR_CODE_KEY_RETIRED);
}

TEST_CASE("an announcement signed by an untrusted key is refused and changes nothing") {
  SigningKey trusted = SigningKey::generate();
  SigningKey attacker = SigningKey::generate();
  TrustStore trust = trust_of(trusted);
  auto v = trust.apply_announcement(sign_key_announcement(attacker, announce(attacker, {trusted.key_id()})), kNow);
  REQUIRE(v.code() == ErrorCode::ERROR_CODE_UNKNOWN_KEY);
  REQUIRE(trust.key_ids() == std::vector<std::string>{trusted.key_id()});
}

TEST_CASE("a tampered, expired or mistyped announcement is refused") {
  SigningKey trusted = SigningKey::generate();
  SigningKey next = SigningKey::generate();
  TrustStore trust = trust_of(trusted);
  SECTION("tampered new key") {
    Bytes b = sign_key_announcement(trusted, announce(next));
    cairn::v1::SignedEnvelope e;
    REQUIRE(e.ParseFromArray(b.data(), int(b.size())));
    std::string payload = e.payload();
    payload[payload.size() - 20] ^= 1;
    e.set_payload(payload);
    std::string s = e.SerializeAsString();
    REQUIRE(trust.apply_announcement(as_bytes(s), kNow).code() == ErrorCode::ERROR_CODE_BAD_SIGNATURE);
  }
  SECTION("expired") {
    REQUIRE(trust.apply_announcement(sign_key_announcement(trusted, announce(next)), kNow + 3600).code() == ErrorCode::ERROR_CODE_EXPIRED);
  }
  SECTION("a plan envelope handed in as an announcement") {
    REQUIRE(trust.apply_announcement(sign_plan(trusted, make_plan("p1", 1)), kNow).code() == ErrorCode::ERROR_CODE_UNKNOWN_PAYLOAD_TYPE);
  }
  SECTION("a key of the wrong size") {
    auto a = announce(next);
    a.set_new_public_key("short");
    REQUIRE(trust.apply_announcement(sign_key_announcement(trusted, a), kNow).code() == ErrorCode::ERROR_CODE_MALFORMED_PAYLOAD);
  }
  REQUIRE(trust.find(next.key_id()) == nullptr);
}

TEST_CASE("replaying an announcement is harmless") {
  SigningKey trusted = SigningKey::generate();
  SigningKey next = SigningKey::generate();
  TrustStore trust = trust_of(trusted);
  Bytes b = sign_key_announcement(trusted, announce(next));
  REQUIRE(trust.apply_announcement(b, kNow).ok());
  auto again = trust.apply_announcement(b, kNow + 1);
  REQUIRE(again.ok());
  REQUIRE(again->added_key_id.empty());
  REQUIRE(trust.size() == 2);
}
