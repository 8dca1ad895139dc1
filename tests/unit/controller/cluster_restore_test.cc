// A cluster-scoped component (etcd, ZooKeeper) is backed up from one member
// and restored on every member from the same snapshot, step by step, each
// step starting only when every member ended the one before; a failure
// after preflight and before commit rolls every member back
// (docs/protocol.md § Cluster-scoped components and the cluster restore).
#include "controller/cluster_restore.h"

#include <catch2/catch.hpp>
#include <functional>
#include <map>
#include <optional>
#include <set>

#include "controller/catalog/catalog_fixture.h"
#include "controller/orders.h"
#include "proto/restore_step.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

namespace {

struct ClusterFixture : Fixture {
  controller::ControllerConfig config;
  plan::SigningKey key = plan::SigningKey::generate();
  controller::Orders orders{cat, config, key};
  std::string a = approved_agent("etcd-a", 1), b = approved_agent("etcd-b", 2), c = approved_agent("etcd-c", 3),
              n = approved_agent("node-n", 4);

  ClusterFixture() {
    config.controller_id = "test";
    cat.set_task_ended_hook([this](Tx& tx, const Task& t) { orders.on_task_ended(tx, t); });
    cat.transaction("agent", [&](Tx& tx) {
      int m = 0;
      for (const auto& id : {a, b, c}) {
        Component k{"etcd", "etcd", true, {}};
        k.scope = "cluster";
        k.cluster_id = "c1";
        k.member_id = "m" + std::to_string(++m);
        tx.set_agent_components(id, {k, {"data", "files", true}});
        tx.approve_memberships(id);  // as 'cairnctl agent approve' does
      }
      tx.set_agent_components(n, {{"data", "files", true}});
    });
  }

  v1::Task wire_of(const Tx& tx, const Task& t) {
    auto rec = tx.plan(*t.plan_id);
    REQUIRE(rec);
    v1::SignedEnvelope env;
    REQUIRE(env.ParseFromArray(rec->envelope.data(), int(rec->envelope.size())));
    v1::PlanPayload p;
    REQUIRE(p.ParseFromString(env.payload()));
    for (const auto& w : p.tasks())
      if (w.task_id() == t.id) return w;
    FAIL("task not in its plan");
    return {};
  }

  void end_task(const std::string& id, TaskState state, const std::string& snapshot = {},
                std::optional<std::string> metadata = std::nullopt) {
    cat.transaction("agent", [&](Tx& tx) {
      for (auto s : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(id, {s});
      TaskUpdate u{state};
      if (state != TaskState::succeeded) u.reasons.push_back(reason(cairn::v1::ERROR_CODE_IO_ERROR, "cannot write"));
      if (!snapshot.empty()) u.snapshot_id = u.manifest_digest = snapshot;
      u.component_metadata = std::move(metadata);
      tx.update_task(id, u);
    });
  }

  std::vector<Task> step_tasks(const std::string& restore_id, const std::string& step) {
    return cat.read([&](const Tx& tx) {
      std::vector<Task> out;
      for (auto& t : tx.tasks_of_restore(restore_id))
        if (proto::restore_step_name(t.restore_step) == step) out.push_back(t);
      return out;
    });
  }

  // Ends every task of a step (the safety tasks ride along with stop).
  void end_step(const std::string& restore_id, const std::string& step, const std::string& failing_agent = {}) {
    for (const auto& t : step_tasks(restore_id, step))
      if (!is_terminal(t.state)) end_task(t.id, t.agent_id == failing_agent ? TaskState::failed : TaskState::succeeded);
  }

  std::string backed_up_set() {
    auto ordered = orders.create_backup("operator:test", {});
    std::vector<Task> tasks = cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); });
    for (const auto& t : tasks) end_task(t.id, TaskState::succeeded, "snap-" + t.agent_id + "-" + t.component);
    return ordered.id;
  }

  SetState restore_state(const std::string& id) {
    return cat.read([&](const Tx& tx) { return tx.restore(id)->state; });
  }
};

v1::Selector only(const std::string& component) {
  v1::Selector s;
  s.add_components(component);
  return s;
}

}  // namespace

TEST_CASE("cluster: a cluster-scoped component is backed up from one member, under the cluster's lock") {
  ClusterFixture f;
  auto ordered = f.orders.create_backup("operator:test", {});
  auto tasks = f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); });
  int etcd = 0, data = 0;
  for (const auto& t : tasks) {
    if (t.component == "etcd") {
      ++etcd;
      CHECK(t.cluster_id == "c1");
    } else {
      ++data;
    }
  }
  CHECK(etcd == 1);  // not one per member
  CHECK(data == 4);
  // A second backup of the cluster while the first runs is refused on the cluster's lock.
  CHECK_THROWS_WITH(f.orders.create_backup("operator:test", only("etcd")), Catch::Contains("cluster 'c1'"));
}

TEST_CASE("cluster: a restore runs preflight, stop, data, start, verify and commit on every member from the same snapshot") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  v1::RestoreRequest req;
  req.set_backup_set_id(set);
  *req.mutable_selector() = only("etcd");
  auto r = f.orders.create_restore("operator:test", req);

  std::string token;
  for (const std::string step : {"preflight", "stop", "data", "start", "verify", "commit"}) {
    auto tasks = f.step_tasks(r.id, step);
    REQUIRE(tasks.size() == 3);
    std::set<std::string> agents, sources;
    f.cat.read([&](const Tx& tx) {
      for (const auto& t : tasks) {
        agents.insert(t.agent_id);
        sources.insert(t.source_snapshot.value_or(""));
        v1::Task w = f.wire_of(tx, t);
        CHECK(w.options().restore_step() == step);
        CHECK(w.restore_id() == r.id);  // every record it leaves on a member names this restore
        std::string tk = w.options().cluster_options().at("cluster_token");
        if (token.empty()) token = tk;
        CHECK(tk == token);  // the same new cluster on every member
      }
    });
    CHECK(agents == std::set<std::string>{f.a, f.b, f.c});
    CHECK(sources.size() == 1);  // every member reads the same snapshot
    // The barrier: while one member has not ended the step, nothing of the next exists.
    for (size_t i = 0; i + 1 < tasks.size(); ++i) f.end_task(tasks[i].id, TaskState::succeeded);
    CHECK(f.restore_state(r.id) == SetState::running);
    if (std::string(step) != "commit") {
      static const std::map<std::string, std::string> next = {
          {"preflight", "stop"}, {"stop", "data"}, {"data", "start"}, {"start", "verify"}, {"verify", "commit"}};
      CHECK(f.step_tasks(r.id, next.at(step)).empty());
    }
    f.end_task(tasks.back().id, TaskState::succeeded);
  }
  CHECK(token.rfind("cairn-" + r.id, 0) == 0);
  CHECK(f.step_tasks(r.id, "rollback").empty());
  CHECK(f.restore_state(r.id) == SetState::complete);
}

TEST_CASE("cluster: a member whose data step fails rolls every member back, and the restore fails naming it") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  v1::RestoreRequest req;
  req.set_backup_set_id(set);
  *req.mutable_selector() = only("etcd");
  auto r = f.orders.create_restore("operator:test", req);
  f.end_step(r.id, "preflight");
  f.end_step(r.id, "stop");
  f.end_step(r.id, "data", f.b);
  CHECK(f.step_tasks(r.id, "start").empty());  // no member starts on the new data
  auto rollback = f.step_tasks(r.id, "rollback");
  REQUIRE(rollback.size() == 3);
  CHECK(f.restore_state(r.id) == SetState::running);
  f.end_step(r.id, "rollback");
  CHECK(f.restore_state(r.id) == SetState::failed);
  bool named = false;
  f.cat.read([&](const Tx& tx) {
    for (const auto& t : tx.tasks_of_restore(r.id))
      if (t.state == TaskState::failed) named |= t.agent_id == f.b && t.restore_step == v1::RESTORE_STEP_DATA;
  });
  CHECK(named);
}

TEST_CASE("cluster: a restore selecting some members of a cluster, or an alternative target, is refused") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  v1::RestoreRequest req;
  req.set_backup_set_id(set);
  *req.mutable_selector() = only("etcd");
  req.mutable_selector()->add_nodes("etcd-a");
  CHECK_THROWS_WITH(f.orders.create_restore("operator:test", req), Catch::Contains("'etcd-b'") && Catch::Contains("not selected"));
  v1::RestoreRequest alt;
  alt.set_backup_set_id(set);
  *alt.mutable_selector() = only("etcd");
  alt.set_restore_target("elsewhere");
  CHECK_THROWS_WITH(f.orders.create_restore("operator:test", alt), Catch::Contains("cluster-scoped"));
}

