// The controller's periodic verification (controller/verification.h) over a
// real catalog and a filesystem repository: a snapshot the catalog holds that
// is not in the repository is missing (state, audit event, /metrics); what
// retention expired is not looked for; a repository whose maintenance job
// runs is not listed until it ends.
#include "controller/verification.h"

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <zmq.hpp>

#include "common/repo/repository.h"
#include "common/repo/storage/backend.h"
#include "common/util/fs.h"
#include "controller/catalog/catalog_fixture.h"
#include "controller/catalog/tx.h"
#include "controller/fleet.h"
#include "controller/status_view.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

// Helpers and tests in a namespace of their own: the unity build batches test files together.
namespace verification_test {

constexpr const char* kPass = "verification test pass";

StoredSnapshot stored(const std::string& id, const std::string& set = "bs-1") {
  StoredSnapshot s;
  s.snapshot_id = id;
  s.set_id = set;
  s.task_id = "tk-" + id;
  return s;
}

std::vector<std::string> ids(const std::vector<StoredSnapshot>& v) {
  std::vector<std::string> out;
  for (const auto& s : v) out.push_back(s.snapshot_id);
  return out;
}

struct VerifyFixture : Fixture {
  TempDir store;
  controller::ControllerConfig config = make_config();
  std::mutex gate_mu;
  std::condition_variable gate_cv;
  bool hold = false, at_gate = false;
  controller::Maintenance maintenance{config.repositories, [this](const controller::ForgetJob&) {
                                        std::unique_lock g(gate_mu);
                                        at_gate = true;
                                        gate_cv.notify_all();
                                        gate_cv.wait(g, [&] { return !hold; });
                                        at_gate = false;
                                      }};
  std::string a = approved_agent("node-a", 1);
  std::unique_ptr<repo::Backend> backend = repo::make_fs_backend(store.file("repo"));

  ~VerifyFixture() { open_gate(); }

