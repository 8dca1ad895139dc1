// The prometheus driver's settings, and its preflight and snapshot against a
// real Prometheus started here (loopback, a free port, data in a temp dir),
// with a sink that records what the driver hands it.
#include "agent/drivers/prometheus/prometheus_driver.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <functional>

#include "../agent_platform/platform_fixture.h"
#include "agent/drivers/prometheus/config.h"
#include "agent/platform/http.h"
#include "common/util/error.h"
#include "tests/unit/agent/agent_fixture.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::prometheus;
using namespace cairn::agent::platform::test;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace v1 = cairn::v1;

namespace {

Settings parse(const std::string& toml_text) {
  auto tbl = toml::parse(toml_text);
  TableReader r(tbl, "agent.toml", "[[component]] 'prom'");
  Settings s = parse_settings(r);
  r.finish();
  return s;
}

using cairn::agent::test::free_port;

// A Prometheus scraping itself every second.
struct Server {
  TempDir dir;
  int port = free_port();
  std::string url = "http://127.0.0.1:" + std::to_string(port);
  std::string data = dir.file("data");
  std::string config = dir.file("prometheus.yml");
  std::unique_ptr<Background> proc;

  explicit Server(bool admin) {
    write_text(config,
               "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: self\n    static_configs:\n"
               "      - targets: ['127.0.0.1:" +
                   std::to_string(port) + "']\n");
    std::vector<std::string> argv = {"prometheus", "--config.file=" + config, "--storage.tsdb.path=" + data,
                                     "--web.listen-address=127.0.0.1:" + std::to_string(port), "--log.level=warn"};
    if (admin) argv.push_back("--web.enable-admin-api");
    proc = std::make_unique<Background>(argv);
    Api api(url);
    auto end = std::chrono::steady_clock::now() + 30s;
    while (!api.ready(nullptr)) {
      if (std::chrono::steady_clock::now() > end) throw std::runtime_error("prometheus did not become ready");
      std::this_thread::sleep_for(100ms);
    }
  }

  Settings settings() const {
    Settings s;
    s.url = url;
    s.data_dir = data;
    s.config_files = {config};
    return s;
  }

  // Waits until the head holds samples (the first scrape comes a few seconds after start).
  void wait_for_samples() {
    auto end = std::chrono::steady_clock::now() + 60s;
    while (std::chrono::steady_clock::now() < end) {
      platform::HttpRequest r;
      r.url = url + "/api/v1/query?query=" + platform::url_encode("count_over_time(up[5m])");
      auto resp = platform::http_request(r);
      auto j = nlohmann::json::parse(resp.body, nullptr, false);
      if (j.is_object() && !j["data"]["result"].empty() && std::stod(j["data"]["result"][0]["value"][1].get<std::string>()) >= 2) return;
      std::this_thread::sleep_for(250ms);
    }
    throw std::runtime_error("prometheus scraped nothing within 60 s");
  }
};

struct RecordingSink : SnapshotSink {
  std::vector<std::pair<std::string, std::string>> paths;
  bool immutable = false;
  nlohmann::json metadata;
  std::vector<v1::Reason> reasons;
  std::vector<std::function<void()>> done;
  void add_path(const std::string& real, const std::string& snap) override { paths.emplace_back(real, snap); }
  void exclude(const std::string&) override {}
  void immutable_links() override { immutable = true; }
  void add_stream(const std::string&, std::function<void(int)>) override { FAIL("no stream expected"); }
  void set_metadata(nlohmann::json m) override { metadata = std::move(m); }
  void add_reason(v1::Reason r) override { reasons.push_back(std::move(r)); }
  void on_done(std::function<void()> f) override { done.push_back(std::move(f)); }
};

v1::Task backup_task() {
  v1::Task t;
  t.set_kind(v1::TASK_KIND_BACKUP);
  t.set_component("prom");
  return t;
}

std::string details(const std::vector<v1::Reason>& rs) {
  std::string s;
  for (const auto& r : rs) s += r.detail() + "\n";
  return s;
}

}  // namespace

TEST_CASE("prometheus settings: defaults, service forms, refusals") {
  auto s = parse("data_dir = \"/var/lib/prometheus/\"\nservice = \"prometheus.service\"\n");
  CHECK(s.url == "http://127.0.0.1:9090");
  CHECK(s.data_dir == "/var/lib/prometheus");
  CHECK(s.service.unit == "prometheus.service");

  s = parse(
      "url = \"http://127.0.0.1:9191/prom/\"\ndata_dir = \"/d\"\nconfig_files = [\"/etc/p.yml\"]\n"
      "service = { start_command = [\"/bin/start\", \"x\"], stop_command = [\"/bin/stop\"], timeout_seconds = 7 }\n");
  CHECK(s.url == "http://127.0.0.1:9191/prom");
  CHECK(s.config_files == std::vector<std::string>{"/etc/p.yml"});
  CHECK(s.service.start_command == std::vector<std::string>{"/bin/start", "x"});
  CHECK(s.service.timeout == 7s);

  CHECK_THROWS_WITH(parse("url = \"x\"\n"), Catch::Contains("needs 'data_dir'") || Catch::Contains("http://"));
  CHECK_THROWS_WITH(parse("data_dir = \"relative\"\n"), Catch::Contains("'data_dir'") && Catch::Contains("absolute"));
  CHECK_THROWS_WITH(parse("data_dir = \"/d\"\nurl = \"ftp://x\"\n"), Catch::Contains("http://"));
  CHECK_THROWS_WITH(parse("data_dir = \"/d\"\nconfig_files = [\"/d/x.yml\"]\n"), Catch::Contains("lies in data_dir"));
  CHECK_THROWS_WITH(parse("data_dir = \"/d\"\nservice = { start_command = [\"/bin/start\"] }\n"),
                    Catch::Contains("both 'start_command' and 'stop_command'"));
  CHECK_THROWS_WITH(parse("data_dir = \"/d\"\nservice = { unit = \"p\", start_command = [\"start\"] }\n"),
                    Catch::Contains("absolute path"));
  CHECK_THROWS_WITH(parse("data_dir = \"/d\"\nservice = { unit = \"p\", colour = 1 }\n"), Catch::Contains("unknown key 'colour'"));
  CHECK_THROWS_WITH(parse("data_dir = \"/d\"\nservice = 3\n"), Catch::Contains("systemd unit name or a table"));
}

