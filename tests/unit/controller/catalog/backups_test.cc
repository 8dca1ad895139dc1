// Backup sets from creation to outcome, through plans, acks, results and expiry.
#include <catch2/catch.hpp>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "catalog_fixture.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

namespace {

struct TwoNodes : Fixture {
  std::string a = approved_agent("node-a", 1);
  std::string b = approved_agent("node-b", 2);
  std::string set;
  std::vector<Task> tasks;

  TwoNodes() {
    set = cat.transaction("operator:alice", [&](Tx& tx) {
      NewBackupSet s;
      s.selector = {{"components", {"etc"}}};
      s.tasks = {{a, "etc", {}}, {b, "etc", {}}};
      return tx.create_backup_set(s);
    });
    tasks = cat.read([&](const Tx& tx) { return tx.tasks_of_set(set); });
  }

  // Issues and sends one plan per task; returns the plan ids.
  std::vector<std::string> send_plans() {
    std::vector<std::string> ids;
    cat.transaction("controller", [&](Tx& tx) {
      for (const auto& t : tasks) {
        std::string plan_id = "pl-" + t.id;
        tx.issue_plan({plan_id, t.agent_id, "k1", now(), now(), now() + 600, {t.id}});
        tx.update_task(t.id, {TaskState::sent});
        ids.push_back(plan_id);
      }
    });
    return ids;
  }

  SetState set_state() {
    return cat.read([&](const Tx& tx) { return tx.backup_set(set)->state; });
  }

  void succeed(const Task& t) {
    cat.transaction("agent:" + t.agent_id, [&](Tx& tx) {
      tx.update_task(t.id, {TaskState::running});
      TaskUpdate u{TaskState::succeeded};
      u.snapshot_id = "sn-" + t.id;
      u.manifest_digest = std::string(64, 'a');
      tx.update_task(t.id, u);
    });
  }
};

}  // namespace

TEST_CASE("a set whose every task succeeded is complete, with a snapshot per task") {
  TwoNodes f;
  auto plans = f.send_plans();
  f.cat.transaction("agent", [&](Tx& tx) {
    for (const auto& p : plans) tx.record_plan_ack(p, true, cairn::v1::ERROR_CODE_OK, "");
  });
  f.succeed(f.tasks[0]);
  REQUIRE(f.set_state() == SetState::running);
  f.succeed(f.tasks[1]);
  REQUIRE(f.set_state() == SetState::complete);
  auto t = f.cat.read([&](const Tx& tx) { return tx.task(f.tasks[0].id); });
  REQUIRE(t->snapshot_id == "sn-" + f.tasks[0].id);
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events.back().action == "backup.finish");
  REQUIRE(events.back().outcome == "complete");
  REQUIRE(f.cat.verify_audit_chain().ok);
}

TEST_CASE("a plan the agent rejects ends its task rejected with the wire reason, and the set partial") {
  TwoNodes f;
  auto plans = f.send_plans();
  f.cat.transaction("agent", [&](Tx& tx) {
    tx.record_plan_ack(plans[0], true, cairn::v1::ERROR_CODE_OK, "");
    tx.record_plan_ack(plans[1], false, cairn::v1::ERROR_CODE_BAD_SIGNATURE, "signature does not verify under key 'k1'");
  });
  f.succeed(f.tasks[0]);
  REQUIRE(f.set_state() == SetState::partial);
  auto rejected = f.cat.read([&](const Tx& tx) { return tx.task(f.tasks[1].id); });
  REQUIRE(rejected->state == TaskState::rejected);
  REQUIRE(rejected->reasons.size() == 1);
  REQUIRE(rejected->reasons[0].code == cairn::v1::ERROR_CODE_BAD_SIGNATURE);
  REQUIRE_THAT(rejected->reasons[0].detail, Catch::Contains("does not verify"));

  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  bool audited = false;
  for (const auto& e : events)
    if (e.action == "plan.reject" && e.reason == "bad_signature") audited = true;
  REQUIRE(audited);
}

TEST_CASE("plans nobody answered expire into missed tasks and a failed set") {
  TwoNodes f;
  f.send_plans();
  f.advance_seconds(599);
  REQUIRE(f.cat.transaction("controller", [](Tx& tx) { return tx.expire_plans(); }).empty());
  f.advance_seconds(1);
  REQUIRE(f.cat.transaction("controller", [](Tx& tx) { return tx.expire_plans(); }).size() == 2);
  REQUIRE(f.set_state() == SetState::failed);
  auto t = f.cat.read([&](const Tx& tx) { return tx.task(f.tasks[0].id); });
  REQUIRE(t->state == TaskState::missed);
  REQUIRE(t->reasons[0].code == cairn::v1::ERROR_CODE_PLAN_MISSED);
}

