// The scheduler over a real catalog with a pinned clock: due runs start a
// set, a run due while the previous one runs is skipped with the reason,
// runs missed while the controller was down run once, configuration policies
// win, labels select agents, and retention follows a complete run; its
// prune, locked out, goes again when the lock's holder is done.
#include "controller/scheduler.h"

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <sstream>
#include <thread>
#include <zmq.hpp>

#include "common/repo/lock.h"
#include "common/repo/repository.h"
#include "common/util/fs.h"
#include "controller/catalog/catalog_fixture.h"
#include "controller/fleet.h"
#include "controller/status_view.h"

using namespace cairn;
using namespace cairn::catalog;
using namespace cairn::catalog::test;

namespace {

struct SchedulerFixture : Fixture {
  controller::ControllerConfig config;
  plan::SigningKey key = plan::SigningKey::generate();
  controller::Orders orders{cat, config, key};
  controller::Maintenance maintenance{{}};
  controller::Scheduler scheduler{cat, orders, maintenance, config};
  std::string a = approved_agent("node-a", 1), b = approved_agent("node-b", 2);

  SchedulerFixture() {
    config.controller_id = "test";
    cat.transaction("agent", [&](Tx& tx) {
      tx.set_agent_components(a, {{"data", "files", true}});
      tx.set_agent_components(b, {{"data", "files", true}});
      tx.set_agent_labels(a, {{"role", "db"}});
    });
  }