namespace {
// Three Kafka brokers: member-scoped, each its own data, one cluster "k1".
struct BrokerFixture : ClusterFixture {
  std::string k1 = approved_agent("broker-1", 11), k2 = approved_agent("broker-2", 12), k3 = approved_agent("broker-3", 13);
  BrokerFixture() {
    cat.transaction("agent", [&](Tx& tx) {
      int m = 0;
      for (const auto& id : {k1, k2, k3}) {
        Component k{"kafka", "kafka", true, {}};
        k.scope = "member";
        k.cluster_id = "k1";
        k.member_id = std::to_string(++m);
        k.modes = {"online", "offline"};
        tx.set_agent_components(id, {k});
      }
    });
  }
  // The three brokers backed up, then all three restored without safety backups.
  std::string restore_all_brokers() {
    auto ordered = orders.create_backup("operator:test", only("kafka"));
    for (const auto& t : cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); }))
      end_task(t.id, TaskState::succeeded, "snap-" + t.agent_id);
    v1::RestoreRequest req;
    req.set_backup_set_id(ordered.id);
    *req.mutable_selector() = only("kafka");
    req.set_skip_safety_backup(true);
    return orders.create_restore("operator:test", req).id;
  }
};
}  // namespace

TEST_CASE("members: every broker is backed up (its own snapshot), and a mode goes only to components that take it") {
  BrokerFixture f;
  auto ordered = f.orders.create_backup("operator:test", only("kafka"), "offline");
  std::vector<Task> tasks = f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); });
  REQUIRE(tasks.size() == 3);
  f.cat.read([&](const Tx& tx) {
    for (const auto& t : tasks) CHECK(f.wire_of(tx, t).options().mode() == "offline");
    return 0;
  });
  // A mode no selected component declares creates nothing.
  CHECK_THROWS_WITH(f.orders.create_backup("operator:test", only("data"), "offline"), Catch::Contains("mode 'offline'"));
}

TEST_CASE("members: a restore of several brokers of one cluster runs in steps, each broker from its own snapshot") {
  BrokerFixture f;
  auto ordered = f.orders.create_backup("operator:test", only("kafka"));
  std::map<std::string, std::string> snap_of;  // agent -> its snapshot
  for (const auto& t : f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); })) {
    snap_of[t.agent_id] = "snap-" + t.agent_id;
    f.end_task(t.id, TaskState::succeeded, snap_of[t.agent_id]);
  }
  v1::RestoreRequest req;
  req.set_backup_set_id(ordered.id);
  *req.mutable_selector() = only("kafka");
  req.set_force_identity(true);
  auto r = f.orders.create_restore("operator:test", req);
  for (const std::string step : {"preflight", "stop", "data", "start", "verify", "commit"}) {
    auto tasks = f.step_tasks(r.id, step);
    REQUIRE(tasks.size() == 3);
    f.cat.read([&](const Tx& tx) {
      for (const auto& t : tasks) {
        CHECK(t.source_snapshot.value_or("") == snap_of[t.agent_id]);  // its own, not one for all
        CHECK(t.cluster_id == "k1");
        CHECK(f.wire_of(tx, t).options().force_identity());  // carried by every step
      }
      return 0;
    });
    // A barrier: the next step waits for every broker.
    f.end_task(tasks[0].id, TaskState::succeeded);
    f.end_task(tasks[1].id, TaskState::succeeded);
    CHECK(f.step_tasks(r.id, step == "preflight" ? "stop"
                             : step == "stop"    ? "data"
                             : step == "data"    ? "start"
                             : step == "start"   ? "verify"
                             : step == "verify"  ? "commit"
                                                 : "none")
              .empty());
    f.end_task(tasks[2].id, TaskState::succeeded);
    // (the safety tasks of the stop step are ended by the agent's results in real life)
  }
  CHECK(f.step_tasks(r.id, "rollback").empty());
}

TEST_CASE("members: one broker failing its data step rolls every broker back, and one broker alone is one task") {
  BrokerFixture f;
  auto ordered = f.orders.create_backup("operator:test", only("kafka"));
  for (const auto& t : f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); }))
    f.end_task(t.id, TaskState::succeeded, "snap-" + t.agent_id);
  v1::RestoreRequest req;
  req.set_backup_set_id(ordered.id);
  *req.mutable_selector() = only("kafka");
  req.set_skip_safety_backup(true);
  auto r = f.orders.create_restore("operator:test", req);
  f.end_step(r.id, "preflight");
  f.end_step(r.id, "stop");
  f.end_step(r.id, "data", f.k2);
  CHECK(f.step_tasks(r.id, "start").empty());
  CHECK(f.step_tasks(r.id, "rollback").size() == 3);

  v1::RestoreRequest one;
  one.set_backup_set_id(ordered.id);
  *one.mutable_selector() = only("kafka");
  one.mutable_selector()->add_nodes("broker-3");
  one.set_skip_safety_backup(true);
  f.end_step(r.id, "rollback");
  auto single = f.orders.create_restore("operator:test", one);
  auto tasks = f.cat.read([&](const Tx& tx) { return tx.tasks_of_restore(single.id); });
  REQUIRE(tasks.size() == 1);
  CHECK(tasks[0].restore_step == v1::RESTORE_STEP_ALL);
}

TEST_CASE("members after clusters: brokers restored with a cluster-scoped component wait until it is restored and verified") {
  BrokerFixture f;
  std::string set = f.backed_up_set();  // etcd (cluster c1), the brokers, the files components
  v1::RestoreRequest req;
  req.set_backup_set_id(set);
  req.mutable_selector()->add_components("etcd");
  req.mutable_selector()->add_components("kafka");
  auto r = f.orders.create_restore("operator:test", req);
  auto kafka_tasks = [&] {
    return f.cat.read([&](const Tx& tx) {
      int n = 0;
      for (const auto& t : tx.tasks_of_restore(r.id)) n += t.component == "kafka";
      return n;
    });
  };
  CHECK(kafka_tasks() == 0);
  for (const std::string step : {"preflight", "stop", "data", "start", "verify"}) {
    f.end_step(r.id, step);
    CHECK(kafka_tasks() == 0);  // not before etcd is verified and committed
  }
  f.end_step(r.id, "commit");
  // Now the brokers' steps, each from its own snapshot, with their safety backups.
  auto stops = f.step_tasks(r.id, "preflight");
  std::vector<Task> broker_stops;
  for (const auto& t : stops)
    if (t.component == "kafka") broker_stops.push_back(t);
  REQUIRE(broker_stops.size() == 3);
  f.cat.read([&](const Tx& tx) {
    for (const auto& t : broker_stops) {
      CHECK(t.source_snapshot.value_or("") == "snap-" + t.agent_id + "-kafka");
      REQUIRE(t.safety_task_id);
      CHECK(f.wire_of(tx, t).options().safety_backup_task_id() == *t.safety_task_id);
    }
    return 0;
  });
  CHECK(f.restore_state(r.id) == SetState::running);
}

TEST_CASE("members after clusters: when the cluster's restore fails, no broker is touched and the restore fails") {
  BrokerFixture f;
  std::string set = f.backed_up_set();
  v1::RestoreRequest req;
  req.set_backup_set_id(set);
  req.mutable_selector()->add_components("etcd");
  req.mutable_selector()->add_components("kafka");
  auto r = f.orders.create_restore("operator:test", req);
  f.end_step(r.id, "preflight");
  f.end_step(r.id, "stop");
  f.end_step(r.id, "data", f.b);  // one etcd member fails: every member rolls back
  f.end_step(r.id, "rollback");
  auto all = f.cat.read([&](const Tx& tx) { return tx.tasks_of_restore(r.id); });
  for (const auto& t : all) CHECK(t.component == "etcd");
  CHECK(f.restore_state(r.id) == SetState::failed);
  // The brokers' safety tasks end failed, saying why, instead of waiting forever.
  auto restore = f.cat.read([&](const Tx& tx) { return *tx.restore(r.id); });
  REQUIRE(restore.safety_set_id);
  auto safety = f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(*restore.safety_set_id); });
  int kafka = 0;
  for (const auto& t : safety)
    if (t.component == "kafka") {
      ++kafka;
      CHECK(t.state == TaskState::failed);
    }
  CHECK(kafka == 3);
}

