// The OpenSearch drill (docs/drills.md): one node started in the drill's
// sandbox on the restored snapshot repository (path.repo), the recorded
// snapshot restored into it and checked against what the backup recorded.
#include "agent/drivers/opensearch/drill.h"

#include <filesystem>
#include <fstream>

#include "agent/config_reader.h"
#include "agent/drill_paths.h"
#include "agent/drill_support.h"
#include "agent/platform/http.h"
#include "agent/platform/process.h"
#include "agent/sandbox/sandbox.h"
#include "common/crypto/crypto.h"
#include "common/repo/snapshot.h"
#include "common/util/encoding.h"
#include "common/util/error.h"

namespace cairn::agent::opensearch {

namespace v1 = cairn::v1;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct Keys {
  std::string opensearch = "/usr/share/opensearch/bin/opensearch";
};

struct Answer {
  long status = 0;
  nlohmann::json body;
};

class Node {
 public:
  Node(std::string url, const std::atomic<bool>* cancel) : url_(std::move(url)), cancel_(cancel) {}
  Answer call(const std::string& method, const std::string& path, const nlohmann::json& body = nullptr,
              std::chrono::milliseconds timeout = 60s) const {
    platform::HttpRequest q;
    q.method = method;
    q.url = url_ + path;
    q.timeout = timeout;
    q.cancel = cancel_;
    q.max_body = 64 << 20;
    if (!body.is_null()) {
      q.body = body.dump();
      q.headers.push_back("Content-Type: application/json");
    }
    auto r = platform::http_request(q);
    Answer a{r.status, nlohmann::json::parse(r.body, nullptr, false)};
    if (a.body.is_discarded()) a.body = r.body.substr(0, 300);
    return a;
  }

