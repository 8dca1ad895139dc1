// The parent a backup task names (Task.parent_snapshot_id): chosen from the
// catalog, from the same agent's own earlier backups of the same component,
// never from what another agent wrote (DESIGN.md, trust model).
#include <catch2/catch.hpp>
#include <map>

#include "controller/catalog/catalog_fixture.h"
#include "controller/orders.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

namespace {

struct OrdersFixture : Fixture {
  controller::ControllerConfig config;
  plan::SigningKey key = plan::SigningKey::generate();
  controller::Orders orders{cat, config, key};
  std::string a = approved_agent("node-a", 1), b = approved_agent("node-b", 2);

  OrdersFixture() {
    config.controller_id = "test";
    cat.transaction("agent", [&](Tx& tx) {
      tx.set_agent_components(a, {{"data", "files", true}, {"etc", "files", true}});
      tx.set_agent_components(b, {{"data", "files", true}});
    });
  }

  // Orders a backup; returns (agent id, component) -> the signed task the agent gets.
  std::map<std::pair<std::string, std::string>, v1::Task> backup(const std::string& set_name) {
    auto ordered = orders.create_backup("operator:test", {});
    sets[set_name] = ordered.id;
    std::map<std::pair<std::string, std::string>, v1::Task> out;
    cat.read([&](const Tx& tx) {
      for (const auto& t : tx.tasks_of_set(ordered.id)) {
        REQUIRE(t.plan_id);
        auto rec = tx.plan(*t.plan_id);
        REQUIRE(rec);
        v1::SignedEnvelope env;
        REQUIRE(env.ParseFromArray(rec->envelope.data(), int(rec->envelope.size())));
        v1::PlanPayload p;
        REQUIRE(p.ParseFromString(env.payload()));
        for (const auto& w : p.tasks())
          if (w.task_id() == t.id) out[{t.agent_id, t.component}] = w;
      }
    });
    return out;
  }

  // Ends the set's task of (agent, component) in `state`, with a snapshot unless failed.
  void finish(const std::string& set_name, const std::string& agent, const std::string& component, TaskState state,
              const std::string& snapshot = {}) {
    cat.transaction("agent:" + agent, [&](Tx& tx) {
      for (const auto& t : tx.tasks_of_set(sets.at(set_name))) {
        if (t.agent_id != agent || t.component != component) continue;
        for (auto s : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(t.id, {s});
        TaskUpdate u{state};
        if (state != TaskState::succeeded) u.reasons.push_back(reason(cairn::v1::ERROR_CODE_ITEM_SKIPPED, "left out"));
        if (!snapshot.empty()) {
          u.snapshot_id = snapshot;
          u.manifest_digest = snapshot;
        }
        tx.update_task(t.id, u);
      }
    });
    advance_seconds(10);
  }

  std::map<std::string, std::string> sets;
};

}  // namespace

TEST_CASE("orders: a backup task names the same agent's newest snapshot of the same component as its parent") {
  OrdersFixture f;
  auto first = f.backup("s1");
  REQUIRE(first.size() == 3);
  for (const auto& [k, t] : first) CHECK(t.parent_snapshot_id().empty());  // nothing written yet
  f.finish("s1", f.a, "data", TaskState::succeeded, "snap-a-data-1");
  f.finish("s1", f.a, "etc", TaskState::succeeded, "snap-a-etc-1");
  f.finish("s1", f.b, "data", TaskState::succeeded, "snap-b-data-1");

  auto second = f.backup("s2");
  CHECK(second[{f.a, "data"}].parent_snapshot_id() == "snap-a-data-1");
  CHECK(second[{f.a, "etc"}].parent_snapshot_id() == "snap-a-etc-1");
  CHECK(second[{f.b, "data"}].parent_snapshot_id() == "snap-b-data-1");

  // A partial snapshot is a parent (what it left out is read next time); a
  // failed task left none, so the one before stays the parent.
  f.finish("s2", f.a, "data", TaskState::partial, "snap-a-data-2");
  f.finish("s2", f.a, "etc", TaskState::failed);
  f.finish("s2", f.b, "data", TaskState::failed);
  auto third = f.backup("s3");
  CHECK(third[{f.a, "data"}].parent_snapshot_id() == "snap-a-data-2");
  CHECK(third[{f.a, "etc"}].parent_snapshot_id() == "snap-a-etc-1");
  CHECK(third[{f.b, "data"}].parent_snapshot_id() == "snap-b-data-1");
}

TEST_CASE("orders: another agent's snapshot is never a parent, however new") {
  OrdersFixture f;
  f.backup("s1");
  f.finish("s1", f.a, "data", TaskState::succeeded, "snap-a-data-1");
  f.finish("s1", f.a, "etc", TaskState::succeeded, "snap-a-etc-1");
  f.finish("s1", f.b, "data", TaskState::failed);  // b has written nothing yet

  // A newer agent with the same component name has no parent either.
  std::string c = f.approved_agent("node-c", 3);
  f.cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(c, {{"data", "files", true}}); });
  auto second = f.backup("s2");
  CHECK(second[{f.b, "data"}].parent_snapshot_id().empty());
  CHECK(second[{c, "data"}].parent_snapshot_id().empty());
  CHECK(second[{f.a, "data"}].parent_snapshot_id() == "snap-a-data-1");

  // b's own snapshot, older than a's newer one, is still b's parent.
  f.finish("s2", f.b, "data", TaskState::succeeded, "snap-b-data-2");
  f.finish("s2", c, "data", TaskState::failed);
  f.finish("s2", f.a, "data", TaskState::succeeded, "snap-a-data-2");
  f.finish("s2", f.a, "etc", TaskState::succeeded, "snap-a-etc-2");
  auto third = f.backup("s3");
  CHECK(third[{f.b, "data"}].parent_snapshot_id() == "snap-b-data-2");
  CHECK(third[{c, "data"}].parent_snapshot_id().empty());
  CHECK(third[{f.a, "data"}].parent_snapshot_id() == "snap-a-data-2");
}

