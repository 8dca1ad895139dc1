// The haproxy driver against a real haproxy 2.6 (Debian's /usr/sbin/haproxy),
// without the repository: snapshot() into a recording sink, the recorded
// paths copied to a staging directory as a restore extracts them, then
// restore_staged(). Skipped when haproxy or openssl is not installed.
#include "agent/drivers/haproxy/haproxy_driver.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "agent/drivers/haproxy/config.h"
#include "agent/drivers/haproxy/file_swap.h"
#include "agent/restore_journal.h"
#include "agent_fixture.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::haproxy;
using namespace cairn::agent::test;
namespace v1 = cairn::v1;
namespace fs = std::filesystem;

namespace {

const char* kHaproxy = "/usr/sbin/haproxy";

struct RecordingSink : SnapshotSink {
  std::vector<std::pair<std::string, std::string>> paths;
  std::vector<v1::Reason> reasons;
  nlohmann::json meta;
  std::vector<std::function<void()>> done;
  void add_path(const std::string& real, const std::string& snap) override { paths.emplace_back(real, snap); }
  void exclude(const std::string&) override {}
  void immutable_links() override {}
  void add_stream(const std::string&, std::function<void(int)>) override { FAIL("no stream expected"); }
  void set_metadata(nlohmann::json m) override { meta = std::move(m); }
  void add_reason(v1::Reason r) override { reasons.push_back(std::move(r)); }
  void on_done(std::function<void()> f) override { done.push_back(std::move(f)); }
  // What a restore extracts: every added path at its snapshot path below stage/root.
  void stage(const std::string& stage_dir) const {
    for (const auto& [real, snap] : paths) {
      std::string to = stage_dir + "/root" + (snap.empty() ? real : snap);
      fs::create_directories(fs::path(to).parent_path());
      fs::copy(real, to, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    }
  }
  void finish() {
    for (auto& f : done) f();
    done.clear();
  }
};

using cairn::agent::test::free_port;

struct Lb {
  TempDir dir;
  std::string etc = dir.file("etc");
  std::string pidfile = dir.file("haproxy.pid");
  std::string sock = dir.file("admin.sock");
  std::string argv_text;
  Settings settings;