  Policy policy(const std::string& name, const std::string& schedule) {
    Policy p;
    p.name = name;
    p.schedule = schedule;
    return p;
  }
  void add(Policy p) {
    p.next_run_at = controller::Scheduler::next_run(p, now());
    cat.transaction("operator:test", [&](Tx& tx) { tx.put_policy(p, true); });
  }
  Policy get(const std::string& name) {
    return *cat.read([&](const Tx& tx) { return tx.policy(name); });
  }
  std::vector<PolicyRun> runs(const std::string& name) {
    return cat.read([&](const Tx& tx) { return tx.policy_runs(name, 100); });
  }
  std::vector<BackupSet> sets(const std::string& name) {
    return cat.read([&](const Tx& tx) { return tx.policy_sets(name); });
  }
  // Ends every task of the set as `state` (a snapshot unless failed).
  void finish(const std::string& set_id, TaskState state) {
    cat.transaction("agent", [&](Tx& tx) {
      for (const auto& t : tx.tasks_of_set(set_id)) {
        for (auto s : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(t.id, {s});
        TaskUpdate u{state};
        if (state != TaskState::succeeded) u.reasons.push_back(reason(cairn::v1::ERROR_CODE_IO_ERROR, "disk"));
        if (state != TaskState::failed) {
          u.snapshot_id = "snap-" + t.id;
          u.manifest_digest = "d";
        }
        tx.update_task(t.id, u);
      }
    });
  }
  // Moves the clock to the policy's next run and ticks.
  std::vector<std::string> run_due(const std::string& name) {
    auto p = get(name);
    REQUIRE(p.next_run_at);
    advance_seconds(*p.next_run_at - now());
    return scheduler.tick(now());
  }
};

}  // namespace

TEST_CASE_METHOD(SchedulerFixture, "a due policy starts a set; the next run is set from the schedule") {
  add(policy("hourly", "0 * * * *"));
  scheduler.start(now());
  CHECK(scheduler.tick(now()).empty());  // not due yet
  auto agents = run_due("hourly");
  CHECK(agents.size() == 2);
  auto r = runs("hourly");
  REQUIRE(r.size() == 1);
  CHECK(r[0].outcome == "started");
  CHECK(r[0].trigger == "schedule");
  auto s = sets("hourly");
  REQUIRE(s.size() == 1);
  CHECK(s[0].trigger == "schedule");
  CHECK(s[0].requested_by == "policy:hourly");
  CHECK(s[0].policy == "hourly");
  CHECK(*get("hourly").next_run_at == now() + 3600);
}

TEST_CASE_METHOD(SchedulerFixture, "a run due while the previous one runs is skipped, with the reason") {
  add(policy("often", "@every 1m"));
  scheduler.start(now());
  run_due("often");
  auto first = sets("often").at(0).id;
  run_due("often");  // the first set is still running
  auto r = runs("often");
  REQUIRE(r.size() == 2);
  CHECK(r[0].outcome == "skipped");
  CHECK_THAT(r[0].reason, Catch::Contains(first) && Catch::Contains("still running"));
  CHECK(sets("often").size() == 1);
  finish(first, TaskState::succeeded);
  run_due("often");
  CHECK(runs("often")[0].outcome == "started");
  CHECK(sets("often").size() == 2);
}

TEST_CASE_METHOD(SchedulerFixture, "runs missed while the controller was down run once, not once each") {
  add(policy("often", "@every 1m"));
  scheduler.start(now());
  advance_seconds(10 * 60 + 5);  // ten runs fell due while nothing ticked
  controller::Scheduler restarted{cat, orders, maintenance, config};
  restarted.start(now());
  restarted.tick(now());
  auto r = runs("often");
  REQUIRE(r.size() == 1);
  CHECK(r[0].trigger == "missed");
  CHECK(r[0].outcome == "started");
  CHECK_THAT(r[0].reason, Catch::Contains("10 run(s) fell due while the controller was not running"));
  CHECK(*get("often").next_run_at > now());
  restarted.tick(now() + 1);
  CHECK(runs("often").size() == 1);
}

TEST_CASE_METHOD(SchedulerFixture, "a paused policy does not run; resumed, it runs from then on") {
  add(policy("p", "@every 1m"));
  cat.transaction("operator:test", [&](Tx& tx) {
    tx.set_policy_paused("p", true);
    tx.set_policy_next_run("p", std::nullopt);
  });
  scheduler.start(now());
  advance_seconds(600);
  scheduler.tick(now());
  CHECK(runs("p").empty());
}

TEST_CASE_METHOD(SchedulerFixture, "labels select agents; a selection of nothing is refused and recorded") {
  auto p = policy("db", "@every 1m");
  p.selector["labels"] = {{"role", "db"}};
  add(p);
  auto q = policy("none", "@every 1m");
  q.selector["labels"] = {{"role", "cache"}};
  add(q);
  scheduler.start(now());
  auto agents = run_due("db");
  REQUIRE(agents.size() == 1);
  CHECK(agents[0] == a);
  auto r = runs("none");
  REQUIRE(r.size() == 1);
  CHECK(r[0].outcome == "refused");
  CHECK_THAT(r[0].reason, Catch::Contains("matched no component"));
}

TEST_CASE_METHOD(SchedulerFixture, "the configuration's policies replace the catalog's and go when removed from it") {
  add(policy("nightly", "0 1 * * *"));
  auto declared = policy("nightly", "0 2 * * *");
  declared.source = "config";
  config.policies = {declared};
  scheduler.start(now());
  CHECK(get("nightly").schedule == "0 2 * * *");
  CHECK(get("nightly").source == "config");
  config.policies.clear();
  controller::Scheduler restarted{cat, orders, maintenance, config};
  restarted.start(now());
  CHECK_FALSE(cat.read([&](const Tx& tx) { return tx.policy("nightly"); }));
}

TEST_CASE_METHOD(SchedulerFixture, "retention after a complete run expires the sets no rule keeps") {
  auto p = policy("keep2", "@every 1m");
  p.retention.last = 2;
  add(p);
  scheduler.start(now());
  for (int i = 0; i < 4; ++i) {
    run_due("keep2");
    finish(sets("keep2").at(0).id, i == 1 ? TaskState::failed : TaskState::succeeded);
  }
  scheduler.tick(now() + 1);  // follows the last set: complete, so retention runs
  auto s = sets("keep2");
  REQUIRE(s.size() == 4);
  // Newest first: complete, complete, failed, complete. The oldest complete one goes.
  CHECK_FALSE(s[0].expired_at);
  CHECK_FALSE(s[1].expired_at);
  CHECK_FALSE(s[2].expired_at);  // the only failed set: the newest of its group
  CHECK(s[3].expired_at);
  // No [[repository]] is declared: its snapshots stay, and it is not forgotten.
  advance_seconds(10);
  scheduler.tick(now());
  CHECK_FALSE(sets("keep2")[3].forgotten_at);
  // A dry run changes nothing and says which rule keeps each set.
  auto d = scheduler.retention("operator:test", "keep2", true);
  REQUIRE(d.size() == 4);
  CHECK(d[0].reasons == std::vector<std::string>{"last 1"});
}

TEST_CASE_METHOD(SchedulerFixture, "keep_proven: a set a drill is reading stays until the drill ends, and proven it stays") {
  auto p = policy("proven", "@every 1m");
  p.retention.last = 1;
  p.keep_proven = true;
  add(p);
  scheduler.start(now());
  for (int i = 0; i < 2; ++i) {
    run_due("proven");
    finish(sets("proven").at(0).id, TaskState::succeeded);
  }
  const std::string drilled = sets("proven").at(0).id;  // the newest, for now
  cairn::v1::DrillRequest req;
  req.set_backup_set_id(drilled);
  auto drill = orders.create_drill("operator:test", req);
  // A newer set while the drill runs: keep-last 1 alone would expire the drilled one.
  run_due("proven");
  finish(sets("proven").at(0).id, TaskState::succeeded);
  auto d = scheduler.retention("operator:test", "proven", false);
  auto decision = [&](const std::string& id) {
    for (const auto& x : d)
      if (x.set.id == id) return x;
    FAIL("no decision for " + id);
    return d.front();
  };
  CHECK(decision(drilled).keep);
  CHECK(std::find(decision(drilled).reasons.begin(), decision(drilled).reasons.end(), "a drill of it is running (keep_proven)") !=
        decision(drilled).reasons.end());
  auto s = sets("proven");
  REQUIRE(s.size() == 3);
  CHECK_FALSE(s[0].expired_at);
  CHECK_FALSE(s[1].expired_at);  // the drilled one
  CHECK(s[2].expired_at);
  // The drill proves it: it stays as the newest proven set.
  cat.transaction("agent", [&](Tx& tx) {
    for (const auto& t : tx.tasks_of_restore(drill.id)) {
      for (auto st : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(t.id, {st});
      tx.update_task(t.id, {TaskState::succeeded});
    }
  });
  d = scheduler.retention("operator:test", "proven", false);
  CHECK(decision(drilled).keep);
  CHECK_FALSE(sets("proven")[1].expired_at);
}

TEST_CASE_METHOD(SchedulerFixture,
                 "a component whose agent declares no drill for its driver is refused by name, or left out of a scheduled drill") {
  // node-b's driver has no drill (ComponentInfo.has_drill false); node-a's has.
  cat.transaction("agent", [&](Tx& tx) {
    Component c{"data", "files", true};
    c.has_drill = false;
    tx.set_agent_components(b, {c});
  });
  REQUIRE_FALSE(cat.read([&](const Tx& tx) { return tx.agent_components(b); }).at(0).has_drill);
  REQUIRE(cat.read([&](const Tx& tx) { return tx.agent_components(a); }).at(0).has_drill);
  auto ordered = orders.create_backup("operator:test", {});
  finish(ordered.id, TaskState::succeeded);
  cairn::v1::DrillRequest named;
  named.set_backup_set_id(ordered.id);
  REQUIRE_THROWS_WITH(orders.create_drill("operator:test", named), Catch::Contains("'data' (driver files: no drill exists for it)") &&
                                                                       Catch::Contains("leave them out with --component"));
  // Only node-a's: drilled.
  named.mutable_selector()->add_nodes("node-a");
  auto one = orders.create_drill("operator:test", named);
  CHECK(cat.read([&](const Tx& tx) { return tx.tasks_of_restore(one.id); }).size() == 1);
  // A policy's drill of the whole set drills node-a's and says what it left out.
  cairn::v1::DrillRequest scheduled;
  scheduled.set_backup_set_id(ordered.id);
  scheduled.set_policy("nightly");
  auto d = orders.create_drill("policy:nightly", scheduled);
  auto tasks = cat.read([&](const Tx& tx) { return tx.tasks_of_restore(d.id); });
  REQUIRE(tasks.size() == 1);
  bool skipped = false;
  for (const auto& e : cat.read([](const Tx& tx) { return tx.audit_events(); }))
    skipped = skipped || (e.action == "drill.skipped" && e.outcome == "skipped");
  CHECK(skipped);
}

TEST_CASE_METHOD(SchedulerFixture,
                 "a drill that could not run neither clears an earlier failed drill nor makes one; a proven one clears both") {
  auto ordered = orders.create_backup("operator:test", {});
  finish(ordered.id, TaskState::succeeded);
  // Each drill of node-a's snapshot, ended with the agent's verdict.
  auto drill = [&](TaskState state, const std::string& verdict, const std::string& why) {
    cairn::v1::DrillRequest req;
    req.set_backup_set_id(ordered.id);
    req.mutable_selector()->add_nodes("node-a");
    auto d = orders.create_drill("operator:test", req);
    cat.transaction("agent", [&](Tx& tx) {
      for (const auto& t : tx.tasks_of_restore(d.id)) {
        for (auto st : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(t.id, {st});
        TaskUpdate u{state};
        if (state != TaskState::succeeded) u.reasons.push_back(reason(cairn::v1::ERROR_CODE_VERIFY_FAILED, why));
        u.component_metadata = nlohmann::json{{"drill", {{"verdict", verdict}}}}.dump();
        tx.update_task(t.id, u);
      }
    });
    advance_seconds(1);
  };
  auto health = [&] {
    for (const auto& h : cat.read([](const Tx& tx) { return tx.component_health(); }))
      if (h.component == "data" && h.where == "node-a") return h;
    FAIL("no row for data on node-a");
    return ComponentHealth{};
  };
  auto counts = [&] {
    for (const auto& d : cat.read([](const Tx& tx) { return tx.drill_stats(); }))
      if (d.component == "data") return std::array<int64_t, 3>{d.proven, d.failed, d.not_run};
    return std::array<int64_t, 3>{};
  };
  drill(TaskState::failed, "failed", "blob damaged in pack 'p1'");
  CHECK(health().last_drill_failure == "blob damaged in pack 'p1'");
  CHECK(health().last_drill_not_run.empty());
  drill(TaskState::failed, "not_run", "over the [drill] disk_budget");
  CHECK(health().last_drill_failure == "blob damaged in pack 'p1'");  // still the newest drill that ran
  CHECK(health().last_drill_not_run == "over the [drill] disk_budget");
  CHECK_FALSE(health().proven_at);
  CHECK(counts() == std::array<int64_t, 3>{0, 1, 1});
  drill(TaskState::succeeded, "proven", "");
  CHECK(health().last_drill_failure.empty());
  CHECK(health().last_drill_not_run.empty());
  CHECK(health().proven_at);
  CHECK(counts() == std::array<int64_t, 3>{1, 1, 1});
}

// A retention prune that finds the repository locked. Held by a backup the
// catalog knows of, it goes again in the tick after that backup ends; held by
// anyone else, 5 s later, then every minute. (The controller's integration test hit the
// first by chance and waited a whole minute for it.) And a prune under way
// gives way to a backup ordered since it began: backups come first.
namespace {

struct PruneFixture : Fixture {
  static constexpr const char* kPass = "correct horse";
  TempDir store;
  controller::ControllerConfig config = make_config();
  plan::SigningKey key = plan::SigningKey::generate();
  controller::Orders orders{cat, config, key};
  // A gate the prune stops at (after the snapshots are removed, under the
  // exclusive lock) while `hold` is set.
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
  controller::Scheduler scheduler{cat, orders, maintenance, config};
  std::string a = approved_agent("node-a", 1);

  void wait_at_gate() {
    std::unique_lock g(gate_mu);
    REQUIRE(gate_cv.wait_for(g, std::chrono::seconds(10), [&] { return at_gate; }));
  }
  // Ticks with the gate shut: the prune that tick submits stops at the gate,
  // under the exclusive lock.
  void prune_to_gate() {
    hold = true;
    advance_seconds(1);
    scheduler.tick(now());
    wait_at_gate();
  }
  void open_gate() {
    std::lock_guard g(gate_mu);
    hold = false;
    gate_cv.notify_all();
  }

  controller::ControllerConfig make_config() {
    controller::ControllerConfig c;
    c.controller_id = "test";
    std::string pass = std::string(kPass) + "\n";
    write_file_atomic(store.file("pass"), {reinterpret_cast<const uint8_t*>(pass.data()), pass.size()}, 0600);
    repo::InitOptions io;
    io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
    repo::Repository::init(*repo::make_fs_backend(store.file("repo")), repo::Secret(repo::Secret::Kind::passphrase, kPass), io);
    c.repositories.push_back({"main", store.file("repo"), store.file("pass")});
    return c;
  }
  // A failed check must not leave the worker waiting at the gate forever.
  ~PruneFixture() { open_gate(); }
  PruneFixture() {
    cat.transaction("agent", [&](Tx& tx) { tx.set_agent_components(a, {{"data", "files", true}}); });
    Policy p;
    p.name = "keep1";
    p.schedule = "@every 1h";
    p.repository = "main";
    p.retention.last = 1;
    cat.transaction("operator:test", [&](Tx& tx) { tx.put_policy(p, true); });
    scheduler.start(now());
  }
  std::unique_ptr<repo::Lock> hold_shared_lock() {
    held = repo::Repository::open(repo::make_fs_backend(store.file("repo")), repo::Secret(repo::Secret::Kind::passphrase, kPass));
    return repo::Lock::acquire(*held, repo::LockKind::shared, "test: someone else's backup");
  }
  std::unique_ptr<repo::Repository> held;
  std::vector<BackupSet> sets() {
    return cat.read([&](const Tx& tx) { return tx.policy_sets("keep1"); });
  }
  std::string start_run() {
    std::vector<std::string> agents;
    auto r = scheduler.run_now("operator:test", "keep1", now(), agents);
    REQUIRE(r.backup_set_id);
    return *r.backup_set_id;
  }
  // Two complete runs of the policy, the second not yet seen by a tick: the
  // next tick expires the first and submits its prune.
  std::pair<std::string, std::string> two_complete_sets() {
    auto s1 = start_run();
    tick();
    finish(s1);
    tick();
    auto s2 = start_run();
    finish(s2);
    return {s1, s2};
  }
  void finish(const std::string& set_id, TaskState state = TaskState::succeeded) {
    cat.transaction("agent", [&](Tx& tx) {
      for (const auto& t : tx.tasks_of_set(set_id)) {
        for (auto s : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(t.id, {s});
        TaskUpdate u{state};
        if (state == TaskState::failed) {
          u.reasons.push_back(reason(cairn::v1::ERROR_CODE_ITEM_SKIPPED, "the test failed it"));
        } else {
          u.snapshot_id = "snap-" + t.id;  // absent from the repository: counts as removed
          u.manifest_digest = "d";
        }
        tx.update_task(t.id, u);
      }
    });
  }
  // Ticks one second on; then waits (wall clock) for the maintenance job the
  // tick may have submitted to end.
  void tick() {
    advance_seconds(1);
    scheduler.tick(now());
    wait_idle();
  }
  void wait_idle() {
    for (int i = 0; i < 500 && maintenance.busy("main"); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    REQUIRE_FALSE(maintenance.busy("main"));
  }
  bool forgotten(const std::string& id) {
    auto s = cat.read([&](const Tx& tx) { return tx.backup_set(id); });
    return s && s->forgotten_at;
  }
  std::vector<std::string> prune_outcomes() {
    std::vector<std::string> out;
    for (const auto& e : cat.read([](const Tx& tx) { return tx.audit_events(); }))
      if (e.action == "repository.prune") out.push_back(e.outcome);
    return out;
  }
};

}  // namespace

TEST_CASE_METHOD(PruneFixture, "a prune locked out by a backup goes again in the tick after that backup ends") {
  auto [s1, s2] = two_complete_sets();
  auto lock = hold_shared_lock();  // the shared lock of the backup started next
  tick();                          // s2 complete: s1 expires, its prune finds the lock
  REQUIRE(sets().back().expired_at);
  auto s3 = start_run();  // the backup that holds it, as the catalog sees it
  tick();                 // the result: locked, while a backup into 'main' runs
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred"});
  tick();
  CHECK_FALSE(forgotten(s1));  // not while the backup runs
  lock->release();             // the agent lets go before it reports the end
  finish(s3);
  tick();  // s3 ended: the prune goes again at once (s3 complete: s2 expires too)
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "ok"});
  CHECK(forgotten(s1));
  CHECK(forgotten(s2));
  CHECK_FALSE(forgotten(s3));
}

TEST_CASE_METHOD(PruneFixture, "a prune held back by a backup that then fails goes again in the tick after it ends") {
  // A failed set applies no retention and expires nothing: only the end of
  // the backup holding the prune back can wake it.
  auto [s1, s2] = two_complete_sets();
  prune_to_gate();
  auto s3 = start_run();
  advance_seconds(1);
  scheduler.tick(now());  // the prune gives way
  open_gate();
  wait_idle();
  for (int i = 0; i < 3; ++i) tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred"});
  finish(s3, TaskState::failed);
  tick();
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "ok"});
  CHECK(forgotten(s1));
  CHECK_FALSE(forgotten(s2));
}

TEST_CASE_METHOD(PruneFixture, "a repository its backups never leave is said to wait, once an hour, and counted in the catalog") {
  auto log = std::make_shared<std::ostringstream>();
  auto logger = std::make_shared<spdlog::logger>("capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(*log));
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(logger);
  struct Restore {
    std::shared_ptr<spdlog::logger> l;
    ~Restore() { spdlog::set_default_logger(l); }
  } restore{previous};

  auto [s1, s2] = two_complete_sets();
  auto s3 = start_run();  // ordered before the prune: it holds the prune back from the start
  tick();
  auto stats = cat.read([](const Tx& tx) { return tx.expired_stats(); });
  REQUIRE(stats.size() == 1);
  CHECK(stats[0].repository == "main");
  CHECK(stats[0].sets == 1);
  int64_t expired_at = stats[0].oldest_expired_at;
  CHECK(expired_at > 0);
  auto waits = [&] {
    std::string text = log->str();
    size_t n = 0;
    for (size_t at = 0; (at = text.find("has waited", at)) != std::string::npos; ++at) ++n;
    return n;
  };
  advance_seconds(3590);
  tick();
  CHECK(waits() == 0);
  for (int i = 0; i < 70; ++i) tick();
  CHECK(waits() == 1);
  CHECK_THAT(log->str(), Catch::Contains("repository 'main' has waited 60 min") && Catch::Contains("backups or restores use it now"));
  advance_seconds(1800);
  tick();
  CHECK(waits() == 1);  // not at every pass
  advance_seconds(1800);
  tick();
  CHECK(waits() == 2);
  CHECK(prune_outcomes().empty());  // held back, never started
  finish(s3, TaskState::failed);
  tick();
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"ok"});
  CHECK(cat.read([](const Tx& tx) { return tx.expired_stats(); }).empty());
  advance_seconds(7200);
  tick();
  CHECK(waits() == 2);
}

