// The prometheus driver's restore against a real Prometheus controlled by
// declared start/stop scripts, from a snapshot in a real repository: the
// data comes back, the old TSDB dir is kept aside, the config file is back.
// (The repository snapshot is written here with the archiver directly, the
// server's snapshot renamed to data_dir, as the runner stores it.)
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "../agent_platform/platform_fixture.h"
#include "agent/drivers/prometheus/prometheus_driver.h"
#include "agent/platform/http.h"
#include "agent/platform/process.h"
#include "agent/restore_journal.h"
#include "common/repo/archiver.h"
#include "common/repo/repository.h"
#include "common/repo/storage/backend.h"
#include "tests/unit/agent/agent_fixture.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::prometheus;
using namespace cairn::agent::platform::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace v1 = cairn::v1;

namespace {

void run_ok(const std::vector<std::string>& argv) {
  platform::ProcessSpec s;
  s.argv = argv;
  auto r = platform::run_process(s);
  if (!r.ok()) throw std::runtime_error(argv[0] + ": " + r.describe());
}

size_t series_in(const std::string& url, int64_t lo_ms, int64_t hi_ms) {
  platform::HttpRequest r;
  r.url = url + "/api/v1/series?match%5B%5D=" + platform::url_encode("{job=\"self\"}") + "&start=" + std::to_string(lo_ms / 1000) +
          "&end=" + std::to_string((hi_ms + 999) / 1000);
  auto j = nlohmann::json::parse(platform::http_request(r).body);
  return j["data"].size();
}

struct ScriptedServer {
  TempDir dir;
  int port = cairn::agent::test::free_port();
  std::string url = "http://127.0.0.1:" + std::to_string(port);
  std::string data = dir.file("data"), config = dir.file("prometheus.yml"), pid = dir.file("pid");
  std::string start_sh = dir.file("start.sh"), stop_sh = dir.file("stop.sh");

  ScriptedServer() {
    write_text(config,
               "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n"
               "      - targets: ['127.0.0.1:" +
                   std::to_string(port) + "']\n");
    // A start fails (once) while the file `fail-start` exists.
    write_text(start_sh, "#!/bin/sh\nif [ -f " + dir.file("fail-start") + " ]; then rm -f " + dir.file("fail-start") +
                             "; echo refused >&2; exit 3; fi\nprometheus --config.file=" + config + " --storage.tsdb.path=" + data +
                             " --web.listen-address=127.0.0.1:" + std::to_string(port) +
                             " --web.enable-admin-api --log.level=warn </dev/null >>" + dir.file("log") + " 2>&1 &\necho $! > " + pid +
                             "\n");
    write_text(stop_sh, "#!/bin/sh\n[ -f " + pid + " ] || exit 0\np=$(cat " + pid +
                            ")\nkill $p 2>/dev/null\n"
                            "while [ -r /proc/$p/stat ] && [ \"$(sed 's/.*) //' /proc/$p/stat | cut -c1)\" != Z ]; do sleep 0.1; done\n"
                            "rm -f " +
                            pid + "\n");
    fs::permissions(start_sh, fs::perms::owner_all);
    fs::permissions(stop_sh, fs::perms::owner_all);
  }
  ~ScriptedServer() {
    try {
      stop();
    } catch (...) {
    }
  }
  void start() {
    run_ok({start_sh});
    Api api(url);
    auto end = std::chrono::steady_clock::now() + 30s;
    while (!api.ready(nullptr)) {
      if (std::chrono::steady_clock::now() > end) throw std::runtime_error("prometheus not ready");
      std::this_thread::sleep_for(100ms);
    }
  }
  void stop() { run_ok({stop_sh}); }
  // Started by someone else (the driver): ready within 30 s.
  bool ready_soon() const {
    Api api(url);
    auto end = std::chrono::steady_clock::now() + 30s;
    while (!api.ready(nullptr)) {
      if (std::chrono::steady_clock::now() > end) return false;
      std::this_thread::sleep_for(100ms);
    }
    return true;
  }
  Settings settings() const {
    Settings s;
    s.url = url;
    s.data_dir = data;
    s.config_files = {config};
    s.service.start_command = {start_sh};
    s.service.stop_command = {stop_sh};
    s.service.timeout = 60s;
    return s;
  }
};

struct Sink : SnapshotSink {
  std::vector<std::pair<std::string, std::string>> paths;
  nlohmann::json metadata;
  std::vector<std::function<void()>> done;
  void add_path(const std::string& real, const std::string& snap) override { paths.emplace_back(real, snap); }
  void exclude(const std::string&) override {}
  void immutable_links() override {}
  void add_stream(const std::string&, std::function<void(int)>) override {}
  void set_metadata(nlohmann::json m) override { metadata = std::move(m); }
  void add_reason(v1::Reason) override {}
  void on_done(std::function<void()> f) override { done.push_back(std::move(f)); }
};

}  // namespace

