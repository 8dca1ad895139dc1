// Offsite copies by policy in the catalog (migration 0018; controller/set_copy.h):
// queued for each ended set of a policy with copy_to, retried with a growing
// delay, recorded per task, removed with the set.
#include <catch2/catch.hpp>

#include "catalog_fixture.h"
#include "controller/catalog/tx.h"

using namespace cairn::catalog;
using namespace cairn::catalog::test;

namespace {

struct PolicySet : Fixture {
  std::string a = approved_agent("node-a", 1);
  std::string set;
  std::vector<Task> tasks;

  explicit PolicySet(const std::string& copy_to = "offsite") {
    cat.transaction("operator:alice", [&](Tx& tx) {
      Policy p;
      p.name = "nightly";
      p.schedule = "@daily";
      p.copy_to = copy_to;
      tx.put_policy(p, true);
    });
    set = cat.transaction("controller", [&](Tx& tx) {
      NewBackupSet s;
      s.trigger = "schedule";
      s.policy = "nightly";
      s.tasks = {{a, "etc", {}}};
      return tx.create_backup_set(s);
    });
    tasks = cat.read([&](const Tx& tx) { return tx.tasks_of_set(set); });
  }
  void succeed() {
    cat.transaction("controller", [&](Tx& tx) {
      tx.issue_plan({"pl-" + tasks[0].id, a, "k1", now(), now(), now() + 600, {tasks[0].id}});
      tx.update_task(tasks[0].id, {TaskState::sent});
      tx.record_plan_ack("pl-" + tasks[0].id, true, cairn::v1::ERROR_CODE_OK, "");
    });
    cat.transaction("agent:" + a, [&](Tx& tx) {
      tx.update_task(tasks[0].id, {TaskState::running});
      TaskUpdate u{TaskState::succeeded};
      u.snapshot_id = "sn-1";
      u.manifest_digest = std::string(64, 'a');
      tx.update_task(tasks[0].id, u);
    });
  }
  std::vector<SetCopy> due() {
    return cat.transaction("controller", [&](Tx& tx) { return tx.set_copies_due(now(), 8); });
  }
};

}  // namespace

TEST_CASE("a set is copied only once it ended, and only for a policy with copy_to") {
  PolicySet f;
  CHECK(f.due().empty());  // still running
  f.succeed();
  auto d = f.due();
  REQUIRE(d.size() == 1);
  CHECK(d[0].set_id == f.set);
  CHECK(d[0].repository == "offsite");
  CHECK(d[0].state == "pending");
  CHECK(f.due().size() == 1);  // queued once, due until it ends

  PolicySet none("");
  none.succeed();
  CHECK(none.due().empty());
}