TEST_CASE("cluster: each member restores from, and saves its safety backup to, the repository by its own name for it") {
  ClusterFixture f;
  // The same repository, named differently on each member; and one a policy names.
  f.cat.transaction("agent", [&](Tx& tx) {
    int m = 0;
    for (const auto& [id, name] : {std::pair{f.a, "main"}, std::pair{f.b, "store-b"}, std::pair{f.c, "store-c"}}) {
      Component k{"etcd", "etcd", true, {}};
      k.scope = "cluster";
      k.cluster_id = "c1";
      k.member_id = "m" + std::to_string(++m);
      k.repository = name;
      tx.set_agent_components(id, {k});
      tx.approve_memberships(id);
    }
  });
  std::map<std::string, std::string> own = {{f.a, "main"}, {f.b, "store-b"}, {f.c, "store-c"}};
  auto backed_up = [&](const std::string& repository) {
    controller::BackupExtras extras;
    extras.repository = repository;
    auto ordered = f.orders.create_backup("operator:test", only("etcd"), {}, extras);
    auto tasks = f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); });
    REQUIRE(tasks.size() == 1);
    f.end_task(tasks[0].id, TaskState::succeeded, "snap-" + ordered.id);
    return std::make_pair(ordered.id, tasks[0]);
  };
  // Where each member is told to read, and where the catalog records its safety backup.
  auto restore = [&](const std::string& set) {
    v1::RestoreRequest req;
    req.set_backup_set_id(set);
    *req.mutable_selector() = only("etcd");
    auto r = f.orders.create_restore("operator:test", req);
    std::map<std::string, std::pair<std::string, std::string>> out;
    auto stop = f.step_tasks(r.id, "preflight");
    f.cat.read([&](const Tx& tx) {
      auto rs = tx.restore(r.id);
      REQUIRE(rs->safety_set_id);
      std::map<std::string, std::string> safety;
      for (const auto& t : tx.tasks_of_set(*rs->safety_set_id)) safety[t.agent_id] = t.repository;
      for (const auto& t : stop) out[t.agent_id] = {f.wire_of(tx, t).snapshot().repository(), safety[t.agent_id]};
    });
    REQUIRE(out.size() == 3);
    return out;
  };

  SECTION("a backup to the writer's default: every member reads its own default") {
    auto [set, task] = backed_up("");
    CHECK(task.repository == own[task.agent_id]);
    for (const auto& [agent, where] : restore(set)) {
      INFO(agent);
      CHECK(where.first == own[agent]);
      CHECK(where.second == own[agent]);
    }
  }
  SECTION("the writer's default moved since: the others still read their own default, the writer its old one") {
    auto [set, task] = backed_up("");
    f.cat.transaction("agent", [&](Tx& tx) {
      auto cs = tx.agent_components(task.agent_id);
      for (auto& k : cs) k.repository = "moved";
      tx.set_agent_components(task.agent_id, cs);
    });
    for (const auto& [agent, where] : restore(set)) {
      INFO(agent);
      CHECK(where.first == own[agent]);
      CHECK(where.second == own[agent]);
    }
  }
  SECTION("a backup to a repository a policy names: every member reads that one") {
    auto [set, task] = backed_up("offsite");
    CHECK(task.repository == "offsite");
    for (const auto& [agent, where] : restore(set)) {
      INFO(agent);
      CHECK(where.first == "offsite");
      CHECK(where.second == "offsite");
    }
  }
}

namespace {
v1::RestoreRequest restore_of(const std::string& set, const std::string& component) {
  v1::RestoreRequest req;
  req.set_backup_set_id(set);
  *req.mutable_selector() = only(component);
  return req;
}
}  // namespace

TEST_CASE("cluster: a restore is refused up front, naming the member, while a member's agent is not connected") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  std::set<std::string> down = {f.c};
  f.orders.set_connected([&](const std::string& id) { return !down.count(id); });
  size_t restores_before = f.cat.read([](const Tx& tx) { return tx.restores(100).size(); });
  CHECK_THROWS_WITH(f.orders.create_restore("operator:test", restore_of(set, "etcd")),
                    Catch::Contains("'etcd-c'") && Catch::Contains("not connected") && Catch::Contains("Nothing was stopped"));
  // Nothing was made: no restore, no task, no lock.
  CHECK(f.cat.read([](const Tx& tx) { return tx.restores(100).size(); }) == restores_before);
  down.clear();
  auto r = f.orders.create_restore("operator:test", restore_of(set, "etcd"));
  CHECK(f.step_tasks(r.id, "preflight").size() == 3);
}

TEST_CASE("cluster: a failed preflight stops nothing, and the restore ends failed") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  auto r = f.orders.create_restore("operator:test", restore_of(set, "etcd"));
  f.end_step(r.id, "preflight", f.c);
  CHECK(f.step_tasks(r.id, "stop").empty());
  CHECK(f.step_tasks(r.id, "rollback").empty());  // nothing changed anywhere: nothing to undo
  CHECK(f.restore_state(r.id) == SetState::failed);
  // The cluster's lock went with the restore: the next one may start.
  CHECK_NOTHROW(f.orders.create_restore("operator:test", restore_of(set, "etcd")));
}

TEST_CASE("cluster: a failure at start or verify rolls every member back too (all members on one side)") {
  for (const std::string failing : {"start", "verify"}) {
    INFO(failing);
    ClusterFixture f;
    auto r = f.orders.create_restore("operator:test", restore_of(f.backed_up_set(), "etcd"));
    for (const std::string step : {"preflight", "stop", "data", "start", "verify"}) {
      f.end_step(r.id, step, step == failing ? f.a : std::string());
      if (step == failing) break;
    }
    CHECK(f.step_tasks(r.id, "commit").empty());
    CHECK(f.step_tasks(r.id, "rollback").size() == 3);
    f.end_step(r.id, "rollback");
    CHECK(f.restore_state(r.id) == SetState::failed);
  }
}

TEST_CASE("cluster: a member's agent lost mid-restore fails its step at once; its rollback waits for it") {
  ClusterFixture f;
  std::set<std::string> down;
  f.orders.set_connected([&](const std::string& id) { return !down.count(id); });
  auto r = f.orders.create_restore("operator:test", restore_of(f.backed_up_set(), "etcd"));
  f.end_step(r.id, "preflight");
  down.insert(f.b);  // etcd-b's agent goes away as the stop step ends
  f.end_step(r.id, "stop");
  // b's data task could not be sent: it failed at once with the reason
  // instead of waiting in a queue while the others are stopped.
  auto data = f.step_tasks(r.id, "data");
  REQUIRE(data.size() == 3);
  CHECK(f.step_tasks(r.id, "rollback").empty());  // a barrier: the other two still run their data step
  f.end_step(r.id, "data");
  bool b_failed = false;
  for (const auto& t : data)
    if (t.agent_id == f.b) b_failed = t.state == TaskState::failed && !t.plan_id;
  CHECK(b_failed);
  auto rollback = f.step_tasks(r.id, "rollback");
  REQUIRE(rollback.size() == 3);  // b's too: queued until its agent is back
  CHECK(f.step_tasks(r.id, "start").empty());
  for (const auto& t : rollback) CHECK(t.plan_id);
  CHECK(f.restore_state(r.id) == SetState::running);  // b's rollback is still owed
  f.end_step(r.id, "rollback");
  CHECK(f.restore_state(r.id) == SetState::failed);
}

TEST_CASE("cluster: a commit that fails on a member leaves the restore complete (every member was verified)") {
  ClusterFixture f;
  auto r = f.orders.create_restore("operator:test", restore_of(f.backed_up_set(), "etcd"));
  for (const std::string step : {"preflight", "stop", "data", "start", "verify"}) f.end_step(r.id, step);
  f.end_step(r.id, "commit", f.b);
  CHECK(f.step_tasks(r.id, "rollback").empty());
  CHECK(f.restore_state(r.id) == SetState::complete);
}

TEST_CASE("locks follow tasks: a set with a task queued for an offline agent blocks nothing else, and a refusal names the holder") {
  ClusterFixture f;
  auto ordered = f.orders.create_backup("operator:test", {});
  auto tasks = f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); });
  // While the cluster's task runs, a second backup of it is refused, naming the set.
  CHECK_THROWS_WITH(f.orders.create_backup("operator:test", only("etcd")),
                    Catch::Contains("cluster 'c1'") && Catch::Contains("backup set " + ordered.id));
  // The cluster's task and every files task but node-n's end; node-n's stays queued.
  for (const auto& t : tasks)
    if (t.agent_id != f.n) f.end_task(t.id, TaskState::succeeded, "snap-" + t.id);
  CHECK(f.cat.read([&](const Tx& tx) { return tx.backup_set(ordered.id)->state; }) == SetState::running);
  // The cluster and the other agents' components are free again...
  CHECK_NOTHROW(f.orders.create_backup("operator:test", only("etcd")));
  v1::Selector a_data = only("data");
  a_data.add_nodes("etcd-a");
  CHECK_NOTHROW(f.orders.create_backup("operator:test", a_data));
  // ...node-n's component alone stays locked by the set that waits for it.
  v1::Selector n_data = only("data");
  n_data.add_nodes("node-n");
  CHECK_THROWS_WITH(f.orders.create_backup("operator:test", n_data), Catch::Contains("backup set " + ordered.id));
}

namespace {
Component etcd_member(const std::string& declared, const std::string& member) {
  Component k{"etcd", "etcd", true, {}};
  k.scope = "cluster";
  k.cluster_id = declared;
  k.member_id = member;
  return k;
}
}  // namespace

