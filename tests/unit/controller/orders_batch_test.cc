// An order over many agents signs its plans on several threads while it
// writes their rows (controller/orders.cc, PlanBatch): every plan must still
// verify under the controller's key, name its own agent, carry its own tasks
// and the next sequence number of its agent, exactly as one signed alone.
#include <catch2/catch.hpp>
#include <map>
#include <set>

#include "common/plan/envelope.h"
#include "common/plan/trust_store.h"
#include "controller/catalog/catalog_fixture.h"
#include "controller/orders.h"
#include "proto/protocol.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

namespace {

struct ManyAgents : Fixture {
  controller::ControllerConfig config;
  plan::SigningKey key = plan::SigningKey::generate();
  controller::Orders orders{cat, config, key};
  std::vector<std::string> agents;

  explicit ManyAgents(int n) {
    config.controller_id = "test";
    for (int i = 0; i < n; ++i) {
      auto id = approved_agent("node-" + std::to_string(i), uint8_t(i + 1));
      cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(id, {{"data", "files", true}}); });
      agents.push_back(id);
    }
  }

  struct Seen {
    std::string agent_id;
    v1::PlanPayload payload;
  };

  // Every plan of the set, opened as an agent opens it (signature first).
  std::vector<Seen> open_plans(const std::string& set_id) {
    plan::TrustStore trust;
    trust.add(key.public_key(), 0, "test");
    std::vector<Seen> out;
    cat.read([&](const Tx& tx) {
      std::set<std::string> plan_ids;
      for (const auto& t : tx.tasks_of_set(set_id)) {
        REQUIRE(t.plan_id);
        plan_ids.insert(*t.plan_id);
      }
      for (const auto& id : plan_ids) {
        auto rec = tx.plan(id);
        REQUIRE(rec);
        auto opened = plan::open_envelope(rec->envelope, trust, proto::kPlanPayloadType);
        INFO(opened.message());
        REQUIRE(opened.ok());
        v1::PlanPayload p;
        REQUIRE(p.ParseFromArray(opened.value().payload.data(), int(opened.value().payload.size())));
        CHECK(p.plan_id() == id);
        CHECK(uint64_t(rec->sequence) == p.sequence());
        out.push_back({rec->agent_id, std::move(p)});
      }
    });
    return out;
  }
};

}  // namespace

TEST_CASE("a set over 80 agents: every plan verifies, names its agent and its task, in sequence") {
  ManyAgents f(80);
  std::map<std::string, CurveKey> key_of;
  f.cat.read([&](const Tx& tx) {
    for (const auto& id : f.agents) key_of[id] = tx.agent(id)->curve_public_key;
  });
  for (uint64_t round = 1; round <= 2; ++round) {
    auto ordered = f.orders.create_backup("operator:test", {});
    REQUIRE(ordered.agent_ids.size() == 80);
    auto plans = f.open_plans(ordered.id);
    REQUIRE(plans.size() == 80);
    std::set<std::string> agents_seen, nonces;
    for (const auto& [agent_id, p] : plans) {
      agents_seen.insert(agent_id);
      nonces.insert(p.nonce());
      const auto& k = key_of.at(agent_id);
      CHECK(p.target_agent_key() == std::string(k.begin(), k.end()));
      CHECK(p.sequence() == round);  // the agent's first plan, then its second
      REQUIRE(p.tasks_size() == 1);
      CHECK(p.tasks(0).backup_set_id() == ordered.id);
      f.cat.read([&](const Tx& tx) {
        auto t = tx.task(p.tasks(0).task_id());
        REQUIRE(t);
        CHECK(t->agent_id == agent_id);  // the signed task is this agent's own
      });
    }
    CHECK(agents_seen.size() == 80);
    CHECK(nonces.size() == 80);
    // The set ends (its locks go with it) before the next one is ordered.
    f.cat.transaction("agent", [&](Tx& tx) {
      for (const auto& t : tx.tasks_of_set(ordered.id)) {
        for (auto st : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(t.id, {st});
        TaskUpdate u{TaskState::failed};
        u.reasons.push_back(reason(cairn::v1::ERROR_CODE_ITEM_SKIPPED, "test"));
        tx.update_task(t.id, u);
      }
    });
  }
}

TEST_CASE("a set over 3 agents is signed on the calling thread, the same way") {
  ManyAgents f(3);
  auto ordered = f.orders.create_backup("operator:test", {});
  auto plans = f.open_plans(ordered.id);
  REQUIRE(plans.size() == 3);
  for (const auto& s : plans) CHECK(s.payload.sequence() == 1);
}