  Lb() {
    fs::create_directories(etc + "/conf.d");
    fs::create_directories(etc + "/certs");
    fs::create_directories(dir.file("staging"));
    REQUIRE(std::system(("openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=site -keyout " + dir.file("k") + " -out " +
                         dir.file("c") + " >/dev/null 2>&1 && cat " + dir.file("c") + " " + dir.file("k") + " > " + etc + "/certs/site.pem")
                            .c_str()) == 0);
    write_text(etc + "/hosts.map", "www.example.com app\n");
    write_text(etc + "/haproxy.cfg",
               "global\n"
               "    crt-base " +
                   etc +
                   "/certs\n"
                   "    stats socket " +
                   sock +
                   " level admin\n"
                   "defaults\n"
                   "    mode http\n"
                   "    timeout connect 1s\n"
                   "    timeout client 5s\n"
                   "    timeout server 5s\n"
                   "frontend web\n"
                   "    bind 127.0.0.1:" +
                   std::to_string(free_port()) +
                   "\n"
                   "    bind 127.0.0.1:" +
                   std::to_string(free_port()) +
                   " ssl crt site.pem\n"
                   "    http-request set-var(txn.be) req.hdr(host),map_str(" +
                   etc +
                   "/hosts.map,app)\n"
                   "    default_backend app\n");
    write_text(etc + "/conf.d/10-app.cfg",
               "backend app\n"
               "    stick-table type ip size 1k expire 1h store gpc0\n"
               "    server s1 127.0.0.1:" +
                   std::to_string(free_port()) +
                   " weight 10\n"
                   "    server s2 127.0.0.1:" +
                   std::to_string(free_port()) + " weight 20\n");
    argv_text = std::string(kHaproxy) + " -f " + etc + "/haproxy.cfg -f " + etc + "/conf.d -p " + pidfile + " -D";
    REQUIRE(std::system((argv_text + log()).c_str()) == 0);
    settings.config = {etc + "/haproxy.cfg", etc + "/conf.d"};
    settings.stats_socket = sock;
    settings.staging_dir = dir.file("staging");
    settings.service.reload_command = {"/bin/sh", "-c", argv_text + " -sf $(cat " + pidfile + ")" + log()};
    wait_ready(0);
  }
  std::string log() const { return " >>" + dir.file("haproxy.log") + " 2>&1"; }
  ~Lb() {
    int p = pid();
    if (p > 0) ::kill(p, SIGTERM);
  }
  int pid() const {
    try {
      return std::stoi(read_text(pidfile));
    } catch (...) {
      return 0;
    }
  }
  void wait_ready(int old) {
    HaproxyDriver d("lb", settings);
    for (int i = 0; i < 100; ++i) {
      try {
        int p = pid();
        if (p > 0 && p != old && d.cli("show info").find("Pid: " + std::to_string(p) + "\n") != std::string::npos) return;
      } catch (const Error&) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    FAIL("haproxy did not answer on its stats socket");
  }
  void reload() {
    int old = pid();
    REQUIRE(std::system((argv_text + " -sf " + std::to_string(old) + log()).c_str()) == 0);
    wait_ready(old);
  }
};

bool have_tools() { return ::access(kHaproxy, X_OK) == 0 && std::system("command -v openssl >/dev/null") == 0; }

std::map<std::string, std::pair<int, int>> servers(const HaproxyDriver& d) {
  std::map<std::string, std::pair<int, int>> out;
  for (const auto& s : parse_servers_state(d.cli("show servers state"))) out[s.backend + "/" + s.server] = {s.admin_state, s.weight};
  return out;
}

}  // namespace

TEST_CASE("haproxy driver: a snapshot holds the files and the runtime state, and a restore brings both back") {
  if (!have_tools()) {
    WARN("haproxy or openssl not installed: skipped");
    return;
  }
  Lb lb;
  HaproxyDriver d("lb", lb.settings);
  REQUIRE(cli_ok(d.cli("set server app/s1 state maint")));
  REQUIRE(cli_ok(d.cli("set server app/s2 weight 7")));
  REQUIRE(cli_ok(d.cli("set table app key 10.9.8.7 data.gpc0 5")));
  REQUIRE(cli_ok(d.cli("add map " + lb.etc + "/hosts.map shop.example.com app")));
  auto before = servers(d);
  std::string cfg = read_text(lb.etc + "/haproxy.cfg"), app = read_text(lb.etc + "/conf.d/10-app.cfg");
  std::string cert = read_text(lb.etc + "/certs/site.pem"), map = read_text(lb.etc + "/hosts.map");

  TaskContext ctx;
  RecordingSink sink;
  d.snapshot(ctx, sink, {});
  INFO((sink.reasons.empty() ? std::string() : sink.reasons[0].detail()));
  CHECK(sink.reasons.empty());
  std::set<std::string> added;
  for (const auto& [real, snap] : sink.paths) added.insert(snap.empty() ? real : snap);
  CHECK(added.count(lb.etc + "/haproxy.cfg"));
  CHECK(added.count(lb.etc + "/conf.d"));
  CHECK(added.count(lb.etc + "/hosts.map"));
  CHECK(added.count(lb.etc + "/certs/site.pem"));
  CHECK(added.count(d.runtime_snapshot_path()));
  CHECK(sink.meta["servers"] == 2);
  CHECK(sink.meta["tables"] == 1);
  CHECK(sink.meta["haproxy_version"].get<std::string>().rfind("2.", 0) == 0);

  TempDir stage;
  sink.stage(stage.path());
  sink.finish();
  CHECK(fs::is_empty(lb.settings.staging_dir));  // the per-run runtime directory is gone

  // Damage: files, a new *.cfg, reload, runtime state reset.
  write_text(lb.etc + "/haproxy.cfg", cfg + "# edited\n");
  write_text(lb.etc + "/hosts.map", "www.example.com other\n");
  write_text(lb.etc + "/conf.d/20-extra.cfg", "backend extra\n    server x 127.0.0.1:1\n");
  lb.reload();
  REQUIRE(servers(d) != before);
  int pid_before = lb.pid();

  DriverResult r = d.restore_staged(ctx, stage.path(), "the test's snapshot", v1::RESTORE_WRITE_MODE_MIRROR);
  INFO((r.reasons.empty() ? std::string() : r.reasons[0].detail()));
  CHECK(r.outcome == v1::TASK_OUTCOME_SUCCEEDED);
  CHECK(read_text(lb.etc + "/haproxy.cfg") == cfg);
  CHECK(read_text(lb.etc + "/conf.d/10-app.cfg") == app);
  CHECK(read_text(lb.etc + "/certs/site.pem") == cert);
  CHECK(read_text(lb.etc + "/hosts.map") == map);
  CHECK_FALSE(fs::exists(lb.etc + "/conf.d/20-extra.cfg"));
  CHECK(lb.pid() != pid_before);  // reloaded
  CHECK(servers(d) == before);
  CHECK(d.cli("show table app").find("key=10.9.8.7 ") != std::string::npos);
  CHECK(d.cli("show map " + lb.etc + "/hosts.map").find("shop.example.com app") != std::string::npos);
  CHECK(d.verify(ctx, sink.meta).empty());
  REQUIRE(cli_ok(d.cli("set server app/s2 weight 3")));
  CHECK(d.verify(ctx, sink.meta).size() == 1);
}

TEST_CASE("haproxy driver: a configuration haproxy -c refuses changes nothing") {
  if (!have_tools()) {
    WARN("haproxy or openssl not installed: skipped");
    return;
  }
  Lb lb;
  HaproxyDriver d("lb", lb.settings);
  TaskContext ctx;
  RecordingSink sink;
  d.snapshot(ctx, sink, {});
  TempDir stage;
  sink.stage(stage.path());
  sink.finish();
  write_text(stage.path() + "/root" + lb.etc + "/certs/site.pem", "not a certificate\n");
  write_text(stage.path() + "/root" + lb.etc + "/hosts.map", "changed\n");
  std::string cfg = read_text(lb.etc + "/haproxy.cfg"), map = read_text(lb.etc + "/hosts.map");
  int pid = lb.pid();

  DriverResult r = d.restore_staged(ctx, stage.path(), "the test's snapshot", v1::RESTORE_WRITE_MODE_MIRROR);
  REQUIRE(r.outcome == v1::TASK_OUTCOME_FAILED);
  REQUIRE(r.reasons.size() == 1);
  const std::string why = r.reasons[0].detail();
  INFO(why);
  CHECK(why.find("haproxy -c refused") != std::string::npos);
  CHECK(why.find("nothing was changed") != std::string::npos);
  CHECK(why.find(lb.etc + "/certs/site.pem") != std::string::npos);  // haproxy's words, with the real path
  CHECK(why.find(stage.path()) == std::string::npos);
  CHECK(read_text(lb.etc + "/hosts.map") == map);
  CHECK(read_text(lb.etc + "/haproxy.cfg") == cfg);
  CHECK(lb.pid() == pid);
  for (const auto& e : fs::recursive_directory_iterator(lb.etc)) CHECK(e.path().string().find(".cairn-") == std::string::npos);
}

TEST_CASE("haproxy driver: haproxy -c reads the staged crt-list and its certificates, not the live ones") {
  if (!have_tools()) {
    WARN("haproxy or openssl not installed: skipped");
    return;
  }
  Lb lb;
  // A crt-list naming the certificate, and an ACL file, added to the configuration.
  write_text(lb.etc + "/certs/list.txt", "site.pem [alpn h2,http/1.1] site.example\n");
  write_text(lb.etc + "/blocked.lst", "10.0.0.0/8\n");
  std::string cfg = read_text(lb.etc + "/haproxy.cfg");
  std::string port = std::to_string(free_port());
  write_text(lb.etc + "/haproxy.cfg", cfg + "    bind 127.0.0.1:" + port + " ssl crt-list " + lb.etc +
                                          "/certs/list.txt\n    acl blocked src -f " + lb.etc + "/blocked.lst\n");
  lb.reload();
  HaproxyDriver d("lb", lb.settings);
  TaskContext ctx;
  RecordingSink sink;
  d.snapshot(ctx, sink, {});
  std::set<std::string> added;
  for (const auto& [real, snap] : sink.paths) added.insert(snap.empty() ? real : snap);
  CHECK(added.count(lb.etc + "/certs/list.txt"));
  CHECK(added.count(lb.etc + "/blocked.lst"));
  TempDir stage;
  sink.stage(stage.path());
  sink.finish();

  // The live certificate broken, the staged one good: the check passes only
  // when both the 'crt' and the crt-list (a rewritten copy) point at the
  // staged certificate.
  std::string good = read_text(lb.etc + "/certs/site.pem");
  write_text(lb.etc + "/certs/site.pem", "broken\n");
  DriverResult r = d.restore_staged(ctx, stage.path(), "the test's snapshot", v1::RESTORE_WRITE_MODE_MIRROR);
  INFO((r.reasons.empty() ? std::string() : r.reasons[0].detail()));
  CHECK(r.outcome == v1::TASK_OUTCOME_SUCCEEDED);
  CHECK(read_text(lb.etc + "/certs/site.pem") == good);

  CHECK(read_text(lb.etc + "/certs/site.pem") == good);
}

TEST_CASE("haproxy driver: the saved servers state is written to the server-state-file haproxy loads at reload") {
  if (!have_tools()) {
    WARN("haproxy or openssl not installed: skipped");
    return;
  }
  Lb lb;
  std::string state = lb.dir.file("state/global.state");
  std::string cfg = read_text(lb.etc + "/haproxy.cfg");
  size_t g = cfg.find("global\n") + 7;
  cfg.insert(g, "    server-state-base " + lb.dir.file("state") + "\n    server-state-file global.state\n");
  size_t dflt = cfg.find("defaults\n") + 9;
  cfg.insert(dflt, "    load-server-state-from-file global\n");
  write_text(lb.etc + "/haproxy.cfg", cfg);
  fs::create_directories(lb.dir.file("state"));
  lb.reload();
  HaproxyDriver d("lb", lb.settings);
  REQUIRE(cli_ok(d.cli("set server app/s2 state maint")));
  auto before = servers(d);
  TaskContext ctx;
  RecordingSink sink;
  d.snapshot(ctx, sink, {});
  CHECK(sink.reasons.empty());  // a server-state file not written yet is no missing file
  TempDir stage;
  sink.stage(stage.path());
  sink.finish();
  REQUIRE(cli_ok(d.cli("set server app/s2 state ready")));

  DriverResult r = d.restore_staged(ctx, stage.path(), "the test's snapshot", v1::RESTORE_WRITE_MODE_MIRROR);
  INFO((r.reasons.empty() ? std::string() : r.reasons[0].detail()));
  CHECK(r.outcome == v1::TASK_OUTCOME_SUCCEEDED);
  REQUIRE(fs::exists(state));
  auto saved = parse_servers_state(read_text(state));
  REQUIRE(saved.size() == 2);
  CHECK(saved[1].server == "s2");
  CHECK(saved[1].forced() == "maint");
  CHECK(servers(d) == before);
}

TEST_CASE("haproxy driver: a snapshot holding a file nothing references is refused") {
  if (!have_tools()) {
    WARN("haproxy or openssl not installed: skipped");
    return;
  }
  Lb lb;
  HaproxyDriver d("lb", lb.settings);
  TaskContext ctx;
  RecordingSink sink;
  d.snapshot(ctx, sink, {});
  TempDir stage;
  sink.stage(stage.path());
  sink.finish();
  std::string planted = lb.dir.file("elsewhere/planted.txt");
  write_text(stage.path() + "/root" + planted, "x\n");
  DriverResult r = d.restore_staged(ctx, stage.path(), "the test's snapshot", v1::RESTORE_WRITE_MODE_MIRROR);
  REQUIRE(r.outcome == v1::TASK_OUTCOME_FAILED);
  CHECK(r.reasons.at(0).code() == v1::ERROR_CODE_UNSUPPORTED_TASK);
  CHECK(r.reasons.at(0).item() == planted);
  CHECK_FALSE(fs::exists(planted));
}

TEST_CASE("haproxy driver: preflight checks the socket's level and the configuration") {
  if (!have_tools()) {
    WARN("haproxy or openssl not installed: skipped");
    return;
  }
  Lb lb;
  v1::Task backup;
  backup.set_kind(v1::TASK_KIND_BACKUP);
  v1::Task restore;
  restore.set_kind(v1::TASK_KIND_RESTORE);
  CHECK(HaproxyDriver("lb", lb.settings).preflight(backup).empty());
  CHECK(HaproxyDriver("lb", lb.settings).preflight(restore).empty());

  Settings no_socket = lb.settings;
  no_socket.stats_socket = lb.dir.file("nothing.sock");
  auto r = HaproxyDriver("lb", no_socket).preflight(backup);
  REQUIRE(r.size() == 1);
  CHECK(r[0].code() == v1::ERROR_CODE_PREFLIGHT_FAILED);
  CHECK(r[0].detail().find("level admin") != std::string::npos);

  Settings no_service = lb.settings;
  no_service.service = {};
  r = HaproxyDriver("lb", no_service).preflight(restore);
  REQUIRE(r.size() == 1);
  CHECK(r[0].detail().find("declares no 'service'") != std::string::npos);

  Settings no_config = lb.settings;
  no_config.config = {lb.dir.file("missing.cfg")};
  r = HaproxyDriver("lb", no_config).preflight(backup);
  REQUIRE(r.size() == 1);
  CHECK(r[0].detail().find("missing.cfg") != std::string::npos);

  restore.mutable_options()->set_restore_target("alternate");
  r = HaproxyDriver("lb", lb.settings).preflight(restore);
  REQUIRE(r.size() == 1);
  CHECK(r[0].code() == v1::ERROR_CODE_UNSUPPORTED_TASK);
}

TEST_CASE("haproxy driver: the files of a backup, links followed, missing references reported") {
  TempDir d;
  write_text(d.file("real/haproxy.cfg"),
             "frontend f\n  bind :80\n  errorfile 503 " + d.file("e/503.http") + "\n  acl x src -f " + d.file("missing.lst") + "\n");
  write_text(d.file("e/503.http"), "HTTP/1.0 503\r\n\r\n");
  fs::create_directories(d.file("etc"));
  fs::create_symlink(d.file("real/haproxy.cfg"), d.file("etc/haproxy.cfg"));
  Settings s;
  s.config = {d.file("etc/haproxy.cfg")};
  s.stats_socket = d.file("s.sock");
  s.staging_dir = d.path();
  s.extra_files = {d.file("extra.pem")};
  FileSet f = HaproxyDriver("lb", s).files();
  CHECK(f.present == std::vector<std::string>{d.file("e/503.http"), d.file("etc/haproxy.cfg"), d.file("real/haproxy.cfg")});
  REQUIRE(f.missing.size() == 2);
  std::string all = f.missing[0].detail() + "\n" + f.missing[1].detail();
  CHECK(all.find("ACL file '" + d.file("missing.lst") + "' (acl -f at " + d.file("etc/haproxy.cfg") + ":4) does not exist") !=
        std::string::npos);
  CHECK(all.find("extra file '" + d.file("extra.pem") + "' does not exist") != std::string::npos);
}

TEST_CASE("haproxy file swap keeps the old files and undoes everything") {
  TempDir d;
  write_text(d.file("a.cfg"), "old a\n");
  write_text(d.file("b.cfg"), "old b\n");
  write_text(d.file("new/a.cfg"), "new a\n");
  write_text(d.file("new/c.cfg"), "new c\n");
  write_text(d.file("new/b.cfg"), "old b\n");
  ::chmod(d.file("new/b.cfg").c_str(), 0644);
  ::chmod(d.file("b.cfg").c_str(), 0644);
  FileSwap swap("T");
  CHECK(swap.install(d.file("new/a.cfg"), d.file("a.cfg")));
  CHECK_FALSE(swap.install(d.file("new/b.cfg"), d.file("b.cfg")));  // already equal
  CHECK(swap.install(d.file("new/c.cfg"), d.file("c.cfg")));
  swap.set_aside(d.file("b.cfg"));
  CHECK(read_text(d.file("a.cfg")) == "new a\n");
  CHECK(read_text(d.file("a.cfg.cairn-old-T")) == "old a\n");
  CHECK(read_text(d.file("b.cfg.cairn-old-T")) == "old b\n");
  CHECK_FALSE(fs::exists(d.file("b.cfg")));
  CHECK(swap.changed().size() == 3);
  CHECK(swap.rollback().empty());
  CHECK(read_text(d.file("a.cfg")) == "old a\n");
  CHECK(read_text(d.file("b.cfg")) == "old b\n");
  CHECK_FALSE(fs::exists(d.file("c.cfg")));
  CHECK_FALSE(fs::exists(d.file("a.cfg.cairn-old-T")));
  CHECK_FALSE(fs::exists(d.file("b.cfg.cairn-old-T")));
}

TEST_CASE("haproxy file swap tells each change first; a record it cannot write stops that change, and the record undoes the rest") {
  TempDir d;
  write_text(d.file("a.cfg"), "old a\n");
  write_text(d.file("b.cfg"), "old b\n");
  write_text(d.file("new/a.cfg"), "new a\n");
  write_text(d.file("new/b.cfg"), "new b\n");
  write_text(d.file("new/c.cfg"), "new c\n");
  FileSwap swap("T");
  InPlaceRestore rec;
  rec.stamp = "T";
  int allowed = 2;
  swap.before_change([&](const std::string& dst, const std::string& old) {
    if (allowed-- == 0) throw Error(Errc::io, "the record cannot be written");
    rec.moves.push_back({dst, old});
  });
  CHECK(swap.install(d.file("new/a.cfg"), d.file("a.cfg")));
  CHECK(swap.install(d.file("new/c.cfg"), d.file("c.cfg")));
  CHECK_THROWS_WITH(swap.install(d.file("new/b.cfg"), d.file("b.cfg")), Catch::Contains("cannot be written"));
  CHECK(read_text(d.file("b.cfg")) == "old b\n");  // not told, not changed
  for (const auto& e : fs::directory_iterator(d.path()))
    CHECK(e.path().filename().string().find("cairn-new") == std::string::npos);  // no temporary left
  REQUIRE(rec.moves.size() == 2);
  CHECK(rec.moves[0].aside == d.file("a.cfg.cairn-old-T"));
  CHECK(rec.moves[1].aside.empty());  // c.cfg had no previous contents
  // What an agent killed here finds at its start: the record undoes it all.
  CHECK(put_back_moves(rec).empty());
  CHECK(read_text(d.file("a.cfg")) == "old a\n");
  CHECK_FALSE(fs::exists(d.file("c.cfg")));
  CHECK(read_text(d.file("a.cfg.cairn-failed-T")) == "new a\n");
}

TEST_CASE("haproxy driver settings") {
  auto parse = [](const std::string& text) {
    toml::table t = toml::parse(text);
    TableReader r(t, "agent.toml", "[[component]] 'lb'");
    Settings s = parse_settings(r);
    r.finish();
    return s;
  };
  Settings s = parse(
      "config = [\"/etc/haproxy/haproxy.cfg\", \"/etc/haproxy/conf.d/\"]\nstats_socket = \"unix:/run/haproxy/admin.sock\"\n"
      "service = \"haproxy.service\"\nstaging_dir = \"/var/tmp\"\n");
  CHECK(s.config == std::vector<std::string>{"/etc/haproxy/haproxy.cfg", "/etc/haproxy/conf.d"});
  CHECK(s.stats_socket == "/run/haproxy/admin.sock");
  CHECK(s.service.unit == "haproxy.service");
  CHECK(s.haproxy == "/usr/sbin/haproxy");
  CHECK(s.staging_dir == "/var/tmp");
  s = parse(
      "config = \"/h.cfg\"\nstats_socket = \"/s\"\nservice = { start_command = [\"/bin/true\"], stop_command = [\"/bin/true\"], "
      "reload_command = [\"/bin/true\"], timeout_seconds = 30 }\n");
  CHECK(s.service.reload_command == std::vector<std::string>{"/bin/true"});
  CHECK(s.service.timeout == std::chrono::seconds(30));
  CHECK_THROWS_WITH(parse("stats_socket = \"/s\"\n"), Catch::Contains("needs 'config'"));
  CHECK_THROWS_WITH(parse("config = \"h.cfg\"\nstats_socket = \"/s\"\n"), Catch::Contains("'h.cfg' is not an absolute path"));
  CHECK_THROWS_WITH(parse("config = \"/h.cfg\"\n"), Catch::Contains("needs 'stats_socket'"));
  CHECK_THROWS_WITH(parse("config = \"/h.cfg\"\nstats_socket = \"/s\"\nservice = { relaod_command = [\"x\"] }\n"),
                    Catch::Contains("relaod_command"));
}