TEST_CASE("a partial task keeps every reason and makes the set partial") {
  TwoNodes f;
  auto plans = f.send_plans();
  f.cat.transaction("agent", [&](Tx& tx) {
    for (const auto& p : plans) tx.record_plan_ack(p, true, cairn::v1::ERROR_CODE_OK, "");
  });
  f.succeed(f.tasks[0]);
  f.cat.transaction("agent", [&](Tx& tx) {
    TaskUpdate u{TaskState::partial};
    u.reasons = {{cairn::v1::ERROR_CODE_ITEM_SKIPPED, "permission denied", "/etc/shadow"},
                 {cairn::v1::ERROR_CODE_ITEM_SKIPPED, "vanished while read", "/etc/tmpfile"}};
    u.snapshot_id = "sn-partial";
    u.manifest_digest = std::string(64, 'b');
    tx.update_task(f.tasks[1].id, u);
  });
  REQUIRE(f.set_state() == SetState::partial);
  auto t = f.cat.read([&](const Tx& tx) { return tx.task(f.tasks[1].id); });
  REQUIRE(t->reasons.size() == 2);
  REQUIRE(t->reasons[1].item == "/etc/tmpfile");
}

TEST_CASE("refused task updates change nothing") {
  TwoNodes f;
  const auto& t = f.tasks[0];
  SECTION("a jump the state machine does not allow") {
    REQUIRE_THROWS_WITH(f.cat.transaction("agent", [&](Tx& tx) { tx.update_task(t.id, {TaskState::succeeded}); }),
                        Catch::Contains("cannot go from 'pending' to 'succeeded'"));
  }
  SECTION("a failure without a reason") {
    REQUIRE_THROWS_WITH(f.cat.transaction("agent", [&](Tx& tx) { tx.update_task(t.id, {TaskState::failed}); }),
                        Catch::Contains("without a reason"));
  }
  SECTION("success without a snapshot") {
    f.send_plans();
    f.cat.transaction("agent", [&](Tx& tx) { tx.record_plan_ack("pl-" + t.id, true, cairn::v1::ERROR_CODE_OK, ""); });
    REQUIRE_THROWS_WITH(f.cat.transaction("agent", [&](Tx& tx) { tx.update_task(t.id, {TaskState::succeeded}); }),
                        Catch::Contains("without a snapshot id"));
  }
  REQUIRE(f.set_state() == SetState::running);
}

TEST_CASE("plan sequences grow per agent and can be raised, never lowered") {
  TwoNodes f;
  f.send_plans();
  f.cat.read([&](const Tx& tx) {
    REQUIRE(tx.last_plan_sequence(f.a) == 1);
    REQUIRE(tx.last_plan_sequence(f.b) == 1);
  });
  f.cat.transaction("controller", [&](Tx& tx) {
    tx.raise_plan_sequence(f.a, 40);
    tx.raise_plan_sequence(f.a, 3);
  });
  REQUIRE(f.cat.read([&](const Tx& tx) { return tx.last_plan_sequence(f.a); }) == 40);
}

TEST_CASE("no plan is issued to an agent that is not approved") {
  TwoNodes f;
  f.cat.transaction("operator:alice", [&](Tx& tx) { tx.set_agent_state(f.a, AgentState::revoked); });
  REQUIRE_THROWS_WITH(f.cat.transaction("controller",
                                        [&](Tx& tx) {
                                          tx.issue_plan({"pl-x", f.a, "k1", f.now(), f.now(), f.now() + 60, {f.tasks[0].id}});
                                        }),
                      Catch::Contains("not approved"));
}

TEST_CASE("an empty backup set is refused") {
  Fixture f;
  REQUIRE_THROWS_WITH(f.cat.transaction("operator:alice", [](Tx& tx) { tx.create_backup_set({}); }), Catch::Contains("at least one task"));
}

TEST_CASE("progress is kept as the latest report on the task row") {
  TwoNodes f;
  auto plans = f.send_plans();
  f.cat.transaction("agent", [&](Tx& tx) {
    tx.record_plan_ack(plans[0], true, cairn::v1::ERROR_CODE_OK, "");
    tx.update_task(f.tasks[0].id, {TaskState::running});
  });
  size_t events = f.audit_count();
  for (uint64_t i = 1; i <= 3; ++i)
    f.cat.transaction("agent", [&](Tx& tx) {
      TaskProgress p;
      p.phase = cairn::v1::PHASE_STREAM;
      p.bytes_done = i * 100;
      p.bytes_total = 300;
      p.current_item = "/etc/file" + std::to_string(i);
      tx.set_task_progress(f.tasks[0].id, p);
    });
  auto t = f.cat.read([&](const Tx& tx) { return tx.task(f.tasks[0].id); });
  REQUIRE(t->progress.bytes_done == 300);
  REQUIRE(t->progress.current_item == "/etc/file3");
  REQUIRE(f.audit_count() == events);
}

