// Every plan rejection reason, each with a real signed envelope.
#include "common/plan/verify_plan.h"

#include <catch2/catch.hpp>
#include <cctype>

#include "common/plan/envelope.h"
#include "plan_fixture.h"
#include "proto/protocol.h"

using namespace cairn;
using namespace cairn::plan;
using namespace cairn::plan::test;
using cairn::v1::ErrorCode;

namespace {

struct Env {
  SigningKey key = SigningKey::generate();
  TrustStore trust = trust_of(key);
  std::array<uint8_t, 32> me = agent_key(1);
  ReplayJournal journal;

  Verdict<VerifiedPlan> check(const Bytes& envelope, int64_t now = kNow) { return verify_plan(envelope, trust, me, now, journal); }
};

cairn::v1::SignedEnvelope parse(const Bytes& b) {
  cairn::v1::SignedEnvelope e;
  REQUIRE(e.ParseFromArray(b.data(), int(b.size())));
  return e;
}

Bytes serialize(const cairn::v1::SignedEnvelope& e) {
  std::string s = e.SerializeAsString();
  return Bytes(s.begin(), s.end());
}

void require_rejected(const Verdict<VerifiedPlan>& v, ErrorCode code) {
  INFO("message: " << v.message());
  REQUIRE_FALSE(v.ok());
  REQUIRE(error_code_name(v.code()) == error_code_name(code));
  // Reported to operators as is: lowercase, never empty.
  REQUIRE_FALSE(v.message().empty());
  REQUIRE(std::islower(static_cast<unsigned char>(v.message()[0])));
}

}  // namespace

TEST_CASE("a valid signed plan is accepted with its tasks") {
  Env env;
  auto v = env.check(sign_plan(env.key, make_plan("p1", 1)));
  REQUIRE(v.ok());
  REQUIRE(v->key_id == env.key.key_id());
  REQUIRE(v->plan.tasks_size() == 1);
  REQUIRE(v->plan.tasks(0).component() == "etc-files");
}

TEST_CASE("one byte changed in the payload is a bad signature") {
  Env env;
  auto e = parse(sign_plan(env.key, make_plan("p1", 1)));
  std::string payload = e.payload();
  payload[payload.size() / 2] ^= 0x01;
  e.set_payload(payload);
  require_rejected(env.check(serialize(e)), ErrorCode::ERROR_CODE_BAD_SIGNATURE);
}

TEST_CASE("one byte changed in the signature is a bad signature") {
  Env env;
  auto e = parse(sign_plan(env.key, make_plan("p1", 1)));
  std::string sig = e.signature();
  sig[7] ^= 0x80;
  e.set_signature(sig);
  require_rejected(env.check(serialize(e)), ErrorCode::ERROR_CODE_BAD_SIGNATURE);
}

TEST_CASE("a truncated signature is a bad signature") {
  Env env;
  auto e = parse(sign_plan(env.key, make_plan("p1", 1)));
  e.set_signature(e.signature().substr(0, 63));
  require_rejected(env.check(serialize(e)), ErrorCode::ERROR_CODE_BAD_SIGNATURE);
}

TEST_CASE("one byte changed in the payload type is a bad signature, not an unknown type") {
  Env env;
  auto e = parse(sign_plan(env.key, make_plan("p1", 1)));
  std::string type = e.payload_type();
  type.back() = type.back() == 'f' ? 'g' : 'f';
  e.set_payload_type(type);
  require_rejected(env.check(serialize(e)), ErrorCode::ERROR_CODE_BAD_SIGNATURE);
}

TEST_CASE("an envelope without a signature or key id is refused as unsigned") {
  Env env;
  auto e = parse(sign_plan(env.key, make_plan("p1", 1)));
  SECTION("no signature") { e.clear_signature(); }
  SECTION("no key id") { e.clear_key_id(); }
  require_rejected(env.check(serialize(e)), ErrorCode::ERROR_CODE_MISSING_SIGNATURE);
}

TEST_CASE("a plan signed by a key the agent does not trust is refused") {
  Env env;
  SigningKey stranger = SigningKey::generate();
  require_rejected(env.check(sign_plan(stranger, make_plan("p1", 1))), ErrorCode::ERROR_CODE_UNKNOWN_KEY);
}

TEST_CASE("a stranger's signature under a trusted key id is a bad signature") {
  Env env;
  SigningKey stranger = SigningKey::generate();
  auto e = parse(sign_plan(stranger, make_plan("p1", 1)));
  e.set_key_id(env.key.key_id());
  require_rejected(env.check(serialize(e)), ErrorCode::ERROR_CODE_BAD_SIGNATURE);
}

