// The etcd driver's settings and what it reports before any server is
// reached: bad settings are refused with the key and what to do, the auth
// file must be private and well formed, caps say "cluster", preflight names
// the endpoint it could not reach, and check_snapshot refuses a snapshot
// that is not an etcd one.
#include <catch2/catch.hpp>

#include "agent/config.h"
#include "agent/drivers/etcd/config.h"
#include "agent/drivers/etcd/etcd_driver.h"
#include "agent_fixture.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::test;

namespace {

etcd::Settings parse(const std::string& toml_text) {
  toml::table t = toml::parse(toml_text);
  TableReader r(t, "agent.toml", "[[component]] 'etcd'");
  auto s = etcd::parse_settings(r);
  r.finish();
  return s;
}

const std::string kBase =
    "endpoint = \"http://127.0.0.1:2379\"\n"
    "data_dir = \"/var/lib/etcd/\"\n"
    "member_name = \"m1\"\n"
    "initial_advertise_peer_urls = \"http://127.0.0.1:2380\"\n";

std::string refusal(const std::string& text) {
  try {
    parse(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(accepted)";
}

}  // namespace

TEST_CASE("etcd settings: the minimal table and its defaults") {
  auto s = parse(kBase + "service = { start_command = [\"/bin/true\"], stop_command = [\"/bin/true\"] }\n");
  CHECK(s.endpoint == "http://127.0.0.1:2379");
  CHECK(s.data_dir == "/var/lib/etcd");
  CHECK(s.name == "m1");
  CHECK(s.peer_urls == std::vector<std::string>{"http://127.0.0.1:2380"});
  CHECK(s.etcdctl == "etcdctl");
  CHECK(s.service.start_command == std::vector<std::string>{"/bin/true"});
  CHECK(parse(kBase + "service = \"etcd.service\"\n").service.unit == "etcd.service");
}

TEST_CASE("etcd settings: what is refused, with the key named") {
  CHECK_THAT(refusal(kBase + "endpoint2 = 1\n"), Catch::Contains("unknown key 'endpoint2'"));
  CHECK_THAT(refusal("endpoint = \"http://a:1,http://b:2\"\n" + kBase.substr(kBase.find('\n') + 1)), Catch::Contains("one member only"));
  CHECK_THAT(refusal("endpoint = \"127.0.0.1:2379\"\n" + kBase.substr(kBase.find('\n') + 1)), Catch::Contains("'endpoint'"));
  CHECK_THAT(refusal(kBase + "ca_file = \"/etc/ca.pem\"\n"), Catch::Contains("use 'https://'"));
  std::string tls = "endpoint = \"https://127.0.0.1:2379\"\n" + kBase.substr(kBase.find('\n') + 1);
  CHECK_THAT(refusal(tls + "cert_file = \"/etc/c.pem\"\n"), Catch::Contains("go together"));
  CHECK_THAT(refusal(tls + "auth_file = \"relative\"\n"), Catch::Contains("'auth_file'"));
  CHECK_THAT(refusal("endpoint = \"http://127.0.0.1:2379\"\ndata_dir = \"/d\"\ninitial_advertise_peer_urls = \"http://x:1\"\n"),
             Catch::Contains("member_name"));
  CHECK_THAT(refusal("endpoint = \"http://127.0.0.1:2379\"\nmember_name = \"m\"\ndata_dir = \"/d\"\n"),
             Catch::Contains("initial_advertise_peer_urls"));
  CHECK_THAT(refusal(kBase + "service = { start_command = [\"start-etcd\"], stop_command = [\"/bin/true\"] }\n"),
             Catch::Contains("absolute path"));
  CHECK_THAT(refusal(kBase + "service = { start_command = [\"/bin/true\"] }\n"), Catch::Contains("stop_command"));
  CHECK_THAT(refusal(kBase + "member_id = \"XYZ\"\n"), Catch::Contains("hex"));
}

TEST_CASE("etcd auth file: private, one line 'user:password'") {
  TempDir d;
  write_text(d.file("ok"), "root:pa:ss word\n", 0600);
  auto [user, pass] = etcd::read_auth_file(d.file("ok"));
  CHECK(user == "root");
  CHECK(pass == "pa:ss word");
  write_text(d.file("open"), "root:pw\n", 0644);
  CHECK_THROWS_WITH(etcd::read_auth_file(d.file("open")), Catch::Contains("auth_file"));
  write_text(d.file("nocolon"), "root\n", 0600);
  CHECK_THROWS_WITH(etcd::read_auth_file(d.file("nocolon")), Catch::Contains("user:password"));
  write_text(d.file("twolines"), "root:pw\nother:pw\n", 0600);
  CHECK_THROWS_WITH(etcd::read_auth_file(d.file("twolines")), Catch::Contains("one line"));
}

TEST_CASE("etcd driver: caps, preflight of an unreachable member, foreign snapshots refused") {
  auto s = parse(kBase);
  s.endpoint = "http://127.0.0.1:1";  // nothing listens on port 1
  s.timeout_seconds = 2;
  s.member_id = "8e9e05c52164694d";
  etcd::EtcdDriver drv("etcd", s);
  DriverCaps caps = drv.capabilities();
  CHECK(caps.scope == "cluster");
  CHECK(caps.member_id == "8e9e05c52164694d");
  CHECK(caps.restore_stops_service);

  cairn::v1::Task backup;
  backup.set_kind(cairn::v1::TASK_KIND_BACKUP);
  auto r = drv.preflight(backup);
  REQUIRE(r.size() == 1);
  CHECK(r[0].code() == cairn::v1::ERROR_CODE_PREFLIGHT_FAILED);
  CHECK_THAT(r[0].detail(), Catch::Contains("http://127.0.0.1:1"));

  cairn::v1::Task restore;
  restore.set_kind(cairn::v1::TASK_KIND_RESTORE);
  auto rr = drv.preflight(restore);
  REQUIRE(!rr.empty());
  CHECK_THAT(rr[0].detail(), Catch::Contains("declares no 'service'"));
  restore.mutable_options()->set_restore_step("sideways");
  CHECK_THAT(drv.preflight(restore).at(0).detail(), Catch::Contains("unknown restore step"));

  repo::Snapshot snap;
  snap.id = std::string(64, 'a');
  snap.paths = {"/etc/passwd"};
  auto bad = drv.check_snapshot(snap);
  REQUIRE(bad.size() == 1);
  CHECK_THAT(bad[0].detail(), Catch::Contains("not an etcd snapshot"));
  snap.paths = {"stdin:etcd-snapshot.db"};
  CHECK(drv.check_snapshot(snap).empty());
}