TEST_CASE("a restore holds its lock until it ends, and a second restore is refused meanwhile") {
  TwoNodes f;
  auto plans = f.send_plans();
  f.cat.transaction("agent", [&](Tx& tx) {
    for (const auto& p : plans) tx.record_plan_ack(p, true, cairn::v1::ERROR_CODE_OK, "");
  });
  f.succeed(f.tasks[0]);
  f.succeed(f.tasks[1]);

  std::string target = f.a + "/etc";
  std::string restore = f.cat.transaction("operator:alice", [&](Tx& tx) {
    NewRestore r;
    r.source_set_id = f.set;
    r.tasks = {{f.a, "etc", "sn-" + f.tasks[0].id}};
    std::string id = tx.create_restore(r);
    REQUIRE(tx.acquire_lock(target, TaskKind::restore, id, 3600));
    return id;
  });
  REQUIRE_FALSE(f.cat.transaction("operator:bob", [&](Tx& tx) { return tx.acquire_lock(target, TaskKind::restore, "rs-other", 3600); }));

  auto rtask = f.cat.read([&](const Tx& tx) { return tx.tasks_of_restore(restore); }).at(0);
  f.cat.transaction("agent", [&](Tx& tx) {
    tx.update_task(rtask.id, {TaskState::failed, {reason(cairn::v1::ERROR_CODE_AGENT_LOST, "no heartbeat for 15 s")}});
  });
  REQUIRE(f.cat.read([&](const Tx& tx) { return tx.restore(restore)->state; }) == SetState::failed);
  // The finished restore released its lock.
  REQUIRE(f.cat.transaction("operator:bob", [&](Tx& tx) { return tx.acquire_lock(target, TaskKind::restore, "rs-other", 3600); }));
}

TEST_CASE("an expired lock can be taken over, and the takeover is audited") {
  Fixture f;
  REQUIRE(f.cat.transaction("c", [](Tx& tx) { return tx.acquire_lock("t", TaskKind::backup, "bs-1", 10); }));
  f.advance_seconds(11);
  REQUIRE(f.cat.transaction("c", [](Tx& tx) { return tx.acquire_lock("t", TaskKind::restore, "rs-1", 10); }));
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  REQUIRE(events[events.size() - 2].action == "lock.expire");
}

TEST_CASE("a plan's tasks move on together (sent, accepted), audited exactly as one task update audits it") {
  TwoNodes f;
  // Task 0 the general way (update_task), task 1 the way the fleet marks a delivered plan.
  f.cat.transaction("controller", [&](Tx& tx) {
    for (const auto& t : f.tasks) tx.issue_plan({"pl-" + t.id, t.agent_id, "k1", f.now(), f.now(), f.now() + 600, {t.id}});
    tx.update_task(f.tasks[0].id, {TaskState::sent});
    CHECK(tx.move_plan_tasks("pl-" + f.tasks[1].id, TaskState::pending, TaskState::sent) == 1);
    // Sent once: nothing pending any more.
    CHECK(tx.move_plan_tasks("pl-" + f.tasks[1].id, TaskState::pending, TaskState::sent) == 0);
    CHECK(tx.move_plan_tasks("pl-nosuch", TaskState::pending, TaskState::sent) == 0);
    // Not for a step that ends a task or needs a reason, nor one update_task refuses.
    CHECK_THROWS_AS(tx.move_plan_tasks("pl-" + f.tasks[1].id, TaskState::sent, TaskState::rejected), Error);
    CHECK_THROWS_AS(tx.move_plan_tasks("pl-" + f.tasks[1].id, TaskState::sent, TaskState::succeeded), Error);
    CHECK_THROWS_AS(tx.move_plan_tasks("pl-" + f.tasks[1].id, TaskState::sent, TaskState::pending), Error);
  });
  auto events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  std::map<std::string, AuditEvent> sent;
  for (const auto& e : events)
    if (e.action == "task.sent") sent[e.target] = e;
  REQUIRE(sent.size() == 2);
  const auto& general = sent.at("task:" + f.tasks[0].id);
  const auto& fast = sent.at("task:" + f.tasks[1].id);
  CHECK(fast.outcome == general.outcome);
  CHECK(fast.reason == general.reason);
  auto g = nlohmann::json::parse(general.details), q = nlohmann::json::parse(fast.details);
  CHECK(q["agent_id"] == f.tasks[1].agent_id);
  g.erase("agent_id");
  q.erase("agent_id");
  CHECK(q == g);  // from, component, reasons, backup_set_id
  f.cat.read([&](const Tx& tx) {
    for (const auto& t : f.tasks) CHECK(tx.task(t.id)->state == TaskState::sent);
  });
  // The agent accepts both plans: every task accepted, one event each, the set still running.
  f.cat.transaction("agent", [&](Tx& tx) {
    for (const auto& t : f.tasks) tx.record_plan_ack("pl-" + t.id, true, cairn::v1::ERROR_CODE_OK, "");
  });
  f.cat.read([&](const Tx& tx) {
    for (const auto& t : f.tasks) CHECK(tx.task(t.id)->state == TaskState::accepted);
  });
  events = f.cat.read([](const Tx& tx) { return tx.audit_events(); });
  std::set<std::string> accepted;
  for (const auto& e : events)
    if (e.action == "task.accepted") {
      accepted.insert(e.target);
      CHECK(nlohmann::json::parse(e.details)["from"] == "sent");
    }
  CHECK(accepted.size() == 2);
  CHECK(f.set_state() == SetState::running);
  CHECK(f.cat.verify_audit_chain().ok);
}
