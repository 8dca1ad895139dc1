// cairn-fleet-fill: adds backup sets to a stopped controller's catalog with
// the controller's own code (bench/fleet/README.md), so `cairnctl backup
// list`, `agent list` and `status` can be timed against a catalog that holds
// 10,000 sets. Each set is ordered by Orders::create_backup (plans signed, as
// `cairnctl backup create` orders one) over --agents agents of its own, then
// its tasks end as their agents' results would end them. One JSON object on
// stdout.
#include <spdlog/spdlog.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "controller/catalog/catalog.h"
#include "controller/orders.h"

using namespace cairn;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  CLI::App app{"cairn-fleet-fill: backup sets into a stopped controller's catalog"};
  std::string path, prefix = "fill-";
  int agents = 5, sets = 10000;
  app.add_option("--catalog", path, "the controller's catalog.db (the controller must be stopped)")->required();
  app.add_option("--agents", agents, "agents of its own each set runs over")->capture_default_str();
  app.add_option("--sets", sets)->capture_default_str();
  app.add_option("--prefix", prefix, "name prefix of those agents")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  spdlog::set_level(spdlog::level::warn);  // stdout carries the JSON

  auto t0 = Clock::now();
  auto cat = catalog::Catalog::open(path);
  cairn::v1::Selector selector;
  cat.transaction("operator:fleet-fill", [&](catalog::Tx& tx) {
    for (int i = 0; i < agents; ++i) {
      catalog::CurveKey k{};
      for (int b = 0; b < 4; ++b) k[b] = uint8_t(i >> (8 * b));
      k[30] = 0xF1;
      k[31] = 0x11;
      std::string name = prefix + std::to_string(i);
      selector.add_nodes(name);
      if (tx.agent(name)) continue;
      auto id = tx.enrol_agent(name, k, "fill-host", "fleet-fill");
      tx.set_agent_state(id, catalog::AgentState::approved);
      catalog::Component c;
      c.name = "data";
      c.driver = "files";
      c.can_restore = true;
      c.repository = "main";
      tx.set_agent_components(id, {c});
    }
  });
  controller::ControllerConfig config;
  config.controller_id = "fleet-fill";
  auto key = plan::SigningKey::generate();
  controller::Orders orders(cat, config, key);
  int64_t tasks = 0;
  // Each step's time as the controller takes it for a set: the order
  // (create_backup), the delivery mark (Fleet::deliver), the acknowledgements
  // (Fleet::flush_plan_acks), each one transaction.
  std::vector<double> create_s, sent_s, acked_s;
  auto timed = [](std::vector<double>& into, auto&& f) {
    auto c0 = Clock::now();
    f();
    into.push_back(std::chrono::duration<double>(Clock::now() - c0).count());
  };
  for (int s = 0; s < sets; ++s) {
    controller::Ordered ordered;
    timed(create_s, [&] { ordered = orders.create_backup("operator:fleet-fill", selector); });
    std::vector<std::string> plans;
    cat.read([&](const catalog::Tx& tx) {
      for (const auto& t : tx.tasks_of_set(ordered.id)) plans.push_back(*t.plan_id);
    });
    timed(sent_s, [&] {
      cat.transaction("controller", [&](catalog::Tx& tx) {
        for (const auto& id : plans) tx.move_plan_tasks(id, catalog::TaskState::pending, catalog::TaskState::sent);
      });
    });
    timed(acked_s, [&] {
      cat.transaction("controller", [&](catalog::Tx& tx) {
        for (const auto& id : plans) tx.record_plan_ack(id, true, cairn::v1::ERROR_CODE_OK, "");
      });
    });
    cat.transaction("agent:fleet-fill", [&](catalog::Tx& tx) {
      for (const auto& t : tx.tasks_of_set(ordered.id)) {
        tx.update_task(t.id, {catalog::TaskState::running});
        catalog::TaskUpdate u{catalog::TaskState::succeeded};
        u.snapshot_id = std::string(40, 'f') + std::to_string(s) + t.id;
        u.manifest_digest = u.snapshot_id;
        u.bytes = 1 << 20;
        u.files = 10;
        tx.update_task(t.id, u);
        ++tasks;
      }
    });
  }
  double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
  };
  nlohmann::json out = {{"sets", sets},
                        {"agents", agents},
                        {"tasks", tasks},
                        {"seconds", secs},
                        {"median_s", {{"create", median(create_s)}, {"sent", median(sent_s)}, {"acked", median(acked_s)}}}};
  std::printf("%s\n", out.dump().c_str());
  return 0;
}