TEST_CASE("prometheus restore: stop, TSDB dir replaced (old kept), config back, started, series answered") {
  ScriptedServer srv;
  srv.start();
  PrometheusDriver d("prom", srv.settings());
  TaskContext ctx;
  // Wait for scraped samples, then take the server's snapshot.
  Sink sink;
  for (int i = 0; i < 120; ++i) {
    sink = Sink{};
    d.snapshot(ctx, sink, SnapshotPurpose{});
    if (sink.metadata["blocks"].get<int>() > 0) break;
    for (auto& f : sink.done) f();
    std::this_thread::sleep_for(500ms);
  }
  REQUIRE(sink.metadata["blocks"].get<int>() > 0);
  int64_t lo = sink.metadata["min_time"], hi = sink.metadata["max_time"];
  size_t series_before = series_in(srv.url, lo, hi);
  REQUIRE(series_before > 10);

  // Store it as the runner does: the server's snapshot at <data_dir>, plus the config.
  srv.stop();
  fs::rename(srv.data, srv.data + ".live");
  fs::rename(srv.data + ".live/snapshots/" + sink.metadata["snapshot_name"].get<std::string>(), srv.data);
  auto be = repo::make_fs_backend(srv.dir.file("repo"));
  repo::InitOptions io;
  io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
  repo::Secret secret(repo::Secret::Kind::passphrase, "pw");
  repo::Repository::init(*be, secret, io);
  auto repo = repo::Repository::open(repo::make_fs_backend(srv.dir.file("repo")), secret);
  (void)repo->load_index();
  repo::BackupOptions bo;
  bo.paths = {srv.data, srv.config};
  auto br = repo::backup(*repo, bo);

  // Wipe: an empty server, and a changed config.
  fs::remove_all(srv.data);
  fs::remove_all(srv.data + ".live");
  std::string config_text = read_text(srv.config);
  write_text(srv.config, config_text + "# edited after the backup\n");
  srv.start();
  CHECK(series_in(srv.url, lo, hi) == 0);

  ctx.repo = repo.get();
  ctx.component = "prom";
  ctx.task_id = "tk-1";
  RestoreJournal journal(srv.dir.file("state/restores"));
  ctx.journal = &journal;
  RestoreSpec spec;
  spec.snapshot_id = br.snapshot.id;
  DriverResult res = d.restore(ctx, spec);
  INFO((res.reasons.empty() ? std::string() : res.reasons[0].detail()));
  REQUIRE(res.outcome == v1::TASK_OUTCOME_SUCCEEDED);
  CHECK(series_in(srv.url, lo, hi) == series_before);
  CHECK(d.verify(ctx, sink.metadata).empty());
  CHECK(read_text(srv.config) == config_text);
  std::string old = res.metadata["previous_data_dir"].get<std::string>();
  CHECK(old.rfind(srv.data + ".cairn-old-", 0) == 0);
  CHECK(fs::is_directory(old + "/wal"));  // the wiped server's own data, kept aside
  // The configuration it replaced is kept aside too.
  const std::string stamp = old.substr((srv.data + ".cairn-old-").size());
  CHECK(read_text(srv.config + ".cairn-old-" + stamp) == config_text + "# edited after the backup\n");
  for (const auto& e : fs::directory_iterator(srv.dir.path()))
    CHECK(e.path().filename().string().find("cairn-restore") == std::string::npos);
  std::vector<std::string> problems;
  CHECK(journal.load(&problems).empty());  // the record goes with a restore that ended

  // A server that does not start on the restored data: the previous data and
  // configuration go back and it is started on them.
  write_text(srv.config, config_text + "# the live configuration\n");
  write_text(srv.dir.file("fail-start"), "");
  res = d.restore(ctx, spec);
  REQUIRE(res.outcome == v1::TASK_OUTCOME_FAILED);
  std::string why = res.reasons.back().detail();
  CHECK_THAT(why, Catch::Contains("did not start on the restored data") && Catch::Contains("the previous data is back") &&
                      Catch::Contains("prometheus was started on it"));
  REQUIRE(srv.ready_soon());
  CHECK(series_in(srv.url, lo, hi) == series_before);  // the data it ran on before this restore
  CHECK(read_text(srv.config) == config_text + "# the live configuration\n");
  CHECK(journal.load(&problems).empty());

  // An agent killed with the data swapped (its record left): at its start the
  // driver stops whatever runs, puts the previous data back and starts it.
  srv.stop();
  InPlaceRestore rec;
  rec.component = "prom";
  rec.task_id = "tk-2";
  rec.stamp = "20261127T010101Z";
  rec.state = InPlaceRestore::State::swapping;
  rec.moves = {{srv.data, srv.data + ".cairn-old-" + rec.stamp}};
  rec.scratch = {srv.data + ".cairn-restore-" + rec.stamp};
  fs::rename(srv.data, rec.moves[0].aside);
  fs::create_directories(srv.data);  // an empty "restored copy", started on
  fs::create_directories(rec.scratch[0]);
  srv.start();
  CHECK(series_in(srv.url, lo, hi) == 0);
  std::string done = d.recover_interrupted_restore(rec);
  CHECK_THAT(done, Catch::Contains("the previous data is back in '" + srv.data + "'") && Catch::Contains("prometheus was started on it"));
  REQUIRE(srv.ready_soon());
  CHECK(series_in(srv.url, lo, hi) == series_before);
  CHECK(fs::is_directory(srv.data + ".cairn-failed-" + rec.stamp));
  CHECK_FALSE(fs::exists(rec.scratch[0]));
  // Run again (killed during its own undo): nothing is lost.
  CHECK_NOTHROW(d.recover_interrupted_restore(rec));
  REQUIRE(srv.ready_soon());
  CHECK(series_in(srv.url, lo, hi) == series_before);
}