TEST_CASE("cluster identity: an approved agent declaring a cluster's id is a pending member until an operator approves it") {
  ClusterFixture f;
  // An approved agent (compromised, or misconfigured) now declares cluster c1.
  f.cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(f.n, {etcd_member("c1", "m9"), {"data", "files", true}}); });
  auto comps = f.cat.read([&](const Tx& tx) { return tx.agent_components(f.n); });
  bool pending = false;
  for (const auto& c : comps)
    if (c.name == "etcd") pending = c.member_pending && c.cluster_id == "c1";
  CHECK(pending);
  // It is not where the cluster's backups run, even first by name...
  f.cat.transaction("operator", [&](Tx& tx) {
    for (const auto& id : {f.a, f.b, f.c}) tx.set_agent_state(id, AgentState::approved);
  });
  std::string set = f.backed_up_set();
  auto tasks = f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(set); });
  for (const auto& t : tasks)
    if (t.component == "etcd") CHECK(t.agent_id != f.n);
  // ...and gets no step of the cluster's restore; the restore is not refused for it either.
  auto r = f.orders.create_restore("operator:test", restore_of(set, "etcd"));
  for (const auto& t : f.step_tasks(r.id, "preflight")) CHECK(t.agent_id != f.n);
  CHECK(f.step_tasks(r.id, "preflight").size() == 3);
  // Approved by an operator, it is a member.
  f.cat.transaction("operator", [&](Tx& tx) { tx.set_agent_state(f.n, AgentState::approved); });
  comps = f.cat.read([&](const Tx& tx) { return tx.agent_components(f.n); });
  for (const auto& c : comps)
    if (c.name == "etcd") CHECK_FALSE(c.member_pending);
}

TEST_CASE("cluster identity: a member whose declared id changes (etcd after a restore) stays in its cluster") {
  ClusterFixture f;
  std::string before = f.backed_up_set();  // taken while every member declared c1
  // A restore made a new etcd cluster: one agent restarted and declares etcd's new id, the others not yet.
  f.cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(f.a, {etcd_member("e2ff", "m1"), {"data", "files", true}}); });
  auto comps = f.cat.read([&](const Tx& tx) { return tx.agent_components(f.a); });
  for (const auto& c : comps)
    if (c.name == "etcd") {
      CHECK(c.cluster_id == "c1");
      CHECK(c.declared_cluster_id == "e2ff");
      CHECK_FALSE(c.member_pending);
    }
  // One task for the one cluster, not one per declared id.
  auto ordered = f.orders.create_backup("operator:test", only("etcd"));
  CHECK(f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id).size(); }) == 1);
  for (const auto& t : f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); }))
    f.end_task(t.id, TaskState::succeeded, "snap-" + t.id);
  // The set taken before the restore still restores on all three members.
  auto r = f.orders.create_restore("operator:test", restore_of(before, "etcd"));
  CHECK(f.step_tasks(r.id, "preflight").size() == 3);
  // A new agent declaring etcd's new id (learnt from a member) at its first
  // registration, once an operator approved it, joins the same cluster.
  std::string d = f.approved_agent("etcd-d", 5);
  f.cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(d, {etcd_member("e2ff", "m4")}); });
  comps = f.cat.read([&](const Tx& tx) { return tx.agent_components(d); });
  REQUIRE(comps.size() == 1);
  CHECK(comps[0].cluster_id == "c1");
  CHECK_FALSE(comps[0].member_pending);
}

TEST_CASE("cluster identity: memberships an approved agent declares at its first registration come with its approval") {
  ClusterFixture f;
  // The agent was approved with this configuration (an agent registers only
  // once approved): a member of c1 at once.
  std::string d = f.approved_agent("etcd-d", 5);
  f.cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(d, {etcd_member("c1", "m4"), {"data", "files", true}}); });
  auto comps = f.cat.read([&](const Tx& tx) { return tx.agent_components(d); });
  for (const auto& c : comps)
    if (c.name == "etcd") CHECK_FALSE(c.member_pending);
  // A second cluster component declared later, into a cluster with members, waits.
  f.cat.transaction("agent", [&](Tx& tx) {
    Component z{"zk", "zookeeper", true, {}};
    z.scope = "cluster";
    z.cluster_id = "z1";
    z.member_id = "1";
    tx.set_agent_components(f.a, {etcd_member("c1", "m1"), {"data", "files", true}, z});  // founds z1: approved
    z.member_id = "4";
    tx.set_agent_components(d, {etcd_member("c1", "m4"), {"data", "files", true}, z});  // joins z1 later: pending
  });
  comps = f.cat.read([&](const Tx& tx) { return tx.agent_components(d); });
  for (const auto& c : comps)
    if (c.name == "zk") CHECK(c.member_pending);
  comps = f.cat.read([&](const Tx& tx) { return tx.agent_components(f.a); });
  for (const auto& c : comps)
    if (c.name == "zk") CHECK_FALSE(c.member_pending);
}

namespace {

// What a catalog rebuild makes of snapshot tags alone: agents etcd-1..n
// (pending) and set "set-<name>" of `at` holding one etcd task of cluster c1
// (tag cluster:c1), snapshot "snap-<name>", written by etcd-1. The agents' ids.
std::vector<std::string> rebuilt_etcd_set(Fixture& f, const std::string& name, int64_t at, int agents) {
  RebuiltSet s;
  s.id = "set-" + name;
  s.created_at = s.finished_at = at;
  RebuiltTask t;
  t.id = "task-" + name;
  t.component = "etcd";
  t.repository = "main";
  t.snapshot_id = "snap-" + name;
  t.created_at = at;
  t.cluster_id = "c1";
  std::vector<std::string> ids;
  f.cat.transaction("catalog rebuild", [&](Tx& tx) {
    for (int i = 1; i <= agents; ++i) {
      CurveKey k{};
      k.fill(uint8_t(i));
      ids.push_back(tx.rebuilt_agent("etcd-" + std::to_string(i), k));
    }
    t.agent_id = ids[0];
    s.tasks.push_back(t);
    tx.rebuilt_set(s);
  });
  return ids;
}

}  // namespace

TEST_CASE("cluster identity: a rebuilt set names its cluster, and re-enrolled members join it") {
  Fixture f;  // an empty catalog, as after a loss
  controller::ControllerConfig config;
  config.controller_id = "test";
  plan::SigningKey key = plan::SigningKey::generate();
  controller::Orders orders{f.cat, config, key};
  std::vector<std::string> ids = rebuilt_etcd_set(f, "rebuilt", 1000, 3);
  // The agents come back declaring etcd's current id (changed by a restore
  // since the backup), approved by the operator one by one; the writer of the
  // set last, after the others founded a cluster under etcd's current id.
  for (size_t i = ids.size(); i-- > 0;) {
    f.cat.transaction("operator", [&](Tx& tx) { tx.set_agent_state(ids[i], AgentState::approved); });
    f.cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(ids[i], {etcd_member("e3aa", "m" + std::to_string(i))}); });
  }
  for (const auto& id : ids) {
    auto comps = f.cat.read([&](const Tx& tx) { return tx.agent_components(id); });
    REQUIRE(comps.size() == 1);
    CHECK(comps[0].cluster_id == "c1");
    CHECK_FALSE(comps[0].member_pending);
  }
  // Rebuilt from tags alone (no signed set record): refused unless the
  // operator accepts it (issue 32), then restored as any set.
  auto req = restore_of("set-rebuilt", "etcd");
  REQUIRE_THROWS_WITH(orders.create_restore("operator:test", req), Catch::Contains("unattested"));
  req.set_accept_unattested(true);
  auto r = orders.create_restore("operator:test", req);
  auto tasks = f.cat.read([&](const Tx& tx) { return tx.tasks_of_restore(r.id); });
  CHECK(tasks.size() == 3);
}