 private:
  std::string url_;
  const std::atomic<bool>* cancel_;
};

std::string error_of(const Answer& a) {
  if (a.body.is_object() && a.body.contains("error")) {
    const auto& e = a.body["error"];
    if (e.is_object()) {
      std::string s = e.value("type", "") + ": " + e.value("reason", "");
      if (e.contains("caused_by") && e["caused_by"].is_object()) s += " (" + e["caused_by"].value("reason", "") + ")";
      return s;
    }
    return e.dump();
  }
  return "HTTP " + std::to_string(a.status) + ": " + a.body.dump().substr(0, 300);
}

void drill_opensearch(const DrillDecl& d, const Keys& k, Sandbox& box, const repo::Snapshot& snap, const std::string& restored,
                      DrillReport& rep, const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  const nlohmann::json& rec = snap.component;
  const std::string snapshot_path = rec.value("snapshot_path", std::string());
  const std::string snap_name = rec.contains("snapshot") ? rec["snapshot"].value("name", std::string()) : std::string();
  std::string why;
  auto at = sandboxed_path(restored, snapshot_path, &why);
  if (!at || snap_name.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot records the OpenSearch snapshot repository '" + snapshot_path +
                                               "', which the drill does not use: " + why + "; nothing was started");
    return;
  }
  if (!fs::is_directory(fs::symlink_status(*at))) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot holds no OpenSearch snapshot repository ('" + snapshot_path + "')");
    return;
  }
  auto t = std::chrono::steady_clock::now();
  phase("start");
  // The node's home: config (OPENSEARCH_PATH_CONF), data, logs, all in the sandbox.
  const std::string home = box.dir() + "/opensearch";
  const std::string conf = home + "/config";
  fs::create_directories(conf);
  fs::create_directories(home + "/data");
  fs::create_directories(home + "/logs");
  {
    std::ofstream y(conf + "/opensearch.yml");
    y << "cluster.name: cairn-drill\nnode.name: drill\npath.data: " << nlohmann::json(home + "/data").dump()
      << "\npath.logs: " << nlohmann::json(home + "/logs").dump() << "\npath.repo: [" << nlohmann::json(*at).dump()
      << "]\nnetwork.host: 127.0.0.1\nhttp.port: 9200\ntransport.port: 9300\ndiscovery.type: single-node\n"
         "cluster.routing.allocation.disk.threshold_enabled: false\n";
    // A distribution with the security plugin refuses to start without its
    // certificates: the sandbox's node, on loopback in its own network
    // namespace, runs without it (a setting unknown without the plugin).
    std::error_code ec;
    if (fs::exists(fs::path(k.opensearch).parent_path().parent_path() / "plugins" / "opensearch-security", ec))
      y << "plugins.security.disabled: true\n";
    std::ofstream j(conf + "/jvm.options");
    j << "-Xms" << d.java_heap_mb << "m\n-Xmx" << d.java_heap_mb << "m\n-XX:+UseSerialGC\n-Djava.io.tmpdir=" << box.tmp_dir() << "\n";
    std::ofstream l(conf + "/log4j2.properties");
    l << "status = error\nappender.console.type = Console\nappender.console.name = console\n"
         "appender.console.layout.type = PatternLayout\nappender.console.layout.pattern = [%d{ISO8601}][%-5p][%c{1.}] %m%n\n"
         "rootLogger.level = info\nrootLogger.appenderRef.console.ref = console\n";
  }
  const std::string log = box.dir() + "/opensearch.log";
  pid_t server = box.spawn_server({"/usr/bin/env", "OPENSEARCH_PATH_CONF=" + conf, "ES_PATH_CONF=" + conf,
                                   "OPENSEARCH_TMPDIR=" + box.tmp_dir(), "JAVA_HOME=" + std::string(), k.opensearch},
                                  log);
  Node node("http://127.0.0.1:9200", cancel);
  if (!drill_internal::wait_started(d, box, server, log, "OpenSearch", "OpenSearch node answering", "answering", cancel, rep, t, [&] {
        auto r = node.call("GET", "/_cluster/health", nullptr, 3s);
        if (r.status != 200) return "HTTP " + std::to_string(r.status);
        std::string st = r.body.value("status", "");
        return st == "green" || st == "yellow" ? std::string() : "health " + st;
      }))
    return;

  // The restored repository, read-only, and the recorded snapshot restored
  // from it (indices only; one node: no replicas).
  t = std::chrono::steady_clock::now();
  phase("check");
  auto reg = node.call("PUT", "/_snapshot/cairn-drill", {{"type", "fs"}, {"settings", {{"location", *at}, {"readonly", true}}}}, 120s);
  if (reg.status >= 400) {
    rep.check("restored snapshot repository registered", true, false, false);
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the restored snapshot repository could not be registered: " + error_of(reg));
    return;
  }
  const nlohmann::json recorded = rec.value("indices", nlohmann::json::object());
  std::string names;
  for (const auto& [n, _] : recorded.items()) names += (names.empty() ? "" : ",") + n;
  if (names.empty()) names = "*";
  auto rs = node.call("POST", "/_snapshot/cairn-drill/" + snap_name + "/_restore?wait_for_completion=true",
                      {{"indices", names},
                       {"include_global_state", false},
                       {"include_aliases", true},
                       {"index_settings", {{"index.number_of_replicas", 0}}}},
                      std::chrono::seconds(d.deadline_seconds));
  int failed = rs.body.is_object() && rs.body.contains("snapshot") ? rs.body["snapshot"]["shards"].value("failed", 0) : -1;
  if (rs.status >= 400 || failed != 0) {
    rep.check("snapshot '" + snap_name + "' restored", "every shard",
              failed < 0 ? std::string("error") : std::to_string(failed) + " failed", false);
    // The restore's answer counts failed shards; why one failed (a blob
    // missing from the repository, named) is in its allocation's account.
    std::string detail = rs.status >= 400 ? error_of(rs) : std::to_string(failed) + " shards failed";
    try {
      auto ex = node.call("GET", "/_cluster/allocation/explain", nullptr, 60s);
      if (ex.status == 200 && ex.body.is_object()) {
        std::string idx = ex.body.value("index", ""), why_shard;
        if (ex.body.contains("unassigned_info") && ex.body["unassigned_info"].is_object())
          why_shard = ex.body["unassigned_info"].value("details", "");
        if (!why_shard.empty())
          detail += "; index '" + idx + "' shard " + std::to_string(ex.body.value("shard", -1)) + ": " + why_shard.substr(0, 3000);
      }
    } catch (const Error&) {
    }
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "restoring snapshot '" + snap_name + "' from the restored repository failed: " + detail);
    return;
  }
  auto h = node.call("GET", "/_cluster/health?wait_for_status=green&timeout=" + std::to_string(d.start_timeout_seconds) + "s", nullptr,
                     std::chrono::seconds(d.start_timeout_seconds + 30));
  rep.check("restored indices green", "green", h.body.is_object() ? h.body.value("status", "") : "no answer",
            h.body.is_object() && h.body.value("status", "") == "green");
  (void)node.call("POST", "/_refresh?expand_wildcards=all", nullptr, 120s);
  for (const auto& [n, want] : recorded.items()) {
    auto c = node.call("GET", "/" + n + "/_count?expand_wildcards=all");
    int64_t docs = c.status == 200 && c.body.is_object() ? c.body.value("count", int64_t(-1)) : -1;
    int64_t wd = want.value("docs", int64_t(0));
    rep.check("documents in '" + n + "'", wd, docs, docs >= wd);
    if (want.contains("mapping")) {
      auto m = node.call("GET", "/" + n + "/_mapping");
      std::string dig = m.status == 200 && m.body.contains(n) ? to_hex(crypto::sha256(as_bytes(m.body[n].dump()))).substr(0, 16) : "none";
      rep.check("mapping of '" + n + "'", want["mapping"].get<std::string>(), dig, dig == want["mapping"].get<std::string>());
    }
    auto s = node.call("POST", "/" + n + "/_search?expand_wildcards=all", {{"size", 1}, {"track_total_hits", true}});
    bool answers = s.status == 200 && s.body.contains("hits");
    rep.check("a search over '" + n + "' answers", "HTTP 200", "HTTP " + std::to_string(s.status), answers);
  }
  for (const auto& so : rec.value("saved_object_indices", nlohmann::json::array())) {
    const std::string n = so.get<std::string>();
    if (!recorded.contains(n)) continue;
    auto c = node.call("GET", "/" + n + "/_count");
    int64_t found = c.status == 200 ? c.body.value("count", int64_t(-1)) : -1;
    rep.check("saved objects in '" + n + "'", recorded[n].value("docs", int64_t(0)), found, found >= recorded[n].value("docs", int64_t(0)));
  }
  rep.phases["check"] = drill_internal::seconds_since(t);
}

class OpenSearchDrill : public DriverDrill {
 public:
  Keys keys_;
  nlohmann::json keys() const override { return {{"opensearch", keys_.opensearch}}; }
  std::string tools_missing(const DrillDecl&) const override {
    if (!platform::find_program(keys_.opensearch)) return "'" + keys_.opensearch + "' ([drill] opensearch) is not found";
    return {};
  }
  uint64_t disk_needed(const std::vector<repo::Snapshot>& snaps) const override {
    // The repository restored, and the indices restored from it beside.
    return DriverDrill::disk_needed(snaps) + (uint64_t(256) << 20);
  }
  void run(DrillRun& r) const override {
    drill_opensearch(r.decl, keys_, r.box, r.snaps.front(), r.roots.front(), r.rep, r.cancel, r.phase);
  }
};

}  // namespace

std::shared_ptr<const DriverDrill> make_drill(TableReader* dr) {
  auto d = std::make_shared<OpenSearchDrill>();
  if (dr) d->keys_.opensearch = dr->string_or("opensearch", d->keys_.opensearch);
  return d;
}

}  // namespace cairn::agent::opensearch