TEST_CASE_METHOD(PruneFixture, "a set in two repositories: the declared one is cleared for good, and /metrics counts what waits") {
  // One set, its snapshots in 'main' (declared) and 'elsewhere' (not).
  std::string b = approved_agent("node-b", 2);
  std::string set = cat.transaction("controller", [&](Tx& tx) {
    tx.set_agent_components(b, {{"data", "files", true}});
    NewBackupSet s;
    s.tasks.push_back({a, "data", std::nullopt, std::nullopt});
    s.tasks.back().repository = "main";
    s.tasks.push_back({b, "data", std::nullopt, std::nullopt});
    s.tasks.back().repository = "elsewhere";
    return tx.create_backup_set(s);
  });
  finish(set);
  cat.transaction("controller", [&](Tx& tx) { tx.expire_set(set, "the test let it go"); });

  zmq::context_t ctx{1};
  zmq::socket_t socket{ctx, zmq::socket_type::router};
  controller::Fleet fleet{socket, cat, config, key.key_id()};
  auto metrics = [&] { return controller::render_metrics({cat, fleet, maintenance, nullptr, {"main"}}); };
  auto waiting = [&] { return cat.read([](const Tx& tx) { return tx.expired_stats(); }); };
  REQUIRE(waiting().size() == 2);
  CHECK_THAT(
      metrics(),
      Catch::Contains("\ncairn_backup_sets_expired{repository=\"main\"} 1\n") &&
          Catch::Contains("\ncairn_backup_sets_expired_oldest_timestamp_seconds{repository=\"main\"} " + std::to_string(now()) + "\n") &&
          !Catch::Contains("cairn_backup_sets_expired{repository=\"elsewhere\"}"));  // only repositories the controller declares

  tick();
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"ok"});
  CHECK_FALSE(forgotten(set));  // 'elsewhere' still holds its snapshot
  auto w = waiting();
  REQUIRE(w.size() == 1);
  CHECK(w[0].repository == "elsewhere");
  CHECK_THAT(metrics(), Catch::Contains("\ncairn_backup_sets_expired{repository=\"main\"} 0\n") &&
                            !Catch::Contains("cairn_backup_sets_expired_oldest_timestamp_seconds{"));
  // A restarted controller knows 'main' is cleared: it is not pruned again.
  controller::Scheduler restarted{cat, orders, maintenance, config};
  restarted.start(now());
  for (int i = 0; i < 70; ++i) {
    advance_seconds(1);
    restarted.tick(now());
    wait_idle();
  }
  CHECK(prune_outcomes() == std::vector<std::string>{"ok"});

  // What is gone cannot be restored, and is not left out silently; what is left can.
  cairn::v1::RestoreRequest req;
  req.set_backup_set_id(set);
  req.set_skip_safety_backup(true);
  CHECK_THROWS_WITH(orders.create_restore("operator:test", req),
                    Catch::Contains("retention has removed the snapshots of 'data' on node-a (repository 'main')"));
  req.mutable_selector()->add_nodes("node-b");
  auto r = orders.create_restore("operator:test", req);
  CHECK(cat.read([&](const Tx& tx) { return tx.tasks_of_restore(r.id).size(); }) == 1);
}