TEST_CASE("catalog: a safety backup's snapshot is not the parent of the next backup") {
  OrdersFixture f;
  f.backup("s1");
  f.finish("s1", f.a, "data", TaskState::succeeded, "snap-a-data-1");
  f.finish("s1", f.a, "etc", TaskState::succeeded, "snap-a-etc-1");
  f.finish("s1", f.b, "data", TaskState::succeeded, "snap-b-data-1");
  // A safety set, as a restore creates it (possibly of an alternative target's paths).
  f.sets["safety"] = f.cat.transaction("controller", [&](Tx& tx) {
    NewBackupSet s;
    s.trigger = "safety";
    s.tasks.push_back({f.a, "data", std::nullopt});
    return tx.create_backup_set(s);
  });
  f.finish("safety", f.a, "data", TaskState::succeeded, "snap-a-safety");
  f.cat.read([&](const Tx& tx) {
    CHECK(tx.backup_parent(f.a, "data") == std::optional<std::string>("snap-a-data-1"));
    CHECK(tx.backup_parent(f.b, "data") == std::optional<std::string>("snap-b-data-1"));
    CHECK_FALSE(tx.backup_parent(f.b, "etc"));
    CHECK_FALSE(tx.backup_parent("ag-unknown", "data"));
  });
}

TEST_CASE("catalog: a backup's parent is chosen from the repository it writes to, and a snapshot knows its repository") {
  OrdersFixture f;
  // A set into 'offsite' (a policy's --repository), then one into 'main',
  // then one whose repository the agent did not say.
  for (const auto& [name, repo] : {std::pair{"off", "offsite"}, std::pair{"main", "main"}, std::pair{"blank", ""}}) {
    f.sets[name] = f.cat.transaction("controller", [&](Tx& tx) {
      NewBackupSet s;
      s.tasks.push_back({f.a, "data", std::nullopt, std::nullopt});
      s.tasks.back().repository = repo;
      s.tasks.back().repository_named = std::string(repo) == "offsite";
      return tx.create_backup_set(s);
    });
    f.finish(name, f.a, "data", TaskState::succeeded, std::string("snap-") + name);
  }
  f.cat.read([&](const Tx& tx) {
    CHECK(tx.backup_parent(f.a, "data") == std::optional<std::string>("snap-blank"));  // the newest, anywhere
    // One written there comes first, however old; else one of unknown repository.
    CHECK(tx.backup_parent(f.a, "data", "offsite") == std::optional<std::string>("snap-off"));
    CHECK(tx.backup_parent(f.a, "data", "main") == std::optional<std::string>("snap-main"));
    CHECK(tx.backup_parent(f.a, "data", "elsewhere") == std::optional<std::string>("snap-blank"));
    CHECK(tx.snapshot_origin("snap-off") == SnapshotOrigin{f.a, "offsite", true});
    CHECK(tx.snapshot_origin("snap-main") == SnapshotOrigin{f.a, "main", false});
    CHECK_FALSE(tx.snapshot_origin("snap-unknown"));
  });
}
