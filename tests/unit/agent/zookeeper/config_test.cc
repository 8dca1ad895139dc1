// The zookeeper driver's settings: what is required, the defaults, the
// service forms, and refusals that name the key.
#include "agent/config.h"

#include <catch2/catch.hpp>
#include <string>

#include "agent/drivers/zookeeper/config.h"
#include "agent/drivers/zookeeper/zookeeper_driver.h"
#include "tests/unit/agent/agent_fixture.h"

using namespace cairn::agent;

namespace {

const test::TempDir& dir() {
  static test::TempDir d;
  return d;
}
const std::string kHead = test::base_config(dir()) + "[[component]]\nname = \"zk\"\ndriver = \"zookeeper\"\n";

const zookeeper::ZooKeeperDriver& zk(const AgentConfig& c) {
  for (const auto& comp : c.components)
    if (comp.name == "zk") return dynamic_cast<const zookeeper::ZooKeeperDriver&>(*comp.driver);
  FAIL("no component 'zk'");
  throw 0;
}

}  // namespace

TEST_CASE("zookeeper settings: defaults and the service forms", "[zookeeper]") {
  auto c = parse_config(kHead + "data_dir = \"/var/lib/zookeeper/\"\n", "agent.toml");
  const auto& s = zk(c).settings();
  CHECK(s.data_dir == "/var/lib/zookeeper");
  CHECK(s.data_log_dir == "/var/lib/zookeeper");
  CHECK(s.config_file == "/etc/zookeeper/conf/zoo.cfg");
  CHECK(s.service.empty());
  auto caps = zk(c).capabilities();
  CHECK(caps.scope == "cluster");
  CHECK_FALSE(caps.restore);  // no service: backups only
  CHECK(caps.restore_stops_service);

  auto u = parse_config(kHead +
                            "data_dir = \"/d\"\ndata_log_dir = \"/l\"\nservice = \"zookeeper.service\"\n"
                            "cluster_id = \"orders\"\nclient_address = \"127.0.0.1:2182\"\n",
                        "agent.toml");
  CHECK(zk(u).settings().service.unit == "zookeeper.service");
  CHECK(zk(u).settings().data_log_dir == "/l");
  CHECK(zk(u).capabilities().cluster_id == "orders");
  CHECK(zk(u).capabilities().restore);
  CHECK(zk(u).client_address() == "127.0.0.1:2182");

  auto t = parse_config(kHead +
                            "data_dir = \"/d\"\nservice = { start_command = [\"/bin/zk\", \"start\"], "
                            "stop_command = [\"/bin/zk\", \"stop\"], timeout_seconds = 30 }\n",
                        "agent.toml");
  CHECK(zk(t).settings().service.start_command == std::vector<std::string>{"/bin/zk", "start"});
  CHECK(zk(t).settings().service.timeout == std::chrono::seconds(30));
}

TEST_CASE("zookeeper settings: refusals name the key", "[zookeeper]") {
  CHECK_THROWS_WITH(parse_config(kHead, "agent.toml"), Catch::Contains("data_dir"));
  CHECK_THROWS_WITH(parse_config(kHead + "data_dir = \"relative\"\n", "agent.toml"),
                    Catch::Contains("data_dir") && Catch::Contains("absolute"));
  CHECK_THROWS_WITH(parse_config(kHead + "data_dir = \"/a/../b\"\n", "agent.toml"), Catch::Contains(".."));
  CHECK_THROWS_WITH(parse_config(kHead + "data_dir = \"/d\"\nservice = { start_command = [\"/bin/zk\"] }\n", "agent.toml"),
                    Catch::Contains("stop_command"));
  CHECK_THROWS_WITH(
      parse_config(kHead + "data_dir = \"/d\"\nservice = { start_command = [\"zk\"], stop_command = [\"zk\"] }\n", "agent.toml"),
      Catch::Contains("absolute"));
  CHECK_THROWS_WITH(parse_config(kHead + "data_dir = \"/d\"\nclient_address = \"/run/zk.sock\"\n", "agent.toml"),
                    Catch::Contains("client_address"));
  CHECK_THROWS_WITH(parse_config(kHead + "data_dir = \"/d\"\ndatadir = \"/e\"\n", "agent.toml"), Catch::Contains("datadir"));
}

TEST_CASE("service settings: a stop's escalation to SIGKILL is declared with kill_after_seconds and kill_command") {
  auto t = parse_config(kHead +
                            "data_dir = \"/d\"\nservice = { start_command = [\"/bin/zk\", \"start\"], "
                            "stop_command = [\"/bin/zk\", \"stop\"], kill_command = [\"/bin/zk\", \"kill\"], "
                            "kill_after_seconds = 45 }\n",
                        "agent.toml");
  CHECK(zk(t).settings().service.kill_command == std::vector<std::string>{"/bin/zk", "kill"});
  CHECK(zk(t).settings().service.kill_after == std::chrono::seconds(45));
  // A unit alone is killed through systemd; no escalation unless asked for.
  auto u = parse_config(kHead + "data_dir = \"/d\"\nservice = { unit = \"zookeeper.service\", kill_after_seconds = 30 }\n", "agent.toml");
  CHECK(zk(u).settings().service.kill_after == std::chrono::seconds(30));
  auto plain = parse_config(kHead + "data_dir = \"/d\"\nservice = \"zookeeper.service\"\n", "agent.toml");
  CHECK(zk(plain).settings().service.kill_after == std::chrono::seconds(0));
  // Commands without a kill_command cannot be escalated: refused, saying what to add.
  CHECK_THROWS_WITH(parse_config(kHead + "data_dir = \"/d\"\nservice = { start_command = [\"/bin/zk\"], "
                                         "stop_command = [\"/bin/zk\"], kill_after_seconds = 30 }\n",
                                 "agent.toml"),
                    Catch::Contains("kill_after_seconds") && Catch::Contains("kill_command"));
  CHECK_THROWS_WITH(
      parse_config(kHead + "data_dir = \"/d\"\nservice = { unit = \"zk.service\", kill_command = [\"kill\"] }\n", "agent.toml"),
      Catch::Contains("absolute"));
}