TEST_CASE_METHOD(PruneFixture, "a prune locked out by a lock no open task holds goes again 5 s later, then every minute") {
  auto [s1, s2] = two_complete_sets();
  auto lock = hold_shared_lock();  // an operator's check, say
  tick();
  tick();  // the result: locked, and no backup runs
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred"});
  for (int i = 0; i < 7; ++i) tick();  // a short backup's lock would be gone by now; this one is not
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "deferred"});
  lock->release();
  for (int i = 0; i < 30; ++i) tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "deferred"});  // not asked again every second
  CHECK_FALSE(forgotten(s1));
  for (int i = 0; i < 35; ++i) tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "deferred", "ok"});
  CHECK(forgotten(s1));
}

TEST_CASE_METHOD(PruneFixture, "a backup between two lock-outs starts the count again: 5 s, not a minute") {
  auto [s1, s2] = two_complete_sets();
  auto lock = hold_shared_lock();  // someone else's
  tick();
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred"});
  auto s3 = start_run();  // the fleet's backup meanwhile: the retry is held back
  for (int i = 0; i < 10; ++i) tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred"});
  finish(s3, TaskState::failed);
  tick();
  tick();  // the lock is still there: locked out again, the first time since the backup
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "deferred"});
  lock->release();
  for (int i = 0; i < 7; ++i) tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "deferred", "ok"});
  CHECK(forgotten(s1));
}

