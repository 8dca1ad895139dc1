// cairn-bench-scheduler: the controller's policy work at fleet scale
// (bench/scheduler/run.py). A real catalog on disk with simulated agents: N
// agents with 3 components each, P policies selecting them by label, then S
// backup sets run through Orders (signed plans included) and ended, spread
// over simulated days. Measures, with the controller's own code:
//   - computing every policy's next run (Scheduler::next_run),
//   - a scheduler tick that finds nothing due (what runs every second),
//   - ordering one policy's run (Orders::create_backup, plans signed),
//   - applying every policy's retention (Scheduler::retention, expiring sets),
// and prints the catalog's size. One JSON object on stdout.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "controller/catalog/catalog.h"
#include "controller/maintenance.h"
#include "controller/orders.h"
#include "controller/scheduler.h"

using namespace cairn;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cairn-bench-scheduler"};
  std::string dir;
  int agents = 1000, policies = 200, sets = 10000;
  app.add_option("--dir", dir, "an empty directory for the catalog")->required();
  app.add_option("--agents", agents)->capture_default_str();
  app.add_option("--policies", policies)->capture_default_str();
  app.add_option("--sets", sets)->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::off);  // stdout carries the JSON

  auto clock = std::make_shared<int64_t>(int64_t(1'790'000'000) * 1000);
  catalog::CatalogOptions co;
  co.clock_ms = [clock] { return *clock; };
  std::filesystem::create_directories(dir);
  auto cat = catalog::Catalog::open(dir + "/catalog.db", co);
  controller::ControllerConfig config;
  config.controller_id = "bench";
  auto key = plan::SigningKey::generate();
  controller::Orders orders(cat, config, key);
  controller::Maintenance maintenance({});
  controller::Scheduler scheduler(cat, orders, maintenance, config);

  // Agents: 3 components each, a label putting them in one of `policies` groups.
  auto t0 = Clock::now();
  cat.transaction("operator:bench", [&](catalog::Tx& tx) {
    for (int i = 0; i < agents; ++i) {
      catalog::CurveKey k{};
      for (int b = 0; b < 4; ++b) k[b] = uint8_t(i >> (8 * b));
      k[31] = 0xCA;
      auto id = tx.enrol_agent("node-" + std::to_string(i), k, "host", "0.1.0");
      tx.set_agent_state(id, catalog::AgentState::approved);
      std::vector<catalog::Component> comps;
      for (auto [name, driver] : {std::pair{"etcd", "etcd"}, {"pki", "files"}, {"zk", "zookeeper"}}) {
        catalog::Component c;
        c.name = name;
        c.driver = driver;
        c.can_restore = true;
        c.repository = "main";
        comps.push_back(c);
      }
      tx.set_agent_components(id, comps);
      tx.set_agent_labels(id, {{"group", std::to_string(i % policies)}});
    }
  });
  double setup_agents_ms = ms_since(t0);

  const char* schedules[] = {"0 1 * * *", "*/15 * * * *", "@every 1h", "30 2 * * 1-5", "@daily", "0 */6 * * *"};
  const char* zones[] = {"UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"};
  cat.transaction("operator:bench", [&](catalog::Tx& tx) {
    for (int i = 0; i < policies; ++i) {
      catalog::Policy p;
      p.name = "policy-" + std::to_string(i);
      p.schedule = schedules[i % 6];
      p.time_zone = zones[i % 4];
      p.selector["labels"] = {{"group", std::to_string(i)}};
      p.selector["components"] = {i % 2 ? "etcd" : "pki"};
      p.retention.last = 7;
      p.retention.daily = 14;
      p.retention.weekly = 8;
      p.retention.min = 7;
      p.next_run_at = controller::Scheduler::next_run(p, *clock / 1000);
      tx.put_policy(p, true);
    }
  });

  // Next runs of every policy.
  auto all = cat.read([](const catalog::Tx& tx) { return tx.policies(); });
  t0 = Clock::now();
  int64_t sum = 0;
  for (int round = 0; round < 10; ++round)
    for (const auto& p : all) sum += controller::Scheduler::next_run(p, *clock / 1000 + round * 3600).value_or(0);
  double next_runs_ms = ms_since(t0) / 10;

  // Sets: each policy's runs in turn, one simulated hour apart, each ended.
  scheduler.start(*clock / 1000);
  double order_ms_total = 0, end_ms_total = 0;
  int64_t tasks_total = 0;
  for (int s = 0; s < sets; ++s) {
    const auto& p = all[size_t(s % policies)];
    *clock += (24 * 3600 * 1000) / (sets / policies > 0 ? std::max(1, sets / policies / 30) : 1) / policies;
    t0 = Clock::now();
    controller::BackupExtras extras;
    extras.trigger = "schedule";
    extras.policy = p.name;
    auto ordered = orders.create_backup("policy:" + p.name, controller::selector_from_json(p.selector), "", extras);
    order_ms_total += ms_since(t0);
    t0 = Clock::now();
    cat.transaction("agent:bench", [&](catalog::Tx& tx) {
      for (const auto& t : tx.tasks_of_set(ordered.id)) {
        for (auto st : {catalog::TaskState::sent, catalog::TaskState::accepted, catalog::TaskState::running}) tx.update_task(t.id, {st});
        catalog::TaskUpdate u{catalog::TaskState::succeeded};
        u.snapshot_id = std::string(64, 'a' + char(s % 26)) + std::to_string(s) + t.id;
        u.manifest_digest = "d";
        u.bytes = 1 << 20;
        tx.update_task(t.id, u);
        ++tasks_total;
      }
    });
    end_ms_total += ms_since(t0);
  }

  // A tick with nothing due (every second in the controller): each policy's
  // next run set from now, as the scheduler leaves it after its runs.
  cat.transaction("operator:bench", [&](catalog::Tx& tx) {
    for (const auto& p : all) tx.set_policy_next_run(p.name, controller::Scheduler::next_run(p, *clock / 1000 + 60));
  });
  t0 = Clock::now();
  for (int i = 0; i < 20; ++i) scheduler.tick(*clock / 1000 + i);
  double tick_ms = ms_since(t0) / 20;

  // Retention over every policy: first a dry run, then applied.
  t0 = Clock::now();
  size_t decided = 0;
  for (const auto& p : all) decided += scheduler.retention("operator:bench", p.name, true).size();
  double retention_dry_ms = ms_since(t0);
  t0 = Clock::now();
  size_t expired = 0;
  for (const auto& p : all)
    for (const auto& d : scheduler.retention("operator:bench", p.name, false)) expired += !d.keep;
  double retention_apply_ms = ms_since(t0);

  // Ticks again, with every expired set waiting for a repository the
  // controller does not declare (the forget pass reads them all).
  cat.transaction("operator:bench", [&](catalog::Tx& tx) {  // nothing due: only the forget pass works
    for (const auto& p : all) tx.set_policy_next_run(p.name, std::nullopt);
  });
  t0 = Clock::now();
  for (int i = 0; i < 20; ++i) scheduler.tick(*clock / 1000 + 100 + i);
  double tick_after_ms = ms_since(t0) / 20;

  auto size = std::filesystem::file_size(dir + "/catalog.db");
  std::error_code ec;
  auto wal = std::filesystem::file_size(dir + "/catalog.db-wal", ec);
  nlohmann::json out = {{"agents", agents},
                        {"components", agents * 3},
                        {"policies", policies},
                        {"sets", sets},
                        {"tasks", tasks_total},
                        {"setup_agents_ms", setup_agents_ms},
                        {"next_runs_all_policies_ms", next_runs_ms},
                        {"tick_nothing_due_ms", tick_ms},
                        {"tick_after_retention_ms", tick_after_ms},
                        {"order_one_run_ms_mean", order_ms_total / sets},
                        {"end_one_run_ms_mean", end_ms_total / sets},
                        {"retention_dry_run_all_policies_ms", retention_dry_ms},
                        {"retention_apply_all_policies_ms", retention_apply_ms},
                        {"sets_decided", decided},
                        {"sets_expired", expired},
                        {"catalog_bytes", size},
                        {"catalog_wal_bytes", ec ? 0 : wal},
                        {"checksum", sum % 1000}};
  std::printf("%s\n", out.dump(2).c_str());
  return 0;
}
