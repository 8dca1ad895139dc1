// The opensearch driver without a server: its settings, the credentials
// file's mode, the restore plan's record, a snapshot of another path refused
// and an unreachable cluster refused by the preflight.
#include "agent/drivers/opensearch/opensearch_driver.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>

#include "agent/drivers/opensearch/config.h"
#include "common/repo/snapshot.h"
#include "tests/unit/agent/agent_fixture.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::opensearch;
namespace v1 = cairn::v1;

namespace {

Settings parse(const std::string& toml_text) {
  auto tbl = toml::parse(toml_text);
  TableReader r(tbl, "agent.toml", "[[component]] 'search'");
  Settings s = parse_settings(r);
  r.finish();
  return s;
}

std::string refusal(const std::string& toml_text) {
  try {
    (void)parse(toml_text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

std::string details(const std::vector<v1::Reason>& rs) {
  std::string s;
  for (const auto& r : rs) s += r.detail() + "\n";
  return s;
}

}  // namespace

TEST_CASE("opensearch settings: defaults, and what is refused with the key named") {
  Settings s = parse("snapshot_path = \"/mnt/snap/cairn/\"\n");
  CHECK(s.url == "http://127.0.0.1:9200");
  CHECK(s.snapshot_path == "/mnt/snap/cairn");
  CHECK(s.snapshot_repository == "cairn");
  CHECK(s.indices == std::vector<std::string>{"*"});
  CHECK(s.include_global_state);

  s = parse(
      "url = \"https://os:9200/\"\nca_file = \"/etc/ca.pem\"\ncert_file = \"/etc/c.pem\"\nkey_file = \"/etc/k.pem\"\n"
      "snapshot_path = \"/mnt/s\"\nindices = [\"logs-*\", \"-logs-debug\"]\ninclude_global_state = false\n"
      "snapshot_repository = \"backups.1\"\n");
  CHECK(s.url == "https://os:9200");
  CHECK(s.indices.size() == 2);
  CHECK_FALSE(s.include_global_state);

  CHECK_THAT(refusal(""), Catch::Contains("snapshot_path"));
  CHECK_THAT(refusal("snapshot_path = \"relative\"\n"), Catch::Contains("absolute"));
  CHECK_THAT(refusal("snapshot_path = \"/a/../b\"\n"), Catch::Contains("absolute"));
  CHECK_THAT(refusal("url = \"https://x\"\nsnapshot_path = \"/s\"\n"), Catch::Contains("ca_file"));
  CHECK_THAT(refusal("url = \"ftp://x\"\nsnapshot_path = \"/s\"\n"), Catch::Contains("http://"));
  CHECK_THAT(refusal("url = \"https://x\"\nca_file = \"/ca\"\ncert_file = \"/c\"\nsnapshot_path = \"/s\"\n"), Catch::Contains("key_file"));
  CHECK_THAT(refusal("cert_file = \"/c\"\nkey_file = \"/k\"\nsnapshot_path = \"/s\"\n"), Catch::Contains("only sent over https"));
  CHECK_THAT(refusal("snapshot_path = \"/s\"\nindices = [\"a/b\"]\n"), Catch::Contains("indices"));
  CHECK_THAT(refusal("snapshot_path = \"/s\"\nindices = []\n"), Catch::Contains("indices"));
  CHECK_THAT(refusal("snapshot_path = \"/s\"\nsnapshot_repository = \"_x\"\n"), Catch::Contains("snapshot_repository"));
  CHECK_THAT(refusal("snapshot_path = \"/s\"\ncredentials_file = \"x\"\n"), Catch::Contains("credentials_file"));
  CHECK_THAT(refusal("snapshot_path = \"/s\"\npasword_file = \"/x\"\n"), Catch::Contains("pasword_file"));
}

TEST_CASE("opensearch credentials: a file others can read is refused, its content never shown") {
  test::TempDir d;
  const std::string cred = d.file("os.cred");
  std::ofstream(cred) << "backup:Very-Secret-1\n";
  ::chmod(cred.c_str(), 0644);
  Settings s = parse("snapshot_path = \"" + d.path() + "/snap\"\ncredentials_file = \"" + cred + "\"\n");
  Api api(s);
  std::string why = api.credentials_problem();
  CHECK_THAT(why, Catch::Contains(cred));
  CHECK(why.find("Very-Secret-1") == std::string::npos);
  ::chmod(cred.c_str(), 0600);
  CHECK(api.credentials_problem().empty());
  std::ofstream(cred, std::ios::trunc) << "no-colon-here\n";
  why = api.credentials_problem();
  CHECK_THAT(why, Catch::Contains("user:password"));
  CHECK(why.find("no-colon-here") == std::string::npos);
}

TEST_CASE("opensearch restore plan: written and read back whole") {
  RestorePlan p;
  p.repository = "cairn-restore-20261129t120000z";
  p.location = "/mnt/s/cairn.cairn-restore-20261129T120000Z/mnt/s/cairn";
  p.snapshot = "cairn-20261129t110000z";
  p.remove = {"a", "b"};
  p.restore = {"a", ".opensearch_dashboards"};
  p.global_state = true;
  p.rollback = "cairn-20261129t115959z";
  RestorePlan q = RestorePlan::from_json(nlohmann::json::parse(p.to_json().dump()));
  CHECK(q.repository == p.repository);
  CHECK(q.location == p.location);
  CHECK(q.snapshot == p.snapshot);
  CHECK(q.remove == p.remove);
  CHECK(q.restore == p.restore);
  CHECK(q.global_state);
  CHECK(q.rollback == p.rollback);
  CHECK_THROWS(RestorePlan::from_json(nlohmann::json::object()));
}

TEST_CASE("opensearch: a snapshot of another path is refused, an unreachable cluster is refused naming it") {
  test::TempDir d;
  const int port = test::free_port();
  Settings s = parse("url = \"http://127.0.0.1:" + std::to_string(port) + "\"\nsnapshot_path = \"" + d.path() + "/snap\"\n");
  OpenSearchDriver drv("search", s);
  CHECK(drv.name() == "opensearch");
  CHECK(drv.capabilities().preflight_whole_restore);
  CHECK(drv.capabilities().scope == "node");

  repo::Snapshot snap;
  snap.id = "0123456789abcdef";
  snap.paths = {"/var/lib/other"};
  auto bad = drv.check_snapshot(snap);
  REQUIRE(bad.size() == 2);
  CHECK_THAT(details(bad), Catch::Contains("/var/lib/other") && Catch::Contains("nothing was changed"));
  snap.paths = {d.path() + "/snap"};
  snap.component = {{"snapshot", {{"name", "cairn-x"}}}};
  CHECK(drv.check_snapshot(snap).empty());

  v1::Task task;
  task.set_kind(v1::TASK_KIND_BACKUP);
  auto r = drv.preflight(task);
  REQUIRE(r.size() == 1);
  CHECK(r[0].code() == v1::ERROR_CODE_PREFLIGHT_FAILED);
  CHECK_THAT(r[0].detail(), Catch::Contains("127.0.0.1:" + std::to_string(port)) && Catch::Contains("does not answer"));

  task.set_kind(v1::TASK_KIND_RESTORE);
  task.mutable_options()->set_restore_target("elsewhere");
  task.mutable_options()->set_skip_safety_backup(true);
  r = drv.preflight(task);
  CHECK_THAT(details(r), Catch::Contains("declares no restore targets"));
}