TEST_CASE("cluster: a rollback whose agent was lost runs again on that member, three times at most") {
  ClusterFixture f;
  auto r = f.orders.create_restore("operator:test", restore_of(f.backed_up_set(), "etcd"));
  for (const std::string step : {"preflight", "stop"}) f.end_step(r.id, step);
  f.end_step(r.id, "data", f.a);
  auto lose = [&](const std::string& id) {
    f.cat.transaction("agent", [&](Tx& tx) {
      tx.update_task(id, {TaskState::sent});
      TaskUpdate u{TaskState::failed};
      u.reasons.push_back(reason(cairn::v1::ERROR_CODE_AGENT_LOST, "no word from the agent"));
      tx.update_task(id, u);
    });
  };
  auto rollback_of = [&](const std::string& agent) {
    std::vector<Task> out;
    for (const auto& t : f.step_tasks(r.id, "rollback"))
      if (t.agent_id == agent) out.push_back(t);
    return out;
  };
  // b's agent is killed during its rollback; the others' rollbacks succeed.
  for (const auto& t : f.step_tasks(r.id, "rollback"))
    if (t.agent_id == f.b)
      lose(t.id);
    else
      f.end_task(t.id, TaskState::succeeded);
  auto b = rollback_of(f.b);
  REQUIRE(b.size() == 2);  // tried again, for when its agent is back
  CHECK(f.restore_state(r.id) == SetState::running);
  // Lost twice more: three tries, then the restore ends, failed.
  for (int i = 0; i < 2; ++i)
    for (const auto& t : rollback_of(f.b))
      if (!is_terminal(t.state)) lose(t.id);
  CHECK(rollback_of(f.b).size() == 3);
  CHECK(f.restore_state(r.id) == SetState::failed);

  // A retry that succeeds ends the restore (failed: its data step failed), and no more tries are made.
  ClusterFixture g;
  auto r2 = g.orders.create_restore("operator:test", restore_of(g.backed_up_set(), "etcd"));
  for (const std::string step : {"preflight", "stop"}) g.end_step(r2.id, step);
  g.end_step(r2.id, "data", g.c);
  for (const auto& t : g.step_tasks(r2.id, "rollback")) {
    if (t.agent_id != g.c) {
      g.end_task(t.id, TaskState::succeeded);
      continue;
    }
    g.cat.transaction("agent", [&](Tx& tx) {
      tx.update_task(t.id, {TaskState::sent});
      TaskUpdate u{TaskState::failed};
      u.reasons.push_back(reason(cairn::v1::ERROR_CODE_AGENT_LOST, "no word from the agent"));
      tx.update_task(t.id, u);
    });
  }
  auto retries = g.step_tasks(r2.id, "rollback");
  REQUIRE(retries.size() == 4);
  for (const auto& t : retries)
    if (!is_terminal(t.state)) g.end_task(t.id, TaskState::succeeded);
  CHECK(g.step_tasks(r2.id, "rollback").size() == 4);
  CHECK(g.restore_state(r2.id) == SetState::failed);
}

TEST_CASE("cluster: a member gone between preflight and stop ends the restore with no member stopped") {
  ClusterFixture f;
  std::set<std::string> down;
  f.orders.set_connected([&](const std::string& id) { return !down.count(id); });
  std::string set = f.backed_up_set();
  auto r = f.orders.create_restore("operator:test", restore_of(set, "etcd"));
  down.insert(f.c);
  f.end_step(r.id, "preflight");
  auto stops = f.step_tasks(r.id, "stop");
  REQUIRE(stops.size() == 3);
  for (const auto& t : stops) {
    CHECK(t.state == TaskState::failed);
    CHECK_FALSE(t.plan_id);  // no stop plan went to any member
  }
  CHECK(f.step_tasks(r.id, "rollback").empty());
  CHECK(f.restore_state(r.id) == SetState::failed);
  // The lock went with the restore.
  down.clear();
  CHECK_NOTHROW(f.orders.create_restore("operator:test", restore_of(set, "etcd")));
}

TEST_CASE("members: a broker between two steps keeps the restore's lock") {
  BrokerFixture f;
  std::string r = f.restore_all_brokers();
  auto pre = f.step_tasks(r, "preflight");
  REQUIRE(pre.size() == 3);
  f.end_task(pre[0].id, TaskState::succeeded);  // one broker done, the others still at preflight
  v1::Selector one = only("kafka");
  one.add_nodes(f.cat.read([&](const Tx& tx) { return tx.agent(pre[0].agent_id)->name; }));
  CHECK_THROWS_WITH(f.orders.create_backup("operator:test", one), Catch::Contains("restore " + r));
}

TEST_CASE("cluster: a restore in steps is refused, naming them, while members' agents do not announce the steps") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  f.orders.set_connected([](const std::string&) { return true; });
  f.orders.set_supports([&](const std::string& id, const std::string& feature) {
    return feature == "restore-steps/2" && id != f.b;  // etcd-b runs an older agent
  });
  CHECK_THROWS_WITH(f.orders.create_restore("operator:test", restore_of(set, "etcd")),
                    Catch::Contains("'etcd-b'") && Catch::Contains("upgrade them first"));
  f.orders.set_supports([](const std::string&, const std::string&) { return true; });
  CHECK(f.step_tasks(f.orders.create_restore("operator:test", restore_of(set, "etcd")).id, "preflight").size() == 3);
}