TEST_CASE("prometheus restore: a snapshot of another data dir changes nothing") {
  ScriptedServer srv;
  TempDir elsewhere;
  write_text(elsewhere.file("f"), "x");
  auto be = repo::make_fs_backend(srv.dir.file("repo"));
  repo::InitOptions io;
  io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
  repo::Secret secret(repo::Secret::Kind::passphrase, "pw");
  repo::Repository::init(*be, secret, io);
  auto repo = repo::Repository::open(repo::make_fs_backend(srv.dir.file("repo")), secret);
  (void)repo->load_index();
  repo::BackupOptions bo;
  bo.paths = {elsewhere.path()};
  auto br = repo::backup(*repo, bo);
  PrometheusDriver d("prom", srv.settings());
  TaskContext ctx;
  ctx.repo = repo.get();
  RestoreSpec spec;
  spec.snapshot_id = br.snapshot.id;
  auto res = d.restore(ctx, spec);
  CHECK(res.outcome == v1::TASK_OUTCOME_FAILED);
  std::string all;
  for (const auto& r : res.reasons) all += r.detail() + "\n";
  CHECK_THAT(all, Catch::Contains("holds no '" + srv.data + "'") && Catch::Contains("nothing was changed"));
  CHECK_THAT(all, Catch::Contains("holds '" + elsewhere.path() + "', which component 'prom' does not declare"));
  CHECK_FALSE(fs::exists(srv.pid));  // never started nor stopped
}