TEST_CASE("a failed copy is tried again after a delay that doubles, then recorded with its snapshots once it lands") {
  PolicySet f;
  f.succeed();
  REQUIRE(f.due().size() == 1);
  f.cat.transaction("controller", [&](Tx& tx) { tx.set_copy_failed(f.set, "offsite", "the store refused (AccessDenied)", {}, 60); });
  CHECK(f.due().empty());
  f.advance_seconds(61);
  REQUIRE(f.due().size() == 1);
  f.cat.transaction("controller", [&](Tx& tx) {
    tx.set_copy_failed(f.set, "offsite", "still refused", {{f.tasks[0].id, "sn-partial"}}, 60);
  });
  f.advance_seconds(61);
  CHECK(f.due().empty());  // the second wait is two minutes
  f.advance_seconds(60);
  REQUIRE(f.due().size() == 1);
  auto copies = f.cat.read([&](const Tx& tx) { return tx.set_copies(f.set); });
  REQUIRE(copies.size() == 1);
  CHECK(copies[0].state == "failed");
  CHECK(copies[0].attempts == 2);
  CHECK(copies[0].reason == "still refused");
  // What the failed attempt stored there is known (retention removes it).
  CHECK(f.cat.read([&](const Tx& tx) { return tx.task_copies(f.set, "offsite"); }).at(f.tasks[0].id) == "sn-partial");

  f.cat.transaction("controller", [&](Tx& tx) { tx.set_copy_copied(f.set, "offsite", 1, 1000, 7, {{f.tasks[0].id, "sn-copy"}}); });
  CHECK(f.due().empty());
  copies = f.cat.read([&](const Tx& tx) { return tx.set_copies(f.set); });
  CHECK(copies[0].state == "copied");
  CHECK(copies[0].reason.empty());
  CHECK(copies[0].blobs_new == 7);
  CHECK(f.cat.read([&](const Tx& tx) { return tx.task_copies(f.set, "offsite"); }).at(f.tasks[0].id) == "sn-copy");
  auto stats = f.cat.read([&](const Tx& tx) { return tx.copy_stats(); });
  REQUIRE(stats.size() == 1);
  CHECK(stats[0].copied == 1);
  CHECK(stats[0].failed == 0);
  CHECK(stats[0].last_copied_at.has_value());
  // Its signed record is due again, to name the copy.
  CHECK(f.cat.read([&](const Tx& tx) { return tx.set_records_due(8); }) == std::vector<std::string>{f.set});

  // Removed with the set: no longer listed for retention, no longer counted.
  f.cat.transaction("controller", [&](Tx& tx) { tx.mark_copy_removed(f.set, "offsite"); });
  CHECK(f.cat.read([&](const Tx& tx) { return tx.task_copies(f.set, "offsite"); }).empty());
  CHECK(f.cat.read([&](const Tx& tx) { return tx.copy_stats(); }).empty());
}

TEST_CASE("an expired set is not copied") {
  PolicySet f;
  f.succeed();
  f.cat.transaction("controller", [&](Tx& tx) { tx.expire_set(f.set, "a test"); });
  CHECK(f.due().empty());
}

TEST_CASE("a running copy's progress is kept until it ends or none runs, and never overwrites a landed copy") {
  PolicySet f;
  f.succeed();
  REQUIRE(f.due().size() == 1);
  f.cat.transaction("controller", [&](Tx& tx) { tx.set_copy_progress(f.set, "offsite", 1000, 0, 1, 300, 1200); });
  auto copies = f.cat.read([&](const Tx& tx) { return tx.set_copies(f.set); });
  REQUIRE(copies.size() == 1);
  REQUIRE(copies[0].started_at == 1000);
  CHECK(copies[0].bytes == 300);
  CHECK(copies[0].bytes_total == 1200);
  CHECK(copies[0].snapshots_total == 1);
  auto stats = f.cat.read([&](const Tx& tx) { return tx.copy_stats(); });
  REQUIRE(stats.size() == 1);
  REQUIRE(stats[0].copying);
  CHECK(stats[0].copying->set_id == f.set);
  CHECK(stats[0].copying->bytes == 300);
  CHECK(stats[0].copying->bytes_total == 1200);

  // A controller restarted mid-copy: none runs, so none is shown running.
  f.cat.transaction("controller", [&](Tx& tx) { tx.clear_copy_progress(); });
  CHECK_FALSE(f.cat.read([&](const Tx& tx) { return tx.set_copies(f.set); })[0].started_at);
  CHECK_FALSE(f.cat.read([&](const Tx& tx) { return tx.copy_stats(); })[0].copying);

  // Its end clears it; a late progress write does not touch a landed copy's figures.
  f.cat.transaction("controller", [&](Tx& tx) { tx.set_copy_progress(f.set, "offsite", 1000, 0, 1, 900, 1200); });
  f.cat.transaction("controller", [&](Tx& tx) { tx.set_copy_copied(f.set, "offsite", 1, 1200, 7, {{f.tasks[0].id, "sn-copy"}}); });
  f.cat.transaction("controller", [&](Tx& tx) { tx.set_copy_progress(f.set, "offsite", 1000, 0, 1, 5, 1200); });
  copies = f.cat.read([&](const Tx& tx) { return tx.set_copies(f.set); });
  CHECK(copies[0].state == "copied");
  CHECK_FALSE(copies[0].started_at);
  CHECK(copies[0].bytes == 1200);
  CHECK(copies[0].snapshots == 1);
}