TEST_CASE("an expired plan is refused, at expires_at and after") {
  Env env;
  auto p = make_plan("p1", 1);
  Bytes b = sign_plan(env.key, p);
  require_rejected(env.check(b, p.expires_at()), ErrorCode::ERROR_CODE_EXPIRED);
  require_rejected(env.check(b, p.expires_at() + 86400), ErrorCode::ERROR_CODE_EXPIRED);
  REQUIRE(env.check(b, p.expires_at() - 1).ok());
}

TEST_CASE("a plan before its not_before is refused beyond the clock skew") {
  Env env;
  auto p = make_plan("p1", 1);
  p.set_not_before(kNow + 3600);
  p.set_expires_at(kNow + 7200);
  Bytes b = sign_plan(env.key, p);
  require_rejected(env.check(b), ErrorCode::ERROR_CODE_NOT_YET_VALID);
  // A controller clock 30 s ahead of the agent's is tolerated.
  REQUIRE(env.check(b, kNow + 3600 - 30).ok());
}

TEST_CASE("a plan for another agent is refused") {
  Env env;
  auto p = make_plan("p1", 1);
  auto other = agent_key(2);
  p.set_target_agent_key(other.data(), other.size());
  require_rejected(env.check(sign_plan(env.key, p)), ErrorCode::ERROR_CODE_WRONG_TARGET);
}

TEST_CASE("the same plan replayed after the agent restarts is refused") {
  TempDir dir;
  Env env;
  Bytes b = sign_plan(env.key, make_plan("p1", 1));
  {
    auto journal = ReplayJournal::open(dir.file("journal.json"));
    REQUIRE(accept_plan(b, env.trust, env.me, kNow, journal).ok());
  }
  auto reloaded = ReplayJournal::open(dir.file("journal.json"));
  auto v = accept_plan(b, env.trust, env.me, kNow + 5, reloaded);
  require_rejected(v, ErrorCode::ERROR_CODE_REPLAYED);
}

TEST_CASE("a new plan id that reuses an accepted nonce is refused as replayed") {
  Env env;
  auto first = make_plan("p1", 1);
  REQUIRE(accept_plan(sign_plan(env.key, first), env.trust, env.me, kNow, env.journal).ok());
  auto second = make_plan("p2", 2);
  second.set_nonce(first.nonce());
  require_rejected(env.check(sign_plan(env.key, second)), ErrorCode::ERROR_CODE_REPLAYED);
}

TEST_CASE("a plan whose sequence is not above the accepted one is refused") {
  TempDir dir;
  Env env;
  {
    auto journal = ReplayJournal::open(dir.file("journal.json"));
    REQUIRE(accept_plan(sign_plan(env.key, make_plan("p5", 5)), env.trust, env.me, kNow, journal).ok());
  }
  auto journal = ReplayJournal::open(dir.file("journal.json"));
  SECTION("lower") {
    require_rejected(verify_plan(sign_plan(env.key, make_plan("p4", 4)), env.trust, env.me, kNow, journal),
                     ErrorCode::ERROR_CODE_OLDER_SEQUENCE);
  }
  SECTION("equal") {
    require_rejected(verify_plan(sign_plan(env.key, make_plan("p5b", 5)), env.trust, env.me, kNow, journal),
                     ErrorCode::ERROR_CODE_OLDER_SEQUENCE);
  }
  SECTION("higher is fine") { REQUIRE(verify_plan(sign_plan(env.key, make_plan("p6", 6)), env.trust, env.me, kNow, journal).ok()); }
}

TEST_CASE("an old plan is still refused once its journal entry has expired") {
  // The clock stepped back after the entry was pruned: the sequence still holds.
  Env env;
  auto p = make_plan("p1", 1);
  Bytes b = sign_plan(env.key, p);
  REQUIRE(accept_plan(b, env.trust, env.me, kNow, env.journal).ok());
  env.journal.prune(p.expires_at() + 1);
  REQUIRE(env.journal.entries() == 0);
  require_rejected(env.check(b), ErrorCode::ERROR_CODE_OLDER_SEQUENCE);
}

TEST_CASE("a correctly signed envelope of an unknown payload type is refused") {
  Env env;
  std::string body = make_plan("p1", 1).SerializeAsString();
  SECTION("a type nobody knows") {
    require_rejected(env.check(sign_envelope(env.key, "application/x-shell-script", as_bytes(body))),
                     ErrorCode::ERROR_CODE_UNKNOWN_PAYLOAD_TYPE);
  }
  SECTION("a key announcement handed in as a plan") {
    require_rejected(env.check(sign_envelope(env.key, proto::kKeyAnnouncementPayloadType, as_bytes(body))),
                     ErrorCode::ERROR_CODE_UNKNOWN_PAYLOAD_TYPE);
  }
}

