#pragma once
// A controller's parts for the fuzz targets of its two inputs from outside
// (AgentMessage on the fleet socket, OperatorRequest on the operator socket):
// a catalog in a fresh temp directory, two approved agents 'node-1' and
// 'node-2' with a backup set (one task each) and a plan each, a Fleet on a
// ROUTER bound to an inproc endpoint nobody connects to (replies are dropped),
// Orders and the OperatorApi as the daemon builds them (controller/server.cc).
//
// Text inputs may name these by placeholder, replaced before parsing:
//   @T1@ @T2@  task ids of node-1 and node-2      @P1@ @P2@  their plan ids
//   @A1@ @A2@  agent ids                           @S@        the backup set id
#include <spdlog/spdlog.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "common/plan/signing_key.h"
#include "controller/catalog/catalog.h"
#include "controller/config.h"
#include "controller/fleet.h"
#include "controller/operator_api.h"
#include "controller/orders.h"
#include "proto/cairn.pb.h"
#include "proto/protocol.h"

namespace cairn::fuzz {

inline controller::CurveKey agent_key(uint8_t fill) {
  controller::CurveKey k{};
  k.fill(fill);
  return k;
}

inline std::string make_temp_dir(const char* prefix) {
  const char* root = std::getenv("CAIRN_FUZZ_TMPDIR");
  std::string tmpl = std::string(root && *root                               ? root
                                 : std::filesystem::is_directory("/dev/shm") ? "/dev/shm"
                                                                             : "/tmp") +
                     "/" + prefix + "-XXXXXX";
  if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  return tmpl;
}

struct ControllerFixture {
  std::string dir = make_temp_dir("cairn-fuzz-ctl");
  catalog::Catalog catalog = catalog::Catalog::open(dir + "/catalog.db");
  controller::ControllerConfig config;
  plan::SigningKey signing_key = plan::SigningKey::from_seed(std::array<uint8_t, 32>{7});
  zmq::context_t ctx{1};
  zmq::socket_t socket{ctx, zmq::socket_type::router};
  std::unique_ptr<controller::Fleet> fleet;
  std::unique_ptr<controller::Orders> orders;
  std::unique_ptr<controller::OperatorApi> api;
  std::string agent_ids[2], task_ids[2], plan_ids[2] = {"plan-1", "plan-2"}, set_id;

  ControllerFixture() {
    spdlog::set_level(spdlog::level::off);
    static std::atomic<int> n{0};
    config.controller_id = "fuzz-ctl";
    config.data_dir = dir;
    config.key_dir = dir + "/keys";
    config.heartbeat_interval_ms = 100;
    config.liveness = 2;
    socket.set(zmq::sockopt::linger, 0);
    socket.bind("inproc://fuzz-fleet-" + std::to_string(n++));
    std::string key_id = signing_key.key_id();
    catalog.transaction("fuzz", [&](catalog::Tx& tx) {
      auto pub = signing_key.public_key();
      tx.add_controller_key(key_id, pub, true);
      for (int i = 0; i < 2; ++i) {
        agent_ids[i] = tx.enrol_agent("node-" + std::to_string(i + 1), agent_key(uint8_t(i + 1)), "host", "0.1.0");
        tx.set_agent_state(agent_ids[i], catalog::AgentState::approved);
        tx.set_agent_components(agent_ids[i], {{"etc-files", "files", true}});
      }
      catalog::NewBackupSet set;
      set.tasks = {{agent_ids[0], "etc-files", {}}, {agent_ids[1], "etc-files", {}}};
      set_id = tx.create_backup_set(set);
      auto tasks = tx.tasks_of_set(set_id);
      for (int i = 0; i < 2; ++i) {
        for (const auto& t : tasks)
          if (t.agent_id == agent_ids[i]) task_ids[i] = t.id;
        catalog::NewPlan p;
        p.plan_id = plan_ids[i];
        p.agent_id = agent_ids[i];
        p.key_id = key_id;
        p.issued_at = p.not_before = std::time(nullptr);
        p.expires_at = p.issued_at + 3600;
        p.task_ids = {task_ids[i]};
        tx.issue_plan(p);
      }
    });
    fleet = std::make_unique<controller::Fleet>(socket, catalog, config, key_id);
    orders = std::make_unique<controller::Orders>(catalog, config, signing_key);
    api = std::make_unique<controller::OperatorApi>(catalog, *fleet, *orders, signing_key, config.key_dir);
  }
  ~ControllerFixture() {
    api.reset();
    orders.reset();
    fleet.reset();
    socket.close();
    std::error_code ec;
    std::filesystem::remove_all(dir, ec);
  }

  std::string substitute(std::string text) const {
    const std::pair<std::string, std::string> marks[] = {{"@T1@", task_ids[0]}, {"@T2@", task_ids[1]},  {"@P1@", plan_ids[0]},
                                                         {"@P2@", plan_ids[1]}, {"@A1@", agent_ids[0]}, {"@A2@", agent_ids[1]},
                                                         {"@S@", set_id}};
    for (const auto& [mark, value] : marks)
      for (size_t at = text.find(mark); at != std::string::npos; at = text.find(mark, at + value.size()))
        text.replace(at, mark.size(), value);
    return text;
  }

  // A valid Register from node i (0 or 1) on routing id "r<i>".
  void register_agent(int i) {
    cairn::v1::AgentMessage m;
    auto* r = m.mutable_register_();
    r->set_agent_name("node-" + std::to_string(i + 1));
    r->set_hostname("host");
    r->set_agent_version("0.1.0");
    auto* c = r->add_components();
    c->set_name("etc-files");
    c->set_driver("files");
    c->set_can_restore(true);
    fleet->on_frames("r" + std::to_string(i), agent_key(uint8_t(i + 1)), -1, {std::string(proto::kFleetProtocolId), m.SerializeAsString()});
  }
};

}  // namespace cairn::fuzz