namespace {
// Ends the preflight of each broker with the stop wave its agent reported
// (agent/driver.h stop_wave: 1 for a KRaft node with the controller role).
// Ends each broker's preflight with the metadata its agent reported.
void end_preflight_with(BrokerFixture& f, const std::string& restore_id,
                        const std::function<nlohmann::json(const std::string& agent_id)>& metadata) {
  for (const auto& t : f.step_tasks(restore_id, "preflight"))
    f.cat.transaction("agent", [&](Tx& tx) {
      for (auto s : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(t.id, {s});
      TaskUpdate u{TaskState::succeeded};
      u.component_metadata = metadata(t.agent_id).dump();
      tx.update_task(t.id, u);
    });
}

void end_preflight_with_waves(BrokerFixture& f, const std::string& restore_id, const std::map<std::string, int>& wave) {
  end_preflight_with(f, restore_id, [&](const std::string& agent) {
    return nlohmann::json{{"step", "preflight"}, {"stop_wave", wave.at(agent)}};
  });
}

std::set<std::string> agents_of(const std::vector<Task>& tasks) {
  std::set<std::string> out;
  for (const auto& t : tasks) out.insert(t.agent_id);
  return out;
}
}  // namespace

TEST_CASE("members: KRaft brokers stop before the controller quorum: the stop step runs in the waves preflight reported") {
  BrokerFixture f;
  std::string r = f.restore_all_brokers();
  end_preflight_with_waves(f, r, {{f.k1, 0}, {f.k2, 1}, {f.k3, 0}});
  // Wave 0 (the broker-only nodes) alone gets stop plans.
  auto first = f.step_tasks(r, "stop");
  CHECK(agents_of(first) == std::set<std::string>{f.k1, f.k3});
  for (const auto& t : first) CHECK(t.plan_id);
  f.end_task(first[0].id, TaskState::succeeded);
  CHECK(f.step_tasks(r, "stop").size() == 2);  // the controller waits for every broker of wave 0
  f.end_task(first[1].id, TaskState::succeeded);
  // Then the controller's node; the data step waits for it.
  auto all = f.step_tasks(r, "stop");
  REQUIRE(all.size() == 3);
  CHECK(f.step_tasks(r, "data").empty());
  f.end_step(r, "stop");
  CHECK(agents_of(f.step_tasks(r, "data")) == std::set<std::string>{f.k1, f.k2, f.k3});
  for (const std::string step : {"data", "start", "verify", "commit"}) f.end_step(r, step);
  CHECK(f.restore_state(r) == SetState::complete);
}

TEST_CASE("members: a broker failing to stop in wave 0 rolls back the stopped ones; the controller's node is never stopped") {
  BrokerFixture f;
  std::string r = f.restore_all_brokers();
  end_preflight_with_waves(f, r, {{f.k1, 0}, {f.k2, 1}, {f.k3, 0}});
  f.end_step(r, "stop", f.k3);
  CHECK(agents_of(f.step_tasks(r, "stop")) == std::set<std::string>{f.k1, f.k3});
  CHECK(agents_of(f.step_tasks(r, "rollback")) == std::set<std::string>{f.k1, f.k3});
  f.end_step(r, "rollback");
  CHECK(f.restore_state(r) == SetState::failed);
}

TEST_CASE("members: a node of a later stop wave gone before the stop: nothing is stopped") {
  BrokerFixture f;
  std::set<std::string> down;
  f.orders.set_connected([&](const std::string& id) { return !down.count(id); });
  std::string r = f.restore_all_brokers();
  down.insert(f.k2);  // the controller's node, stopped last
  end_preflight_with_waves(f, r, {{f.k1, 0}, {f.k2, 1}, {f.k3, 0}});
  auto stops = f.step_tasks(r, "stop");
  REQUIRE(stops.size() == 2);
  for (const auto& t : stops) {
    CHECK(t.state == TaskState::failed);
    CHECK_FALSE(t.plan_id);
    REQUIRE_FALSE(t.reasons.empty());
    CHECK_THAT(t.reasons[0].detail, Catch::Contains("broker-2"));
  }
  CHECK(f.step_tasks(r, "rollback").empty());
  CHECK(f.restore_state(r) == SetState::failed);
}

TEST_CASE("members: a node of a later stop wave lost while the first wave stops: the stopped ones roll back") {
  BrokerFixture f;
  std::set<std::string> down;
  f.orders.set_connected([&](const std::string& id) { return !down.count(id); });
  std::string r = f.restore_all_brokers();
  end_preflight_with_waves(f, r, {{f.k1, 0}, {f.k2, 1}, {f.k3, 0}});
  down.insert(f.k2);
  f.end_step(r, "stop");
  auto stops = f.step_tasks(r, "stop");
  REQUIRE(stops.size() == 3);
  for (const auto& t : stops)
    if (t.agent_id == f.k2) {
      CHECK(t.state == TaskState::failed);
      CHECK_FALSE(t.plan_id);
    }
  CHECK(agents_of(f.step_tasks(r, "rollback")) == std::set<std::string>{f.k1, f.k3});
}

namespace {
// Ends the preflight of each broker saying it needs the halt before a
// rollback (agent/driver.h rollback_needs_halt: Kafka, ZooKeeper).
void end_preflight_with_halt(BrokerFixture& f, const std::string& restore_id) {
  end_preflight_with(f, restore_id, [](const std::string&) {
    return nlohmann::json{{"step", "preflight"}, {"stop_wave", 0}, {"rollback_halt", true}};
  });
}
}  // namespace

TEST_CASE("members: a failure at start or verify halts every broker before any rolls back (rollback_halt)") {
  // Brokers keep their cluster.id across a restore: one started on its
  // previous logs beside brokers still on the restored ones mixes the two
  // metadata logs (issue 30: kafka-verify-freeze). The halt step stops every
  // broker first; the rollback comes only once all halts ended.
  for (const std::string failing : {"start", "verify"}) {
    INFO(failing);
    BrokerFixture f;
    std::string r = f.restore_all_brokers();
    end_preflight_with_halt(f, r);
    for (const std::string step : {"stop", "data", "start", "verify"}) {
      f.end_step(r, step, step == failing ? f.k2 : std::string());
      if (step == failing) break;
    }
    auto halts = f.step_tasks(r, "halt");
    CHECK(agents_of(halts) == std::set<std::string>{f.k1, f.k2, f.k3});
    for (const auto& t : halts) {
      REQUIRE(t.plan_id);
      CHECK(f.cat.read([&](const Tx& tx) { return f.wire_of(tx, t).options().restore_step(); }) == "halt");
    }
    CHECK(f.step_tasks(r, "rollback").empty());
    f.end_task(halts[0].id, TaskState::succeeded);
    f.end_task(halts[1].id, TaskState::succeeded);
    CHECK(f.step_tasks(r, "rollback").empty());  // a barrier: one broker may still run the restored logs
    f.end_task(halts[2].id, TaskState::failed);  // a halt that failed: its rollback stops it again
    CHECK(agents_of(f.step_tasks(r, "rollback")) == std::set<std::string>{f.k1, f.k2, f.k3});
    f.end_step(r, "rollback");
    CHECK(f.restore_state(r) == SetState::failed);
  }
}

// Every broker restored up to verify, where k1's agent is lost (frozen or
// killed: its broker may still run the restored logs) and its verify fails.
std::string lost_at_verify(BrokerFixture& f, std::set<std::string>& down) {
  f.orders.set_connected([&down](const std::string& id) { return !down.count(id); });
  std::string r = f.restore_all_brokers();
  end_preflight_with_halt(f, r);
  for (const std::string step : {"stop", "data", "start"}) f.end_step(r, step);
  down.insert(f.k1);
  f.end_step(r, "verify", f.k1);
  return r;
}

TEST_CASE("members: a broker's agent lost at verify: its halt waits for it, and nobody rolls back before it stopped") {
  BrokerFixture f;
  std::set<std::string> down;
  std::string r = lost_at_verify(f, down);
  auto halts = f.step_tasks(r, "halt");
  REQUIRE(halts.size() == 3);
  for (const auto& t : halts) {
    CHECK(t.plan_id);  // k1's too: delivered when its agent registers again
    CHECK_FALSE(is_terminal(t.state));
  }
  for (const auto& t : halts)
    if (t.agent_id != f.k1) f.end_task(t.id, TaskState::succeeded);
  CHECK(f.step_tasks(r, "rollback").empty());
  CHECK(f.restore_state(r) == SetState::running);
  down.clear();
  for (const auto& t : halts)
    if (t.agent_id == f.k1) f.end_task(t.id, TaskState::succeeded);
  CHECK(agents_of(f.step_tasks(r, "rollback")) == std::set<std::string>{f.k1, f.k2, f.k3});
  f.end_step(r, "rollback");
  CHECK(f.restore_state(r) == SetState::failed);
}

TEST_CASE("cluster: etcd (no rollback_halt) rolls each member back at once, as before") {
  ClusterFixture f;
  auto r = f.orders.create_restore("operator:test", restore_of(f.backed_up_set(), "etcd"));
  for (const std::string step : {"preflight", "stop", "data", "start"}) f.end_step(r.id, step);
  f.end_step(r.id, "verify", f.a);
  CHECK(f.step_tasks(r.id, "halt").empty());
  CHECK(f.step_tasks(r.id, "rollback").size() == 3);
}

namespace {
// What 'cairnctl backup cancel RESTORE' does (OperatorApi::cancel): every open
// task of the restore ends failed, 'cancelled by operator', in one transaction.
void cancel_restore(ClusterFixture& f, const std::string& restore_id) {
  f.cat.transaction("operator:test", [&](Tx& tx) {
    bool ended = tx.restore(restore_id)->state != SetState::running;  // its open task: an owed rollback
    for (const auto& t : tx.tasks_of_restore(restore_id)) {
      if (is_terminal(t.state)) continue;
      TaskUpdate u(TaskState::failed);
      u.reasons.push_back(reason(cairn::v1::ERROR_CODE_CANCELLED, ended ? kOwedRollbackGivenUp : "cancelled by operator"));
      tx.update_task(t.id, u);
    }
  });
}
}  // namespace

TEST_CASE("cluster: a restore cancelled mid-way still ends all on one side: every member is rolled back") {
  SECTION("etcd, cancelled during the data step: rolled back at once") {
    ClusterFixture f;
    auto r = f.orders.create_restore("operator:test", restore_of(f.backed_up_set(), "etcd"));
    f.end_step(r.id, "preflight");
    f.end_step(r.id, "stop");
    REQUIRE(f.step_tasks(r.id, "data").size() == 3);
    cancel_restore(f, r.id);
    auto rollback = f.step_tasks(r.id, "rollback");
    REQUIRE(rollback.size() == 3);
    for (const auto& t : rollback) CHECK(t.plan_id);  // made after the cancel: not cancelled with the rest
    CHECK(f.restore_state(r.id) == SetState::running);
    f.end_step(r.id, "rollback");
    CHECK(f.restore_state(r.id) == SetState::failed);
  }
  SECTION("brokers, cancelled during verify: halted first, then rolled back") {
    BrokerFixture f;
    std::string r = f.restore_all_brokers();
    end_preflight_with_halt(f, r);
    for (const std::string step : {"stop", "data", "start"}) f.end_step(r, step);
    cancel_restore(f, r);
    CHECK(f.step_tasks(r, "rollback").empty());
    REQUIRE(f.step_tasks(r, "halt").size() == 3);
    f.end_step(r, "halt");
    REQUIRE(f.step_tasks(r, "rollback").size() == 3);
    f.end_step(r, "rollback");
    CHECK(f.restore_state(r) == SetState::failed);
  }
}

TEST_CASE("members: a halt waiting for a host that is gone for good: the operator's cancel rolls the others back") {
  // docs/operations.md § A restore waiting for a member that is gone.
  BrokerFixture f;
  std::set<std::string> down;
  std::string r = lost_at_verify(f, down);
  for (const auto& t : f.step_tasks(r, "halt"))
    if (t.agent_id != f.k1) f.end_task(t.id, TaskState::succeeded);
  CHECK(f.step_tasks(r, "rollback").empty());
  cancel_restore(f, r);  // the operator: k1's host is off for good
  auto rollbacks = f.step_tasks(r, "rollback");
  REQUIRE(agents_of(rollbacks) == std::set<std::string>{f.k1, f.k2, f.k3});
  for (const auto& t : rollbacks) {
    CHECK(t.plan_id);  // made after the cancel: not cancelled with the halts
    if (t.agent_id != f.k1) f.end_task(t.id, TaskState::succeeded);
  }
  CHECK(f.restore_state(r) == SetState::running);  // k1 still owes its rollback
  cancel_restore(f, r);                            // the second cancel gives that up too
  CHECK(f.restore_state(r) == SetState::failed);
  CHECK(f.step_tasks(r, "rollback").size() == 3);  // and makes nothing again
}

namespace {
// etcd-b's agent goes away as the stop step ends (its data step fails at
// once); the others roll back; the operator cancels b's pending rollback.
std::string given_up_at_data(ClusterFixture& f, std::set<std::string>& down) {
  f.orders.set_connected([&](const std::string& id) { return !down.count(id); });
  auto r = f.orders.create_restore("operator:test", restore_of(f.backed_up_set(), "etcd"));
  f.end_step(r.id, "preflight");
  down.insert(f.b);
  f.end_step(r.id, "stop");
  f.end_step(r.id, "data");
  for (const auto& t : f.step_tasks(r.id, "rollback"))
    if (t.agent_id != f.b) f.end_task(t.id, TaskState::succeeded);
  REQUIRE(f.restore_state(r.id) == SetState::running);
  cancel_restore(f, r.id);
  REQUIRE(f.restore_state(r.id) == SetState::failed);
  return r.id;
}

std::vector<Task> owed(ClusterFixture& f, const std::string& agent) {
  return f.cat.read([&](const Tx& tx) { return tx.owed_rollbacks(agent); });
}

size_t agent_returns(ClusterFixture& f, const std::string& agent) {
  return f.cat.transaction("agent", [&](Tx& tx) { return f.orders.issue_owed_rollbacks(tx, agent); });
}

std::optional<std::pair<std::string, std::string>> cluster_lock(ClusterFixture& f) {
  return f.cat.read([&](const Tx& tx) { return tx.lock_holder("cluster:etcd/c1"); });
}
}  // namespace

TEST_CASE("cluster: a rollback cancelled while its agent was away runs when the agent returns, after the restore ended") {
  // docs/protocol.md § A rollback owed to a member that was away.
  ClusterFixture f;
  std::set<std::string> down;
  std::string r = given_up_at_data(f, down);
  CHECK_FALSE(cluster_lock(f));  // the ended restore holds nothing: the fleet's schedules go on
  CHECK(owed(f, f.a).empty());
  auto owes = owed(f, f.b);
  REQUIRE(owes.size() == 1);
  CHECK(owes[0].restore_id == r);

  down.erase(f.b);
  CHECK(agent_returns(f, f.b) == 1);
  auto tries = f.step_tasks(r, "rollback");
  REQUIRE(tries.size() == 4);
  const Task* late = nullptr;
  for (const auto& t : tries)
    if (t.agent_id == f.b && !is_terminal(t.state)) late = &t;
  REQUIRE(late);
  REQUIRE(late->plan_id);
  auto w = f.cat.read([&](const Tx& tx) { return f.wire_of(tx, *late); });
  CHECK(w.restore_id() == r);  // the member's record names this restore: only that is acted on
  CHECK(w.options().restore_step() == "rollback");
  CHECK(f.restore_state(r) == SetState::failed);                        // the outcome stands
  CHECK(cluster_lock(f) == std::make_pair(std::string("restore"), r));  // nothing else starts on the cluster meanwhile
  CHECK(owed(f, f.b).empty());                                          // sent once, not at every registration
  CHECK(agent_returns(f, f.b) == 0);

  SECTION("it succeeds: the lock goes, nothing is owed") {
    f.end_task(late->id, TaskState::succeeded);
    CHECK_FALSE(cluster_lock(f));
    CHECK(owed(f, f.b).empty());
    CHECK(f.restore_state(r) == SetState::failed);
  }
  SECTION("it fails on the member: reported, not made again") {
    f.end_task(late->id, TaskState::failed);
    CHECK_FALSE(cluster_lock(f));
    CHECK(owed(f, f.b).empty());
  }
  SECTION("its plan expires before the agent takes it: still owed at the next registration") {
    f.cat.transaction("fleet", [&](Tx& tx) {
      TaskUpdate u{TaskState::missed};
      u.reasons.push_back(reason(cairn::v1::ERROR_CODE_PLAN_MISSED, "the plan expired before the agent accepted it"));
      tx.update_task(late->id, u);
    });
    CHECK_FALSE(cluster_lock(f));
    CHECK(owed(f, f.b).size() == 1);
  }
  SECTION("the operator cancels it: given up for good") {
    cancel_restore(f, r);
    CHECK_FALSE(cluster_lock(f));
    CHECK(owed(f, f.b).empty());
    CHECK(agent_returns(f, f.b) == 0);
  }
}

TEST_CASE("cluster: an owed rollback waits while the agent no longer declares the component, and a revoked agent owes nothing") {
  ClusterFixture f;
  std::set<std::string> down;
  std::string r = given_up_at_data(f, down);
  f.cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(f.b, {{"data", "files", true}}); });
  CHECK(agent_returns(f, f.b) == 0);
  CHECK(owed(f, f.b).size() == 1);  // still owed, should etcd be declared again
  f.cat.transaction("operator:test", [&](Tx& tx) { tx.set_agent_state(f.b, AgentState::revoked); });
  CHECK(agent_returns(f, f.b) == 0);
  CHECK(f.step_tasks(r, "rollback").size() == 3);
}

