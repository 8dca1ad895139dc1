// The plan path through the agent's gate with real signed envelopes,
// including a restart: the replay journal on disk still refuses old plans.
#include "agent/plan_gate.h"

#include <catch2/catch.hpp>
#include <chrono>

#include "agent/config.h"
#include "agent/curve_identity.h"
#include "agent_fixture.h"
#include "common/plan/signer.h"
#include "common/plan/signing_key.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::test;
namespace v1 = cairn::v1;

namespace {

int64_t now_s() { return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }

v1::PlanPayload make_plan(const std::string& id, uint64_t seq, const CurveIdentity& agent, int64_t now) {
  v1::PlanPayload p;
  p.set_plan_id(id);
  p.set_target_agent_key(agent.public_raw.data(), agent.public_raw.size());
  p.set_issued_at(now - 5);
  p.set_not_before(now - 5);
  p.set_expires_at(now + 600);
  p.set_sequence(seq);
  p.set_controller_id("ctl-1");
  plan::set_random_nonce(p);
  auto* t = p.add_tasks();
  t->set_task_id(id + "-t1");
  t->set_component("data");
  t->set_kind(v1::TASK_KIND_BACKUP);
  return p;
}

struct Env {
  TempDir d;
  plan::SigningKey key = plan::SigningKey::generate();
  AgentConfig config;
  CurveIdentity me;

  Env() {
    config = parse_config(base_config(d, plan::format_public_key(key.public_key())), "agent.toml");
    me = load_or_create_identity(config.key_dir);
  }
  PlanGate gate() {
    return PlanGate(config.replay_journal, config.trust_store, load_signing_keys(config.signing_keys_file), me.public_raw, now_s());
  }
};

}  // namespace

TEST_CASE("the agent keypair is created once, 0600, and loaded afterwards") {
  TempDir d;
  bool created = false;
  CurveIdentity a = load_or_create_identity(d.file("keys"), &created);
  REQUIRE(created);
  struct stat st {};
  REQUIRE(::stat(d.file("keys/agent.key").c_str(), &st) == 0);
  REQUIRE((st.st_mode & 0777) == 0600);
  CurveIdentity b = load_or_create_identity(d.file("keys"), &created);
  REQUIRE_FALSE(created);
  REQUIRE(a.public_z85 == b.public_z85);
  REQUIRE(a.public_raw == b.public_raw);
}

TEST_CASE("a signed plan is accepted; replayed after a restart it is refused") {
  Env env;
  auto plan = make_plan("plan-1", 1, env.me, now_s());
  Bytes envelope = plan::sign_plan(env.key, plan);
  {
    PlanGate gate = env.gate();
    PlanDecision d = gate.on_plan(envelope, now_s());
    INFO(d.ack.detail());
    REQUIRE(d.ack.accepted());
    REQUIRE(d.ack.reason() == v1::ERROR_CODE_OK);
    REQUIRE(d.ack.plan_id() == "plan-1");
    REQUIRE(d.ack.sequence() == 1);
    REQUIRE(d.ack.envelope_digest().size() == 32);
    REQUIRE(d.plan);
    REQUIRE(gate.highest_sequence() == 1);
    // The same bytes again, in the same process.
    REQUIRE(gate.on_plan(envelope, now_s()).ack.reason() == v1::ERROR_CODE_REPLAYED);
  }
  // "Restart": a new gate over the same files.
  PlanGate again = env.gate();
  REQUIRE(again.highest_sequence() == 1);
  PlanDecision d = again.on_plan(envelope, now_s());
  REQUIRE_FALSE(d.ack.accepted());
  REQUIRE(d.ack.reason() == v1::ERROR_CODE_REPLAYED);
  REQUIRE_FALSE(d.plan);
  // A fresh plan with an old sequence is refused too.
  auto old = make_plan("plan-0", 1, env.me, now_s());
  REQUIRE(again.on_plan(plan::sign_plan(env.key, old), now_s()).ack.reason() == v1::ERROR_CODE_OLDER_SEQUENCE);
  // And the next one is fine.
  REQUIRE(again.on_plan(plan::sign_plan(env.key, make_plan("plan-2", 2, env.me, now_s())), now_s()).ack.accepted());
}

TEST_CASE("plans from an unknown key, for another agent, or garbage are refused with their reason") {
  Env env;
  PlanGate gate = env.gate();
  auto stranger = plan::SigningKey::generate();
  REQUIRE(gate.on_plan(plan::sign_plan(stranger, make_plan("p1", 1, env.me, now_s())), now_s()).ack.reason() == v1::ERROR_CODE_UNKNOWN_KEY);

  CurveIdentity other;
  other.public_raw.fill(7);
  REQUIRE(gate.on_plan(plan::sign_plan(env.key, make_plan("p2", 1, other, now_s())), now_s()).ack.reason() == v1::ERROR_CODE_WRONG_TARGET);

  Bytes junk = {1, 2, 3, 0xff, 0x00, 0x17};
  auto d = gate.on_plan(junk, now_s());
  REQUIRE_FALSE(d.ack.accepted());
  REQUIRE(d.ack.plan_id().empty());
  REQUIRE(d.ack.reason() == v1::ERROR_CODE_MALFORMED_ENVELOPE);
  REQUIRE(gate.highest_sequence() == 0);
}

TEST_CASE("a journal that does not parse refuses every plan with 'internal'") {
  Env env;
  write_text(env.config.replay_journal, "{ not json");
  PlanGate gate = env.gate();
  REQUIRE_FALSE(gate.broken().empty());
  auto d = gate.on_plan(plan::sign_plan(env.key, make_plan("p1", 1, env.me, now_s())), now_s());
  REQUIRE_FALSE(d.ack.accepted());
  REQUIRE(d.ack.reason() == v1::ERROR_CODE_INTERNAL);
  REQUIRE_THAT(d.ack.detail(), Catch::Contains("replay journal"));
}

TEST_CASE("a key announcement signed by a trusted key adds the new key, and it survives a restart") {
  Env env;
  auto next = plan::SigningKey::generate();
  v1::KeyAnnouncement a;
  a.set_announcement_id("rot-1");
  a.set_new_public_key(next.public_key().data(), next.public_key().size());
  a.set_issued_at(now_s() - 5);
  a.set_expires_at(now_s() + 600);
  {
    PlanGate gate = env.gate();
    auto ack = gate.on_key_announcement(plan::sign_key_announcement(env.key, a), now_s());
    INFO(ack.detail());
    REQUIRE(ack.accepted());
    REQUIRE(ack.announcement_id() == "rot-1");
  }
  PlanGate again = env.gate();
  REQUIRE(again.on_plan(plan::sign_plan(next, make_plan("p1", 1, env.me, now_s())), now_s()).ack.accepted());
}

TEST_CASE("the signing keys file is read line by line, with the line of a bad entry") {
  TempDir d;
  auto k = plan::SigningKey::generate();
  write_text(d.file("keys"), "# comment\n\n" + plan::format_public_key(k.public_key()) + "\nnot-a-key\n");
  try {
    load_signing_keys(d.file("keys"));
    FAIL("accepted");
  } catch (const ConfigError& e) {
    REQUIRE(e.line() == 4);
  }
}