TEST_CASE("prometheus preflight: not reachable, admin API off, another data dir") {
  Settings down;
  down.url = "http://127.0.0.1:" + std::to_string(free_port());
  down.data_dir = "/tmp";
  auto rs = PrometheusDriver("prom", down).preflight(backup_task());
  REQUIRE(rs.size() == 1);
  CHECK(rs[0].code() == v1::ERROR_CODE_PREFLIGHT_FAILED);
  CHECK_THAT(rs[0].detail(), Catch::Contains("not reachable or not ready") && Catch::Contains(down.url));

  Server off(false);
  rs = PrometheusDriver("prom", off.settings()).preflight(backup_task());
  REQUIRE(rs.size() == 1);
  CHECK_THAT(rs[0].detail(), Catch::Contains("admin API") && Catch::Contains("--web.enable-admin-api"));

  Server on(true);
  CHECK(PrometheusDriver("prom", on.settings()).preflight(backup_task()).empty());
  TempDir other;
  Settings wrong = on.settings();
  wrong.data_dir = other.path();
  rs = PrometheusDriver("prom", wrong).preflight(backup_task());
  REQUIRE(rs.size() == 1);
  CHECK_THAT(rs[0].detail(), Catch::Contains("stores its data in '" + on.data) && Catch::Contains(other.path()));

  // A restore without a declared service is refused before anything is done.
  v1::Task restore;
  restore.set_kind(v1::TASK_KIND_RESTORE);
  restore.mutable_options()->set_skip_safety_backup(true);
  rs = PrometheusDriver("prom", on.settings()).preflight(restore);
  CHECK_THAT(details(rs), Catch::Contains("declare its 'service'"));
}

TEST_CASE("prometheus snapshot: the server's snapshot mapped to data_dir, metadata from its blocks, removed when done") {
  Server srv(true);
  srv.wait_for_samples();
  PrometheusDriver d("prom", srv.settings());
  RecordingSink sink;
  TaskContext ctx;
  d.snapshot(ctx, sink, SnapshotPurpose{});

  REQUIRE(sink.paths.size() == 2);
  std::string real = sink.paths[0].first;
  CHECK(real.rfind(srv.data + "/snapshots/", 0) == 0);
  CHECK(sink.paths[0].second == srv.data);
  CHECK(sink.paths[1] == std::make_pair(srv.config, std::string()));
  CHECK(sink.immutable);
  CHECK(sink.reasons.empty());
  CHECK(fs::is_directory(real));
  CHECK(sink.metadata["blocks"].get<int>() >= 1);
  CHECK(sink.metadata["samples"].get<uint64_t>() > 0);
  CHECK(sink.metadata["min_time"].get<int64_t>() < sink.metadata["max_time"].get<int64_t>());
  CHECK_THAT(sink.metadata["prometheus_version"].get<std::string>(), Catch::StartsWith("2."));
  CHECK(sink.metadata["snapshot_name"].get<std::string>() == fs::path(real).filename().string());

  // The recorded range answers series (what verify checks after a restore).
  CHECK(d.verify(ctx, sink.metadata).empty());

  REQUIRE(sink.done.size() == 1);
  sink.done[0]();
  CHECK_FALSE(fs::exists(real));
}

TEST_CASE("prometheus snapshot: a missing config file is a reason, the data is still stored") {
  Server srv(true);
  Settings s = srv.settings();
  s.config_files.push_back(srv.dir.file("rules-missing.yml"));
  PrometheusDriver d("prom", s);
  RecordingSink sink;
  TaskContext ctx;
  d.snapshot(ctx, sink, SnapshotPurpose{});
  REQUIRE(sink.reasons.size() == 1);
  CHECK(sink.reasons[0].code() == v1::ERROR_CODE_ITEM_SKIPPED);
  CHECK_THAT(sink.reasons[0].detail(), Catch::Contains("rules-missing.yml"));
  CHECK(sink.paths.size() == 2);
  for (auto& f : sink.done) f();
}

TEST_CASE("prometheus snapshot: admin API off is an error naming the flag") {
  Server srv(false);
  PrometheusDriver d("prom", srv.settings());
  RecordingSink sink;
  TaskContext ctx;
  CHECK_THROWS_WITH(d.snapshot(ctx, sink, SnapshotPurpose{}), Catch::Contains("--web.enable-admin-api"));
  CHECK(sink.paths.empty());
}

TEST_CASE("prometheus durations as the server writes its retention") {
  CHECK(parse_duration_ms("15d") == 15 * 86'400'000LL);
  CHECK(parse_duration_ms("1y2w") == 31'536'000'000LL + 2 * 604'800'000LL);
  CHECK(parse_duration_ms("90m") == 90 * 60'000LL);
  CHECK(parse_duration_ms("500ms") == 500);
  CHECK(parse_duration_ms("") == -1);
  CHECK(parse_duration_ms("15") == -1);
  CHECK(parse_duration_ms("d") == -1);
  CHECK(parse_duration_ms("5x") == -1);
}