TEST_CASE("members: a broker given up on at its halt and rollback is owed its rollback when its agent returns") {
  BrokerFixture f;
  std::set<std::string> down;
  std::string r = lost_at_verify(f, down);
  for (const auto& t : f.step_tasks(r, "halt"))
    if (t.agent_id != f.k1) f.end_task(t.id, TaskState::succeeded);
  cancel_restore(f, r);  // the halt given up: the others roll back
  for (const auto& t : f.step_tasks(r, "rollback"))
    if (t.agent_id != f.k1) f.end_task(t.id, TaskState::succeeded);
  CHECK(owed(f, f.k1).empty());  // still pending in the running restore
  cancel_restore(f, r);          // its rollback given up too: the restore ends
  REQUIRE(f.restore_state(r) == SetState::failed);
  REQUIRE(owed(f, f.k1).size() == 1);
  down.erase(f.k1);
  CHECK(agent_returns(f, f.k1) == 1);
  CHECK(f.step_tasks(r, "rollback").size() == 4);
  CHECK(owed(f, f.k2).empty());
}

TEST_CASE("an unattested set is drilled only with the override a restore needs, and --latest never picks it") {
  Fixture f;
  controller::ControllerConfig config;
  config.controller_id = "test";
  plan::SigningKey key = plan::SigningKey::generate();
  controller::Orders orders{f.cat, config, key};
  // A set rebuilt from snapshot tags alone, newer by its own say than any.
  const std::string agent = rebuilt_etcd_set(f, "forged", 4'000'000'000, 1).at(0);
  f.cat.transaction("operator", [&](Tx& tx) { tx.set_agent_state(agent, AgentState::approved); });
  f.cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(agent, {etcd_member("e3aa", "m1")}); });

  cairn::v1::DrillRequest named;
  named.set_backup_set_id("set-forged");
  REQUIRE_THROWS_WITH(orders.create_drill("operator:test", named),
                      Catch::Contains("is unattested") && Catch::Contains("--accept-unattested"));
  cairn::v1::DrillRequest latest;
  latest.set_latest(true);
  REQUIRE_THROWS_WITH(orders.create_drill("operator:test", latest), Catch::Contains("1 unattested one(s), which --latest never picks"));
  // With the override the drill is ordered, and the override audited.
  named.set_accept_unattested(true);
  auto o = orders.create_drill("operator:test", named);
  CHECK_FALSE(o.id.empty());
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  CHECK(std::any_of(events.begin(), events.end(), [](const auto& e) { return e.action == "drill.accept_unattested"; }));
}

TEST_CASE("cluster: the restore counters count each member by its own steps, as the catalog shows them") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  auto counts = [&] {
    std::map<std::string, int64_t> out;  // "agent state" -> count
    for (const auto& c : f.cat.read([](const Tx& tx) { return tx.restore_stats(); }))
      if (c.labels[0] == "etcd") out[c.labels[1] + " " + c.labels[2]] += c.count;
    return out;
  };
  // etcd-b's data step fails: every member is rolled back. Only etcd-b
  // failed; the others did what they were asked and restored nothing for
  // good: neither a success nor a failure of theirs.
  auto r = f.orders.create_restore("operator:test", restore_of(set, "etcd"));
  f.end_step(r.id, "preflight");
  f.end_step(r.id, "stop");
  f.end_step(r.id, "data", f.b);
  f.end_step(r.id, "rollback");
  REQUIRE(f.restore_state(r.id) == SetState::failed);
  CHECK(counts() == std::map<std::string, int64_t>{{"etcd-b failed", 1}});
  // A preflight failing on etcd-c: etcd-c counts it.
  auto r2 = f.orders.create_restore("operator:test", restore_of(set, "etcd"));
  f.end_step(r2.id, "preflight", f.c);
  REQUIRE(f.restore_state(r2.id) == SetState::failed);
  CHECK(counts() == std::map<std::string, int64_t>{{"etcd-b failed", 1}, {"etcd-c failed", 1}});
  // A restore that commits is a success on every member.
  auto r3 = f.orders.create_restore("operator:test", restore_of(set, "etcd"));
  for (const std::string step : {"preflight", "stop", "data", "start", "verify", "commit"}) f.end_step(r3.id, step);
  REQUIRE(f.restore_state(r3.id) == SetState::complete);
  CHECK(counts() ==
        std::map<std::string, int64_t>{
            {"etcd-a succeeded", 1}, {"etcd-b failed", 1}, {"etcd-b succeeded", 1}, {"etcd-c failed", 1}, {"etcd-c succeeded", 1}});
}