  controller::ControllerConfig make_config() {
    controller::ControllerConfig c;
    c.controller_id = "test";
    std::string pass = std::string(kPass) + "\n";
    write_file_atomic(store.file("pass"), {reinterpret_cast<const uint8_t*>(pass.data()), pass.size()}, 0600);
    repo::InitOptions io;
    io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
    repo::Repository::init(*repo::make_fs_backend(store.file("repo")), repo::Secret(repo::Secret::Kind::passphrase, kPass), io);
    c.repositories.push_back({"main", store.file("repo"), store.file("pass")});
    c.verify_interval_seconds = 3600;
    return c;
  }
  // A set of one task of agent a whose snapshot `id` went to "main"; the
  // snapshot object is stored there unless `store_it` is false.
  std::string backed_up(const std::string& id, bool store_it = true) {
    auto set = cat.transaction("controller", [&](Tx& tx) {
      NewBackupSet s;
      s.tasks = {{a, "data"}};
      s.tasks[0].repository = "main";
      return tx.create_backup_set(s);
    });
    cat.transaction("agent", [&](Tx& tx) {
      for (const auto& t : tx.tasks_of_set(set)) {
        for (auto s : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(t.id, {s});
        TaskUpdate u{TaskState::succeeded};
        u.snapshot_id = id;
        u.manifest_digest = "d";
        tx.update_task(t.id, u);
      }
    });
    if (store_it) backend->save({repo::FileType::snapshot, id}, std::vector<uint8_t>{'{', '}'});
    return set;
  }
  // Ticks until the verification of "main" started at or after `since` was recorded.
  controller::RepositoryVerification verified(controller::Verifier& v, int64_t since) {
    for (int i = 0; i < 500; ++i) {
      v.tick(now());
      auto st = v.states().at(0);
      if (st.verified_at >= since || (!st.error.empty() && st.tried_at >= since)) return st;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("no verification recorded");
    return {};
  }
  std::vector<AuditEvent> events(const std::string& action) {
    std::vector<AuditEvent> out;
    for (const auto& e : cat.read([](const Tx& tx) { return tx.audit_events(); }))
      if (e.action == action) out.push_back(e);
    return out;
  }
  void wait_at_gate() {
    std::unique_lock g(gate_mu);
    REQUIRE(gate_cv.wait_for(g, std::chrono::seconds(10), [&] { return at_gate; }));
  }
  void open_gate() {
    std::lock_guard g(gate_mu);
    hold = false;
    gate_cv.notify_all();
  }
};

std::string hex_id(char c) { return std::string(64, c); }

TEST_CASE("missing: what the catalog held before and after the listing and the listing lacks") {
  std::vector<StoredSnapshot> before = {stored("a"), stored("b"), stored("c"), stored("d")};
  // c's set expired during the listing (retention may remove it); e was
  // recorded during it (not looked for: it was not asked before).
  std::vector<StoredSnapshot> after = {stored("a"), stored("b"), stored("d"), stored("e")};
  CHECK(ids(controller::missing_snapshots(before, {"a", "d"}, after)) == std::vector<std::string>{"b"});
  CHECK(controller::missing_snapshots(before, {"a", "b", "c", "d"}, after).empty());
  CHECK(controller::missing_snapshots({}, {}, after).empty());
  // One id twice (a copy recorded in the catalog twice) is named once.
  CHECK(controller::missing_snapshots({stored("b"), stored("b")}, {}, after).size() == 1);
}

TEST_CASE("a missing snapshot's line names its set, task, agent, component and time") {
  auto s = stored(hex_id('a'), "bs-7");
  s.agent = "node-a";
  s.component = "etcd";
  s.made_at = 1'790'000'000;
  CHECK(controller::missing_line(s) ==
        hex_id('a') + " (set bs-7, task tk-" + hex_id('a') + ", agent node-a, component etcd, made 2026-09-21 14:13:20 UTC)");
}

TEST_CASE_METHOD(VerifyFixture, "the catalog says which snapshots a repository holds: not an expired set's, and copies there") {
  auto s1 = backed_up(hex_id('1'));
  auto s2 = backed_up(hex_id('2'));
  auto held = cat.read([](const Tx& tx) { return tx.snapshots_in("main"); });
  REQUIRE(held.size() == 2);
  CHECK(held[0].set_id < held[1].set_id);
  auto one = held[0].set_id == s1 ? held[0] : held[1];
  CHECK(one.snapshot_id == hex_id('1'));
  CHECK(one.agent == "node-a");
  CHECK(one.component == "data");
  CHECK(one.made_at == now());
  CHECK_FALSE(one.copy);
  CHECK(cat.read([](const Tx& tx) { return tx.snapshots_in("other"); }).empty());
  cat.transaction("controller", [&](Tx& tx) { tx.expire_set(s1, "test"); });
  CHECK(ids(cat.read([](const Tx& tx) { return tx.snapshots_in("main"); })) == std::vector<std::string>{hex_id('2')});
}

TEST_CASE_METHOD(VerifyFixture, "a copy the controller made is held by the repository it went to, once it landed") {
  cat.transaction("operator:test", [&](Tx& tx) {
    Policy p;
    p.name = "nightly";
    p.schedule = "@daily";
    p.copy_to = "offsite";
    tx.put_policy(p, true);
  });
  auto set = cat.transaction("controller", [&](Tx& tx) {
    NewBackupSet s;
    s.trigger = "schedule";
    s.policy = "nightly";
    s.tasks = {{a, "data"}};
    s.tasks[0].repository = "main";
    return tx.create_backup_set(s);
  });
  auto task = cat.read([&](const Tx& tx) { return tx.tasks_of_set(set); }).at(0);
  cat.transaction("agent", [&](Tx& tx) {
    for (auto st : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(task.id, {st});
    TaskUpdate u{TaskState::succeeded};
    u.snapshot_id = hex_id('1');
    u.manifest_digest = "d";
    tx.update_task(task.id, u);
  });
  REQUIRE(cat.transaction("controller", [&](Tx& tx) { return tx.set_copies_due(now(), 8); }).size() == 1);
  // Pending, or failed part-way: not yet the controller's word.
  cat.transaction("controller", [&](Tx& tx) { tx.set_copy_failed(set, "offsite", "cut", {{task.id, hex_id('9')}}, 60); });
  CHECK(cat.read([](const Tx& tx) { return tx.snapshots_in("offsite"); }).empty());
  cat.transaction("controller", [&](Tx& tx) { tx.set_copy_copied(set, "offsite", 1, 10, 1, {{task.id, hex_id('c')}}); });
  auto off = cat.read([](const Tx& tx) { return tx.snapshots_in("offsite"); });
  REQUIRE(off.size() == 1);
  CHECK(off[0].snapshot_id == hex_id('c'));
  CHECK(off[0].copy);
  CHECK(off[0].task_id == task.id);
  CHECK(ids(cat.read([](const Tx& tx) { return tx.snapshots_in("main"); })) == std::vector<std::string>{hex_id('1')});
  cat.transaction("controller", [&](Tx& tx) { tx.expire_set(set, "test"); });
  CHECK(cat.read([](const Tx& tx) { return tx.snapshots_in("offsite"); }).empty());
}

TEST_CASE_METHOD(VerifyFixture, "a snapshot deleted behind the controller's back is missing: state, audit event, /metrics") {
  auto s1 = backed_up(hex_id('1'));
  auto s2 = backed_up(hex_id('2'));
  backed_up(hex_id('3'));
  backend->remove({repo::FileType::snapshot, hex_id('2')});
  // An expired set's snapshot may be gone (retention): not looked for.
  auto s4 = backed_up(hex_id('4'), false);
  cat.transaction("controller", [&](Tx& tx) { tx.expire_set(s4, "test"); });

  controller::Verifier v(cat, maintenance, config);
  CHECK(v.states().at(0).verified_at == 0);
  auto st = verified(v, now());  // the first turn comes right after the start
  CHECK(st.error.empty());
  CHECK(st.expected == 3);
  CHECK(st.listed == 2);
  REQUIRE(st.missing.size() == 1);
  CHECK(st.missing[0].snapshot_id == hex_id('2'));
  CHECK(st.missing[0].set_id == s2);
  CHECK(st.protection_known);
  CHECK(st.protection.state == repo::Protection::not_applicable);
  CHECK_FALSE(st.remote);

  auto ev = events("repository.snapshots_missing");
  REQUIRE(ev.size() == 1);
  CHECK(ev[0].target == "repository:main");
  auto details = nlohmann::json::parse(ev[0].details);
  CHECK(details["missing"] == 1);
  CHECK(details["snapshots"][0]["snapshot"] == hex_id('2'));
  CHECK(details["snapshots"][0]["set"] == s2);

  zmq::context_t ctx;
  zmq::socket_t sock(ctx, zmq::socket_type::router);
  controller::Fleet fleet(sock, cat, config, "k");
  controller::StatusSources src{cat, fleet, maintenance, nullptr, {"main"}, &v};
  auto metrics = controller::render_metrics(src);
  CHECK(metrics.find("cairn_repository_snapshots_missing{repository=\"main\"} 1\n") != std::string::npos);
  CHECK(metrics.find("cairn_repository_verified_timestamp_seconds{repository=\"main\"} " + std::to_string(st.verified_at)) !=
        std::string::npos);
  CHECK(metrics.find("cairn_repository_store_protection{repository=\"main\",state=\"not_applicable\"} 1\n") != std::string::npos);
  auto page = controller::render_status_page(src, "test");
  CHECK(page.find("1 of the 3 the catalog holds MISSING") != std::string::npos);
  CHECK(page.find(hex_id('2') + " (set " + s2) != std::string::npos);
  CHECK(page.find("store protection: not_applicable") != std::string::npos);

  // The next turn, an interval later: the same snapshot missing is not a new event.
  advance_seconds(3600);
  st = verified(v, now());
  CHECK(st.missing.size() == 1);
  CHECK(events("repository.snapshots_missing").size() == 1);
  // Put back, it is found; a second one gone is a new event.
  backend->save({repo::FileType::snapshot, hex_id('2')}, std::vector<uint8_t>{'{', '}'});
  backend->remove({repo::FileType::snapshot, hex_id('1')});
  advance_seconds(3600);
  st = verified(v, now());
  CHECK(ids(st.missing) == std::vector<std::string>{hex_id('1')});
  CHECK(events("repository.snapshots_missing").size() == 2);
  (void)s1;
}

TEST_CASE_METHOD(VerifyFixture, "a repository is not listed while its maintenance job runs, and is once it ends") {
  backed_up(hex_id('1'));
  hold = true;
  maintenance.submit({"main", {}, {}, {}});
  wait_at_gate();
  controller::Verifier v(cat, maintenance, config);
  for (int i = 0; i < 20; ++i) {
    v.tick(now());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  CHECK(v.states().at(0).tried_at == 0);
  open_gate();
  for (int i = 0; i < 500 && maintenance.busy("main"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  auto st = verified(v, now());
  CHECK(st.missing.empty());
  CHECK(st.expected == 1);
}

TEST_CASE_METHOD(VerifyFixture, "a repository that cannot be opened is reported and tried again") {
  config.repositories[0].password_file = store.file("no-such-file");
  backed_up(hex_id('1'));
  controller::Verifier v(cat, maintenance, config);
  auto st = verified(v, now());
  CHECK(st.verified_at == 0);
  CHECK_FALSE(st.error.empty());
  CHECK(st.missing.empty());
  CHECK(events("repository.snapshots_missing").empty());
}

}  // namespace verification_test
