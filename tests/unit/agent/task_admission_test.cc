// A signed plan still picks only among what the agent declares.
#include "agent/task_admission.h"

#include <catch2/catch.hpp>

#include "agent/config.h"
#include "agent_fixture.h"

using namespace cairn::agent;
using namespace cairn::agent::test;
namespace v1 = cairn::v1;

namespace {
v1::Task task(const std::string& component, v1::TaskKind kind) {
  v1::Task t;
  t.set_task_id("t1");
  t.set_component(component);
  t.set_kind(kind);
  if (kind == v1::TASK_KIND_RESTORE) t.mutable_snapshot()->set_snapshot_id("abcd1234");
  return t;
}
}  // namespace

TEST_CASE("a task naming an undeclared component is refused with unknown_component") {
  TempDir d;
  AgentConfig c = parse_config(base_config(d), "agent.toml");
  Admission a = admit_task(c, "p1", task("shadow", v1::TASK_KIND_BACKUP));
  REQUIRE_FALSE(a.task);
  REQUIRE(a.refusal.code() == v1::ERROR_CODE_UNKNOWN_COMPONENT);
  REQUIRE_THAT(a.refusal.detail(), Catch::Contains("'shadow'"));
}

TEST_CASE("a declared component is admitted with its repository") {
  TempDir d;
  AgentConfig c = parse_config(base_config(d), "agent.toml");
  Admission a = admit_task(c, "p1", task("data", v1::TASK_KIND_BACKUP));
  REQUIRE(a.task);
  REQUIRE(a.task->repository->name == "main");
  REQUIRE(a.task->component->name == "data");
}

TEST_CASE("undeclared repositories and restore targets are refused") {
  TempDir d;
  AgentConfig c = parse_config(base_config(d), "agent.toml");
  auto t = task("data", v1::TASK_KIND_BACKUP);
  t.mutable_options()->set_repository("attacker");
  Admission a = admit_task(c, "p1", t);
  REQUIRE_FALSE(a.task);
  REQUIRE_THAT(a.refusal.detail(), Catch::Contains("'attacker'"));

  auto r = task("data", v1::TASK_KIND_RESTORE);
  r.mutable_options()->set_restore_target("/etc");
  a = admit_task(c, "p1", r);
  REQUIRE_FALSE(a.task);
  REQUIRE(a.refusal.code() == v1::ERROR_CODE_UNSUPPORTED_TASK);

  r.mutable_options()->set_restore_target("alternate");
  a = admit_task(c, "p1", r);
  REQUIRE(a.task);

  auto none = task("data", v1::TASK_KIND_UNSPECIFIED);
  a = admit_task(c, "p1", none);
  REQUIRE_FALSE(a.task);
}

TEST_CASE("a drill task is admitted only by an agent with a [drill] section, for a driver it drills") {
  TempDir d;
  v1::Task t;
  t.set_task_id("t1");
  t.set_component("etcd");  // the drilled component's name: this agent need not declare it
  t.set_kind(v1::TASK_KIND_DRILL);
  t.set_drill_driver("etcd");
  t.mutable_snapshot()->set_snapshot_id("abcd1234");
  t.mutable_snapshot()->set_repository("main");

  AgentConfig plain = parse_config(base_config(d), "agent.toml");
  Admission a = admit_task(plain, "p1", t);
  REQUIRE_FALSE(a.task);
  REQUIRE(a.refusal.code() == v1::ERROR_CODE_UNSUPPORTED_TASK);
  REQUIRE_THAT(a.refusal.detail(), Catch::Contains("no [drill] section"));

  AgentConfig drills = parse_config(base_config(d) + "[drill]\nroot = \"" + d.file("drills") + "\"\n", "agent.toml");
  a = admit_task(drills, "p1", t);
  REQUIRE(a.task);
  REQUIRE(a.task->component == nullptr);
  REQUIRE(a.task->repository->name == "main");

  t.set_drill_driver("rabbitmq");
  a = admit_task(drills, "p1", t);
  REQUIRE_FALSE(a.task);
  REQUIRE_THAT(a.refusal.detail(), Catch::Contains("cannot drill driver 'rabbitmq'"));

  // A Kafka cluster's brokers: all from the task's repository, its own snapshot among them.
  t.set_drill_driver("kafka");
  auto member = [&](const std::string& id, const std::string& repo) {
    auto* m = t.add_drill_members();
    m->set_snapshot_id(id);
    m->set_repository(repo);
  };
  member("ffff0000", "main");
  a = admit_task(drills, "p1", t);
  REQUIRE_FALSE(a.task);
  REQUIRE_THAT(a.refusal.detail(), Catch::Contains("not among the brokers it lists"));
  member("abcd1234", "main");
  a = admit_task(drills, "p1", t);
  REQUIRE(a.task);
  // ZooKeeper mode: the set's ZooKeeper snapshot, from the same repository.
  auto* zk = t.add_drill_zookeeper();
  zk->set_snapshot_id("2c2c0000");
  zk->set_repository("other");
  a = admit_task(drills, "p1", t);
  REQUIRE_FALSE(a.task);
  REQUIRE_THAT(a.refusal.detail(), Catch::Contains("ZooKeeper snapshot is in repository 'other'"));
  zk->set_repository("main");
  a = admit_task(drills, "p1", t);
  REQUIRE(a.task);
  t.clear_drill_zookeeper();
  member("eeee0000", "other");
  a = admit_task(drills, "p1", t);
  REQUIRE_FALSE(a.task);
  REQUIRE_THAT(a.refusal.detail(), Catch::Contains("more than one repository"));
  t.clear_drill_members();

  t.set_drill_driver("files");
  t.mutable_snapshot()->set_repository("elsewhere");
  a = admit_task(drills, "p1", t);
  REQUIRE_FALSE(a.task);
  REQUIRE_THAT(a.refusal.detail(), Catch::Contains("'elsewhere' is not declared"));
}
