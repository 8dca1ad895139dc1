// Controller key rotation: the announcement verifies under the old key and
// brings an agent's trust store over; a crash at each step either completes
// at the next start or leaves the old key in charge.
#include "controller/key_rotation.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include "common/plan/signer.h"
#include "common/plan/trust_store.h"
#include "common/plan/verify_plan.h"
#include "common/util/error.h"
#include "controller/catalog/catalog_fixture.h"
#include "controller/keyfiles.h"

using namespace cairn;
using namespace cairn::controller;

namespace {

struct Keys {
  catalog::test::TempDir dir;
  std::string key_dir = dir.file("keys");
  catalog::Catalog cat = catalog::Catalog::open(dir.file("catalog.db"));
  Keys() { init_keys(key_dir); }
  std::string key_path() const { return key_dir + "/" + kSigningKeyFile; }
  bool exists(const std::string& p) const {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0;
  }
  std::string state_of(const std::string& id) {
    auto k = cat.read([&](const catalog::Tx& tx) { return tx.controller_key(id); });
    return k ? k->state : "absent";
  }
};

int64_t now_s() { return int64_t(::time(nullptr)); }

}  // namespace

TEST_CASE("a rotation replaces the key file, retires the old key, and its announcement moves an agent over") {
  Keys k;
  auto key = load_signing_key(k.cat, k.key_dir);
  const std::string old_id = key.key_id();
  CHECK(k.state_of(old_id) == "active");
  plan::TrustStore agent;  // an agent that trusts the old key from its configuration
  agent.add(key.public_key(), now_s(), "config");

  auto r = rotate_signing_key(k.cat, k.key_dir, key, 30 * 86400, "operator:test");
  CHECK(r.old_key_id == old_id);
  CHECK(key.key_id() == r.new_key_id);
  CHECK(r.new_key_id != old_id);
  CHECK(k.state_of(old_id) == "retired");
  CHECK(k.state_of(r.new_key_id) == "active");
  CHECK(plan::SigningKey::load(k.key_path()).key_id() == r.new_key_id);  // the old secret is gone
  CHECK_FALSE(k.exists(k.key_path() + ".next"));

  auto anns = k.cat.read([](const catalog::Tx& tx) { return tx.key_announcements(); });
  REQUIRE(anns.size() == 1);
  CHECK(anns[0].signed_by == old_id);
  auto change = agent.apply_announcement(anns[0].envelope, now_s());
  REQUIRE(change.ok());
  CHECK(agent.find(r.new_key_id));
  CHECK_FALSE(agent.find(old_id));

  // A restart loads the new key; the old one cannot be put back.
  auto again = load_signing_key(k.cat, k.key_dir);
  CHECK(again.key_id() == r.new_key_id);
}

