// The Prometheus drill (docs/drills.md): started in a drill's sandbox
// (agent/sandbox/sandbox.h) on the restored snapshot and checked against
// what the backup recorded. Its tools are its own [drill] keys.
#include "agent/drivers/prometheus/drill.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "agent/config_reader.h"
#include "agent/drill_paths.h"
#include "agent/drill_support.h"
#include "agent/platform/http.h"
#include "agent/platform/process.h"
#include "agent/platform/socket_client.h"
#include "agent/sandbox/sandbox.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent {

namespace v1 = cairn::v1;
namespace fs = std::filesystem;

namespace drill_internal {

using Report = DrillReport;

struct PrometheusDrillKeys {
  std::string prometheus = "prometheus";
};

// The value of an unlabelled gauge in Prometheus's text exposition; -1 when absent.
double exposition_value(const std::string& text, const std::string& name) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.rfind(name + " ", 0) == 0) try {
        return std::stod(line.substr(name.size() + 1));
      } catch (...) {
      }
  return -1;
}

// Prometheus: a server on the restored TSDB, scraping nothing, keeping
// everything (no retention), its own answers checked against the blocks the
// backup recorded.
void drill_prometheus(const DrillDecl& d, const PrometheusDrillKeys& dk, Sandbox& box, const repo::Snapshot& snap,
                      const std::string& restored, Report& rep, const std::atomic<bool>* cancel,
                      const std::function<void(const std::string&)>& phase) {
  const nlohmann::json& rec = snap.component;
  const std::string data_dir = rec.value("data_dir", std::string());
  std::string why;
  auto at = sandboxed_path(restored, data_dir, &why);
  if (!at) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot records the Prometheus data directory '" + data_dir +
                                               "', which the drill does not use: " + why + "; nothing was started");
    return;
  }
  if (!fs::is_directory(fs::symlink_status(*at))) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot holds no Prometheus data directory ('" + data_dir + "')");
    return;
  }
  const std::string tsdb = *at;
  const int64_t blocks = rec.value("blocks", int64_t(0)), min_time = rec.value("min_time", int64_t(0)),
                max_time = rec.value("max_time", int64_t(0));
  auto t = Clock::now();
  phase("start");
  {
    std::ofstream cfg(box.dir() + "/prometheus.yml");
    cfg << "global:\n  scrape_interval: 1h\nscrape_configs: []\n";
  }
  const std::string url = "http://127.0.0.1:9090";
  pid_t server = box.spawn_server({dk.prometheus, "--config.file=" + box.dir() + "/prometheus.yml", "--storage.tsdb.path=" + tsdb,
                                   "--storage.tsdb.retention.time=200y", "--web.listen-address=127.0.0.1:9090"},
                                  box.dir() + "/prometheus.log");
  auto get = [&](const std::string& path, std::chrono::milliseconds timeout) {
    platform::HttpRequest q;
    q.url = url + path;
    q.timeout = timeout;
    q.cancel = cancel;
    q.max_body = 64 << 20;
    return platform::http_request(q);
  };
  if (!wait_started(d, box, server, box.dir() + "/prometheus.log", "Prometheus", "Prometheus ready", "ready", cancel, rep, t, [&] {
        auto r = get("/-/ready", std::chrono::seconds(2));
        return r.status == 200 ? std::string() : "HTTP " + std::to_string(r.status);
      }))
    return;
  t = Clock::now();
  phase("check");
  auto metrics = get("/metrics", std::chrono::seconds(30)).body;
  const double loaded = exposition_value(metrics, "prometheus_tsdb_blocks_loaded");
  rep.check("blocks loaded", blocks, int64_t(loaded), int64_t(loaded) == blocks);
  if (blocks > 0) {
    const double lowest = exposition_value(metrics, "prometheus_tsdb_lowest_timestamp");
    rep.check("oldest sample (ms)", min_time, int64_t(lowest), int64_t(lowest) == min_time);
    // Series with samples in the newest recorded hour, asked through PromQL.
    // last_over_time keeps each series' name (count_over_time drops it, and
    // two metrics with the same labels, as any self-scraping server has,
    // then collide into an error). An error is never a count: the check
    // fails naming it.
    char at[64];
    std::snprintf(at, sizeof at, "%.3f", double(max_time) / 1000.0);
    const std::string query = "count(last_over_time({__name__=~\".+\"}[1h]))";
    auto r = get("/api/v1/query?query=" + platform::url_encode(query) + "&time=" + at, std::chrono::minutes(2));
    auto j = nlohmann::json::parse(r.body, nullptr, false);
    const std::string check = "series answering a query in the newest recorded hour";
    if (!j.is_object() || j.value("status", "") != "success") {
      std::string error = j.is_object() && j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>()
                                                                                         : "HTTP " + std::to_string(r.status);
      rep.check(check, "> 0", "no answer", false);
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "Prometheus could not answer the query '" + query + "' at " + at + ": " + error);
    } else {
      int64_t series = 0;
      const auto& result = j["data"]["result"];
      if (result.is_array() && !result.empty() && result[0]["value"].is_array() && result[0]["value"].size() == 2 &&
          result[0]["value"][1].is_string())
        series = std::atoll(result[0]["value"][1].get<std::string>().c_str());
      rep.check(check, "> 0", series, series > 0);
    }
  }
  rep.phases["check"] = seconds_since(t);
}

}  // namespace drill_internal

namespace prometheus {

namespace {

class PrometheusDrill : public DriverDrill {
 public:
  drill_internal::PrometheusDrillKeys keys_;
  nlohmann::json keys() const override { return {{"prometheus", keys_.prometheus}}; }
  std::string tools_missing(const DrillDecl&) const override {
    if (!platform::find_program(keys_.prometheus)) return "'" + keys_.prometheus + "' ([drill] prometheus) is not found";
    return {};
  }
  void run(DrillRun& r) const override {
    drill_internal::drill_prometheus(r.decl, keys_, r.box, r.snaps.front(), r.roots.front(), r.rep, r.cancel, r.phase);
  }
};

}  // namespace

std::shared_ptr<const DriverDrill> make_drill(TableReader* dr) {
  auto d = std::make_shared<PrometheusDrill>();
  if (dr) d->keys_.prometheus = dr->string_or("prometheus", d->keys_.prometheus);
  return d;
}

}  // namespace prometheus

}  // namespace cairn::agent