TEST_CASE_METHOD(PruneFixture, "a prune locked out by a lock released before its result is read goes again 5 s later") {
  auto [s1, s2] = two_complete_sets();
  auto lock = hold_shared_lock();  // a backup so short that it ended before the scheduler read the result
  tick();
  lock->release();
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred"});
  for (int i = 0; i < 7; ++i) tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "ok"});
  CHECK(forgotten(s1));
}

TEST_CASE_METHOD(PruneFixture, "a prune under way gives way to a backup ordered since it began, and goes again after it") {
  auto [s1, s2] = two_complete_sets();
  prune_to_gate();        // s2 complete: s1 expires, and its prune starts
  auto s3 = start_run();  // a backup into 'main' is ordered meanwhile
  advance_seconds(1);
  scheduler.tick(now());  // the scheduler sees it and asks the prune to stop
  open_gate();
  wait_idle();
  // The exclusive lock is gone: the backup's agent gets its shared lock at once.
  REQUIRE_NOTHROW(hold_shared_lock()->release());
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred"});
  CHECK_FALSE(forgotten(s1));
  finish(s3);
  tick();
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "ok"});
  CHECK(forgotten(s1));
  CHECK(forgotten(s2));
}

TEST_CASE_METHOD(PruneFixture, "a queued prune gives way at once; asking again, or for an idle repository, asks nothing") {
  CHECK_FALSE(maintenance.yield("main", "nothing runs"));
  hold = true;
  maintenance.submit({"main", {"bs-1"}, {}, {}});
  wait_at_gate();
  maintenance.submit({"main", {"bs-2"}, {}, {}});  // queued behind the first
  CHECK(maintenance.busy_repositories() == std::vector<std::string>{"main"});
  CHECK(maintenance.yield("main", "gave way to a test"));
  CHECK_FALSE(maintenance.yield("main", "again"));
  auto queued = maintenance.take_results();
  REQUIRE(queued.size() == 1);
  CHECK(queued[0].job.set_ids == std::vector<std::string>{"bs-2"});
  CHECK(queued[0].locked);
  CHECK_THAT(queued[0].error, Catch::Contains("gave way to a test") && Catch::Contains("had not started"));
  open_gate();
  wait_idle();
  auto running = maintenance.take_results();
  REQUIRE(running.size() == 1);
  CHECK_FALSE(running[0].ok);
  CHECK(running[0].locked);
  CHECK_THAT(running[0].error, Catch::Contains("gave way to a test") && Catch::Contains("interrupted"));
}

TEST_CASE_METHOD(PruneFixture, "a restore from the repository holds the prune back and makes a running one give way") {
  auto [s1, s2] = two_complete_sets();
  prune_to_gate();
  cairn::v1::RestoreRequest req;  // an operator restores the newest set meanwhile
  req.set_backup_set_id(s2);
  req.set_skip_safety_backup(true);
  auto r = orders.create_restore("operator:test", req);
  advance_seconds(1);
  scheduler.tick(now());
  open_gate();
  wait_idle();
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred"});
  for (int i = 0; i < 3; ++i) tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred"});  // not while the restore reads
  cat.transaction("agent", [&](Tx& tx) {
    for (const auto& t : tx.tasks_of_restore(r.id)) {
      for (auto s : {TaskState::sent, TaskState::accepted, TaskState::running}) tx.update_task(t.id, {s});
      tx.update_task(t.id, {TaskState::succeeded});
    }
  });
  tick();
  tick();
  CHECK(prune_outcomes() == std::vector<std::string>{"deferred", "ok"});
  CHECK(forgotten(s1));
  CHECK_FALSE(forgotten(s2));
}