// ---- disaster recovery (docs/operations.md § Disaster recovery) -------------

TEST_CASE("cluster: a backup records its members, and a restore is refused before anything is made when one has no agent") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  auto members = f.cat.read([&](const Tx& tx) {
    for (const auto& t : tx.tasks_of_set(set))
      if (t.component == "etcd") {
        CHECK(f.wire_of(tx, t).cluster_members_size() == 3);
        return tx.task_cluster_members(t.id);
      }
    return std::vector<std::string>{};
  });
  CHECK(members == std::vector<std::string>{"etcd-a", "etcd-b", "etcd-c"});
  // etcd-c's agent revoked (its server may still run): the restore would stop
  // the other two and start a cluster of two.
  f.cat.transaction("operator:test", [&](Tx& tx) { tx.set_agent_state(f.c, AgentState::revoked); });
  v1::RestoreRequest req;
  req.set_backup_set_id(set);
  *req.mutable_selector() = only("etcd");
  CHECK_THROWS_WITH(f.orders.create_restore("operator:test", req),
                    Catch::Contains("'etcd-c' (its agent is revoked and no agent took the name) cannot take part") &&
                        Catch::Contains("nothing was stopped or changed"));
  CHECK(f.cat.read([&](const Tx& tx) { return tx.restores(10, "restore").empty(); }));
}

TEST_CASE("cluster: revoking releases the name; the agent that takes it joins the cluster the backup named and restores") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  std::string fresh = f.cat.transaction("operator:test", [&](Tx& tx) {
    tx.set_agent_state(f.c, AgentState::revoked);
    CHECK(tx.agent(f.c)->name.rfind("etcd-c.revoked-", 0) == 0);
    CHECK_FALSE(tx.agent("etcd-c"));
    // A new key on the replaced host, under the old name; its etcd cannot name
    // its cluster (an empty host).
    CurveKey k{};
    k.fill(9);
    std::string id = tx.enrol_agent("etcd-c", k, "host-c", "test");
    tx.set_agent_state(id, AgentState::approved);
    Component e{"etcd", "etcd", true, {}};
    e.scope = "cluster";
    tx.set_agent_components(id, {e, {"data", "files", true}});
    return id;
  });
  f.cat.read([&](const Tx& tx) {
    for (const auto& c : tx.agent_components(fresh))
      if (c.name == "etcd") {
        CHECK(c.cluster_id == "c1");
        CHECK_FALSE(c.member_pending);
        CHECK(c.declared_cluster_id.empty());
      }
    CHECK(tx.predecessors(fresh) == std::vector<std::string>{f.c});
  });
  v1::RestoreRequest req;
  req.set_backup_set_id(set);
  auto r = f.orders.create_restore("operator:test", req);
  auto preflight = f.step_tasks(r.id, "preflight");
  CHECK(preflight.size() == 3);
  CHECK(std::any_of(preflight.begin(), preflight.end(), [&](const Task& t) { return t.agent_id == fresh; }));
  // Its files: the revoked agent's snapshot, restored on the agent that took the name.
  auto tasks = f.cat.read([&](const Tx& tx) { return tx.tasks_of_restore(r.id); });
  CHECK(std::any_of(tasks.begin(), tasks.end(), [&](const Task& t) {
    return t.agent_id == fresh && t.component == "data" && t.source_snapshot == "snap-" + f.c + "-data";
  }));
}

TEST_CASE("cluster: a member that cannot name its cluster and that no backup names is a member of nothing") {
  ClusterFixture f;
  std::string id = f.cat.transaction("operator:test", [&](Tx& tx) {
    CurveKey k{};
    k.fill(11);
    std::string id = tx.enrol_agent("etcd-z", k, "host-z", "test");
    tx.set_agent_state(id, AgentState::approved);
    Component e{"etcd", "etcd", true, {}};
    e.scope = "cluster";
    tx.set_agent_components(id, {e});
    return id;
  });
  f.cat.read([&](const Tx& tx) {
    auto comps = tx.agent_components(id);
    REQUIRE(comps.size() == 1);
    CHECK(comps[0].cluster_id.empty());
  });
  // It takes part in no backup: the cluster's one task goes to a member.
  auto ordered = f.orders.create_backup("operator:test", only("etcd"));
  auto tasks = f.cat.read([&](const Tx& tx) { return tx.tasks_of_set(ordered.id); });
  REQUIRE(tasks.size() == 1);
  CHECK(tasks[0].agent_id != id);
}

TEST_CASE("cluster: a rollback tells a member whose stop found it not running to stay stopped") {
  ClusterFixture f;
  std::string set = f.backed_up_set();
  v1::RestoreRequest req;
  req.set_backup_set_id(set);
  *req.mutable_selector() = only("etcd");
  auto r = f.orders.create_restore("operator:test", req);
  f.end_step(r.id, "preflight");
  for (const auto& t : f.step_tasks(r.id, "stop"))
    f.end_task(t.id, TaskState::succeeded, {}, nlohmann::json{{"step", "stop"}, {"was_running", t.agent_id != f.b}}.dump());
  f.end_step(r.id, "data", f.a);  // a data step fails: every member rolls back
  auto rollbacks = f.step_tasks(r.id, "rollback");
  REQUIRE(rollbacks.size() == 3);
  f.cat.read([&](const Tx& tx) {
    for (const auto& t : rollbacks) {
      auto opts = f.wire_of(tx, t).options().cluster_options();
      bool stays = opts.count("was_running") && opts.at("was_running") == "false";
      CHECK(stays == (t.agent_id == f.b));
    }
  });
}

TEST_CASE("the cluster restore's table: the step after each, every member ok or one failed", "[cluster_restore]") {
  using controller::ClusterRestore;
  struct Row {
    v1::RestoreStep step, ok, failed, failed_with_halt;
  };
  const Row rows[] = {
      {v1::RESTORE_STEP_PREFLIGHT, v1::RESTORE_STEP_STOP, v1::RESTORE_STEP_ALL, v1::RESTORE_STEP_ALL},
      {v1::RESTORE_STEP_STOP, v1::RESTORE_STEP_DATA, v1::RESTORE_STEP_ROLLBACK, v1::RESTORE_STEP_ROLLBACK},
      {v1::RESTORE_STEP_DATA, v1::RESTORE_STEP_START, v1::RESTORE_STEP_ROLLBACK, v1::RESTORE_STEP_ROLLBACK},
      {v1::RESTORE_STEP_START, v1::RESTORE_STEP_VERIFY, v1::RESTORE_STEP_ROLLBACK, v1::RESTORE_STEP_HALT},
      {v1::RESTORE_STEP_VERIFY, v1::RESTORE_STEP_COMMIT, v1::RESTORE_STEP_ROLLBACK, v1::RESTORE_STEP_HALT},
      {v1::RESTORE_STEP_COMMIT, v1::RESTORE_STEP_ALL, v1::RESTORE_STEP_ALL, v1::RESTORE_STEP_ALL},
      {v1::RESTORE_STEP_HALT, v1::RESTORE_STEP_ROLLBACK, v1::RESTORE_STEP_ROLLBACK, v1::RESTORE_STEP_ROLLBACK},
      {v1::RESTORE_STEP_ROLLBACK, v1::RESTORE_STEP_ALL, v1::RESTORE_STEP_ALL, v1::RESTORE_STEP_ALL},
  };
  for (const auto& r : rows) {
    INFO(proto::restore_step_name(r.step));
    CHECK(ClusterRestore::next_step(r.step, true, false) == r.ok);
    CHECK(ClusterRestore::next_step(r.step, false, false) == r.failed);
    CHECK(ClusterRestore::next_step(r.step, false, true) == r.failed_with_halt);
    // Every step after it ranks later: the latest task says the step in progress.
    if (r.ok != v1::RESTORE_STEP_ALL) CHECK(ClusterRestore::rank(r.ok) > ClusterRestore::rank(r.step));
    if (r.failed != v1::RESTORE_STEP_ALL) CHECK(ClusterRestore::rank(r.failed) > ClusterRestore::rank(r.step));
  }
  // Every step has one name, and back.
  for (int s = v1::RESTORE_STEP_ALL; s <= v1::RESTORE_STEP_HALT; ++s) {
    auto step = static_cast<v1::RestoreStep>(s);
    CHECK(proto::restore_step_from_name(proto::restore_step_name(step)) == step);
  }
  CHECK_FALSE(proto::restore_step_from_name("sideways"));
}