TEST_CASE("a correctly signed garbage payload is refused as malformed") {
  Env env;
  std::string garbage = "not a protobuf \xff\xff\xff\xff\xff\xff\xff\xff\xff\xff";
  require_rejected(env.check(sign_envelope(env.key, proto::kPlanPayloadType, as_bytes(garbage))), ErrorCode::ERROR_CODE_MALFORMED_PAYLOAD);
}

TEST_CASE("a signed payload that parses but breaks a rule is refused as malformed") {
  Env env;
  auto p = make_plan("p1", 1);
  SECTION("no tasks") { p.clear_tasks(); }
  SECTION("no plan id") { p.clear_plan_id(); }
  SECTION("short nonce") { p.set_nonce("1234"); }
  SECTION("sequence 0") { p.set_sequence(0); }
  SECTION("window inverted") { p.set_expires_at(p.not_before()); }
  SECTION("window too long") { p.set_expires_at(p.not_before() + 30 * 86400); }
  SECTION("restore without snapshot") { p.mutable_tasks(0)->set_kind(cairn::v1::TASK_KIND_RESTORE); }
  SECTION("duplicate task id") { *p.add_tasks() = p.tasks(0); }
  SECTION("task without a kind") { p.mutable_tasks(0)->set_kind(cairn::v1::TASK_KIND_UNSPECIFIED); }
  require_rejected(env.check(sign_plan(env.key, p)), ErrorCode::ERROR_CODE_MALFORMED_PAYLOAD);
}

TEST_CASE("bytes that are not an envelope are refused without a crash") {
  Env env;
  SECTION("garbage") {
    Bytes b{0xff, 0xff, 0xff, 0xff, 0x07};
    require_rejected(env.check(b), ErrorCode::ERROR_CODE_MALFORMED_ENVELOPE);
  }
  SECTION("empty is an envelope with nothing in it") { require_rejected(env.check(Bytes{}), ErrorCode::ERROR_CODE_MISSING_SIGNATURE); }
  SECTION("truncated") {
    Bytes b = sign_plan(env.key, make_plan("p1", 1));
    b.resize(b.size() - 10);
    auto v = env.check(b);
    REQUIRE_FALSE(v.ok());
  }
}

TEST_CASE("a rejected plan leaves the journal as it was") {
  Env env;
  auto v = accept_plan(sign_plan(env.key, make_plan("p1", 1)), env.trust, env.me, kNow + 10'000, env.journal);
  require_rejected(v, ErrorCode::ERROR_CODE_EXPIRED);
  REQUIRE(env.journal.entries() == 0);
  REQUIRE(env.journal.highest_sequence("ctl-test") == 0);
}

TEST_CASE("rejection codes keep their wire numbers") {
  // Agents and controllers of different versions exchange these numbers.
  REQUIRE(int(ErrorCode::ERROR_CODE_BAD_SIGNATURE) == 100);
  REQUIRE(int(ErrorCode::ERROR_CODE_MISSING_SIGNATURE) == 101);
  REQUIRE(int(ErrorCode::ERROR_CODE_UNKNOWN_KEY) == 102);
  REQUIRE(int(ErrorCode::ERROR_CODE_EXPIRED) == 103);
  REQUIRE(int(ErrorCode::ERROR_CODE_NOT_YET_VALID) == 104);
  REQUIRE(int(ErrorCode::ERROR_CODE_WRONG_TARGET) == 105);
  REQUIRE(int(ErrorCode::ERROR_CODE_REPLAYED) == 106);
  REQUIRE(int(ErrorCode::ERROR_CODE_OLDER_SEQUENCE) == 107);
  REQUIRE(int(ErrorCode::ERROR_CODE_UNKNOWN_PAYLOAD_TYPE) == 108);
  REQUIRE(int(ErrorCode::ERROR_CODE_MALFORMED_PAYLOAD) == 109);
  REQUIRE(int(ErrorCode::ERROR_CODE_MALFORMED_ENVELOPE) == 110);
  REQUIRE(error_code_name(ErrorCode::ERROR_CODE_OLDER_SEQUENCE) == "older_sequence");
  REQUIRE(error_code_name(ErrorCode(9999)) == "code_9999");
}