TEST_CASE("unanswered plans are re-signed with the new key") {
  Keys k;
  auto key = load_signing_key(k.cat, k.key_dir);
  std::string agent_id, plan_id;
  std::array<uint8_t, 32> agent_key{};
  agent_key[0] = 7;
  k.cat.transaction("test", [&](catalog::Tx& tx) {
    agent_id = tx.enrol_agent("node-a", agent_key, "host", "v");
    tx.set_agent_state(agent_id, catalog::AgentState::approved);
    tx.set_agent_components(agent_id, {{"data", "files", true}});
    catalog::NewBackupSet set;
    set.tasks.push_back({agent_id, "data", std::nullopt});
    auto set_id = tx.create_backup_set(set);
    catalog::NewPlan np;
    for (const auto& t : tx.tasks_of_set(set_id)) np.task_ids.push_back(t.id);
    np.plan_id = plan_id = "pl-1";
    np.agent_id = agent_id;
    np.key_id = key.key_id();
    np.issued_at = np.not_before = tx.now();
    np.expires_at = tx.now() + 3600;
    uint64_t seq = tx.issue_plan(np);
    v1::PlanPayload p;
    p.set_plan_id(plan_id);
    p.set_target_agent_key(std::string(agent_key.begin(), agent_key.end()));
    p.set_issued_at(np.issued_at);
    p.set_not_before(np.not_before);
    p.set_expires_at(np.expires_at);
    p.set_sequence(seq);
    p.set_controller_id("c");
    auto* t = p.add_tasks();
    t->set_task_id(np.task_ids.at(0));
    t->set_component("data");
    t->set_kind(v1::TASK_KIND_BACKUP);
    plan::set_random_nonce(p);
    tx.set_plan_envelope(plan_id, plan::sign_plan(key, p));
  });
  auto r = rotate_signing_key(k.cat, k.key_dir, key, 86400, "operator:test");
  CHECK(r.plans_resigned == 1);
  auto plan = k.cat.read([&](const catalog::Tx& tx) { return tx.plan(plan_id); });
  REQUIRE(plan);
  CHECK(plan->key_id == r.new_key_id);
  plan::TrustStore trust;
  trust.add(key.public_key(), now_s(), "config");  // only the new key
  plan::ReplayJournal journal;
  auto v = plan::verify_plan(plan->envelope, trust, agent_key, now_s(), journal);
  INFO((v.ok() ? std::string() : v.message()));
  CHECK(v.ok());
}

TEST_CASE("a rotation interrupted before the catalog knew of it leaves the old key in charge") {
  Keys k;
  auto key = load_signing_key(k.cat, k.key_dir);
  const std::string old_id = key.key_id();
  // Step 1 done, crash before step 2: a stray .next file.
  plan::SigningKey::generate().save(k.key_path() + ".next");
  auto loaded = load_signing_key(k.cat, k.key_dir);
  CHECK(loaded.key_id() == old_id);
  CHECK(k.state_of(old_id) == "active");
  CHECK_FALSE(k.exists(k.key_path() + ".next"));
}

TEST_CASE("a rotation interrupted after the catalog recorded it completes at the next start") {
  Keys k;
  auto key = load_signing_key(k.cat, k.key_dir);
  const std::string old_id = key.key_id();
  auto nk = plan::SigningKey::generate();
  nk.save(k.key_path() + ".next");
  SECTION("crash after step 2 (new key standby, file not yet installed)") {
    k.cat.transaction("test", [&](catalog::Tx& tx) { tx.add_controller_key(nk.key_id(), nk.public_key(), false); });
  }
  SECTION("crash after step 3 (file installed, catalog not yet switched)") {
    k.cat.transaction("test", [&](catalog::Tx& tx) { tx.add_controller_key(nk.key_id(), nk.public_key(), false); });
    REQUIRE(::rename((k.key_path() + ".next").c_str(), k.key_path().c_str()) == 0);
  }
  auto loaded = load_signing_key(k.cat, k.key_dir);
  CHECK(loaded.key_id() == nk.key_id());
  CHECK(k.state_of(nk.key_id()) == "active");
  CHECK(k.state_of(old_id) == "retired");
  CHECK_FALSE(k.exists(k.key_path() + ".next"));
}

TEST_CASE("a retired key put back on disk is refused at start with the reason") {
  Keys k;
  auto key = load_signing_key(k.cat, k.key_dir);
  // Keep a copy of the old secret, rotate, then put the copy back.
  std::string copy = k.dir.file("old.key");
  key.save(copy);
  auto r = rotate_signing_key(k.cat, k.key_dir, key, 86400, "operator:test");
  REQUIRE(::rename(copy.c_str(), k.key_path().c_str()) == 0);
  try {
    load_signing_key(k.cat, k.key_dir);
    FAIL("a retired key was loaded");
  } catch (const Error& e) {
    CHECK(std::string(e.what()).find("retired") != std::string::npos);
    CHECK(std::string(e.what()).find(r.old_key_id) != std::string::npos);
  }
}
