#include "agent/drivers/opensearch/opensearch_driver.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "agent/drivers/opensearch/internal.h"
#include "agent/drivers/repo_progress.h"
#include "agent/failpoint.h"
#include "common/crypto/crypto.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::opensearch {

namespace fs = std::filesystem;
namespace v1 = cairn::v1;
using namespace std::chrono_literals;
using namespace detail;

namespace detail {

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Whether s matches the glob pat ("*" any run).
bool glob_match(const std::string& pat, const std::string& s) {
  size_t p = 0, i = 0, star = std::string::npos, mark = 0;
  while (i < s.size()) {
    if (p < pat.size() && pat[p] == '*') {
      star = p++;
      mark = i;
    } else if (p < pat.size() && pat[p] == s[i]) {
      ++p;
      ++i;
    } else if (star != std::string::npos) {
      p = star + 1;
      i = ++mark;
    } else {
      return false;
    }
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

bool matches(const std::vector<std::string>& patterns, const std::string& name) {
  bool in = false;
  for (const auto& p : patterns) {
    if (!p.empty() && p[0] == '-') {
      if (glob_match(p.substr(1), name)) in = false;
    } else if (glob_match(p, name)) {
      // As the server expands a wildcard: a dot-index only by a pattern that starts with '.'.
      if (name[0] != '.' || p[0] == '.') in = true;
    }
  }
  return in;
}

std::vector<std::vector<std::string>> chunks(const std::vector<std::string>& names) {
  std::vector<std::vector<std::string>> out;
  for (size_t i = 0; i < names.size(); i += kNamesPerRequest)
    out.emplace_back(names.begin() + i, names.begin() + std::min(names.size(), i + kNamesPerRequest));
  return out;
}

int64_t as_int(const nlohmann::json& v) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_string()) try {
      return std::stoll(v.get<std::string>());
    } catch (...) {
    }
  return -1;
}

}  // namespace detail

namespace {

constexpr std::chrono::milliseconds kSnapshotTimeout = 6h;

// Hard-links every file of src into dst (made here), directories made anew,
// symbolic links copied: the tree as it is now, whatever the server writes or
// deletes in src meanwhile. Returns the bytes and files linked.
std::pair<uint64_t, uint64_t> link_tree(const fs::path& src, const fs::path& dst) {
  uint64_t bytes = 0, files = 0;
  fs::create_directories(dst);
  for (auto it = fs::recursive_directory_iterator(src); it != fs::recursive_directory_iterator(); ++it) {
    const fs::path rel = it->path().lexically_relative(src);
    const fs::path to = dst / rel;
    auto st = it->symlink_status();
    if (fs::is_symlink(st)) {
      fs::copy_symlink(it->path(), to);
    } else if (fs::is_directory(st)) {
      fs::create_directory(to);
    } else if (fs::is_regular_file(st)) {
      if (::link(it->path().c_str(), to.c_str()) != 0) {
        const int err = errno;
        throw Error(Errc::io, "cannot hard-link '" + it->path().string() + "' into '" + dst.string() + "': " + std::strerror(err) +
                                  (err == EXDEV ? std::string(" (snapshot_path must not be a mount point itself: make it a directory "
                                                              "below the shared mount, so the per-run tree beside it is on the same "
                                                              "filesystem)")
                                                : std::string(" (the agent's user must be allowed to link the server's files and to "
                                                              "create directories beside snapshot_path)")));
      }
      std::error_code ec;
      bytes += fs::file_size(it->path(), ec);
      ++files;
    }
  }
  return {bytes, files};
}

std::string mapping_digest(const nlohmann::json& mapping) {
  std::string s = mapping.dump();  // keys sorted: the same mapping, the same text
  auto h = crypto::sha256(as_bytes(s));
  return to_hex(h).substr(0, 16);
}

}  // namespace
OpenSearchDriver::OpenSearchDriver(std::string component, Settings settings)
    : component_(std::move(component)), settings_(std::move(settings)), api_(settings_) {}

DriverCaps OpenSearchDriver::capabilities() const {
  DriverCaps c;
  c.backup = true;
  c.restore = true;
  c.needs_service_stop = false;  // the server's snapshot is consistent while it runs
  c.safety_backup = true;
  c.scope = "node";  // one agent per cluster does the API calls
  c.restore_stops_service = false;
  c.preflight_whole_restore = true;
  return c;
}

std::vector<std::string> OpenSearchDriver::config_warnings() const {
  std::vector<std::string> w;
  std::error_code ec;
  if (!fs::is_directory(settings_.snapshot_path, ec))
    w.push_back("component '" + component_ + "': snapshot_path '" + settings_.snapshot_path + "' does not exist");
  if (auto p = api_.credentials_problem(); !p.empty()) w.push_back("component '" + component_ + "': " + p);
  return w;
}

std::vector<v1::Reason> OpenSearchDriver::backup_checks() const {
  std::vector<v1::Reason> out;
  auto refuse = [&](const std::string& detail) { out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, detail, component_)); };
  if (auto p = api_.credentials_problem(); !p.empty()) {
    refuse(p);
    return out;
  }
  ClusterInfo ci;
  try {
    ci = cluster_info(api_);
  } catch (const Error& e) {
    refuse(std::string("the cluster at '") + settings_.url + "' does not answer usably: " + e.what());
    return out;
  }
  if (ci.health == "red")
    refuse("cluster '" + ci.name + "' at '" + settings_.url + "' is red (a primary shard is unassigned): its snapshot would be partial");
  const std::string repo = "/_snapshot/" + settings_.snapshot_repository;
  try {
    auto r = api_.call("GET", repo);
    if (r.status == 404) {
      // Registered by the agent: a filesystem repository at snapshot_path,
      // verified by the server on every node as it is registered.
      auto put = api_.call("PUT", repo + "?verify=false",
                           {{"type", "fs"}, {"settings", {{"location", settings_.snapshot_path}, {"compress", false}}}}, 60s);
      if (put.status >= 400) {
        refuse("registering snapshot repository '" + settings_.snapshot_repository + "' at snapshot_path '" + settings_.snapshot_path +
               "' failed: " + Api::reason(put) +
               " (snapshot_path must be one directory shared by every node of the cluster (NFS), at or below a directory listed "
               "in path.repo of every node)");
        return out;
      }
    } else if (r.status >= 400) {
      refuse("GET '" + repo + "' answered " + std::to_string(r.status) + ": " + Api::reason(r));
      return out;
    } else {
      const auto& d =
          r.body.is_object() && r.body.contains(settings_.snapshot_repository) ? r.body[settings_.snapshot_repository] : nlohmann::json();
      std::string type = d.is_object() ? d.value("type", "") : "";
      std::string loc = d.is_object() && d.contains("settings") ? d["settings"].value("location", "") : "";
      if (type != "fs" || (loc != settings_.snapshot_path && loc != settings_.snapshot_path + "/")) {
        refuse("snapshot repository '" + settings_.snapshot_repository + "' is registered as type '" + type + "' at '" + loc +
               "', not as type 'fs' at snapshot_path '" + settings_.snapshot_path + "': fix 'snapshot_repository' or 'snapshot_path'");
        return out;
      }
    }
    auto v = api_.call("POST", repo + "/_verify", nullptr, 120s);
    if (v.status >= 400)
      refuse("the cluster could not verify snapshot repository '" + settings_.snapshot_repository + "' at '" + settings_.snapshot_path +
             "': " + Api::reason(v) +
             ". Every node of the cluster writes the snapshot: snapshot_path must be one directory shared by every node "
             "(NFS), listed in each node's path.repo, and the agent stores it from one host that mounts it");
    std::error_code ec;
    if (out.empty() && !fs::is_directory(settings_.snapshot_path, ec))
      refuse("snapshot_path '" + settings_.snapshot_path + "' (where the cluster writes its snapshots) does not exist on this host: " +
             "the agent stores it from here, so it must run on a host that mounts the shared path");
  } catch (const Error& e) {
    refuse(e.what());
  }
  return out;
}

std::vector<v1::Reason> OpenSearchDriver::preflight(const v1::Task& task) const {
  if (task.kind() == v1::TASK_KIND_BACKUP) return backup_checks();
  std::vector<v1::Reason> out;
  auto refuse = [&](const std::string& detail) { out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, detail, component_)); };
  if (task.kind() != v1::TASK_KIND_RESTORE) {
    refuse("the opensearch driver does backups and restores only");
    return out;
  }
  const auto& o = task.options();
  if (!o.restore_target().empty())
    refuse("component '" + component_ + "' (opensearch) declares no restore targets; it restores in place, not to '" + o.restore_target() +
           "'");
  if (!o.restore_step().empty())
    refuse("component '" + component_ + "' (opensearch) is restored in one task, not in cluster steps ('" + o.restore_step() + "')");
  if (auto p = api_.credentials_problem(); !p.empty()) refuse(p);
  fs::path parent = fs::path(settings_.snapshot_path).parent_path();
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    refuse("the restore puts the stored repository back beside snapshot_path '" + settings_.snapshot_path + "' in '" + parent.string() +
           "', which this agent cannot write: " + std::strerror(errno));
  if (!o.skip_safety_backup())
    for (auto& r : backup_checks()) {
      r.set_detail(r.detail() +
                   " (the safety backup before the restore needs the cluster's snapshot; restore with "
                   "--skip-safety-backup to go without it)");
      out.push_back(std::move(r));
    }
  return out;
}

nlohmann::json OpenSearchDriver::index_stats(bool refresh) const {
  if (refresh) (void)api_.call("POST", "/_refresh?expand_wildcards=all&ignore_unavailable=true", nullptr, 120s);
  auto rows =
      api_.ok("GET", "/_cat/indices?format=json&bytes=b&expand_wildcards=all&h=index,uuid,health,status,pri,rep,docs.count", nullptr, 60s);
  nlohmann::json out = nlohmann::json::object();
  if (!rows.is_array()) return out;
  for (const auto& r : rows) {
    if (!r.is_object() || !r.contains("index") || !r["index"].is_string()) continue;
    out[r["index"].get<std::string>()] = {{"uuid", r.value("uuid", "")},
                                          {"health", r.value("health", "")},
                                          {"status", r.value("status", "")},
                                          {"primaries", as_int(r.value("pri", nlohmann::json()))},
                                          {"replicas", as_int(r.value("rep", nlohmann::json()))},
                                          {"docs", as_int(r.value("docs.count", nlohmann::json()))}};
  }
  // _cat counts Lucene documents (a nested object is one more): the
  // documents a user indexed are counted by a search, per index at once.
  auto agg =
      api_.call("POST", "/_search?expand_wildcards=open,hidden&ignore_unavailable=true&allow_no_indices=true",
                {{"size", 0}, {"track_total_hits", false}, {"aggs", {{"i", {{"terms", {{"field", "_index"}, {"size", 65535}}}}}}}}, 120s);
  if (agg.status == 200 && agg.body.contains("aggregations")) {
    std::map<std::string, int64_t> n;
    for (const auto& b : agg.body["aggregations"]["i"].value("buckets", nlohmann::json::array()))
      n[b.value("key", "")] = b.value("doc_count", int64_t(0));
    for (auto& [name, e] : out.items())
      if (e.value("status", "") == "open") e["docs"] = n.count(name) ? n[name] : 0;
  }
  return out;
}

void OpenSearchDriver::snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) {
  report_phase(ctx, v1::PHASE_SNAPSHOT, settings_.url);
  ClusterInfo ci = cluster_info(api_);
  if (ci.health == "red")
    throw Error(Errc::unavailable, "cluster '" + ci.name + "' is red (a primary shard is unassigned): no snapshot is taken");
  const std::string repo = "/_snapshot/" + settings_.snapshot_repository;

  // What the snapshot takes: the configured patterns and the saved objects of
  // Kibana / OpenSearch Dashboards by name (OpenSearch has no feature states).
  std::vector<std::string> indices = settings_.indices;
  nlohmann::json before = index_stats(true);
  std::vector<std::string> saved_objects;
  for (const auto& [name, _] : before.items())
    if (name.rfind(".kibana", 0) == 0 || name.rfind(".opensearch_dashboards", 0) == 0) saved_objects.push_back(name);
  for (const auto& n : saved_objects)
    if (!matches(settings_.indices, n)) indices.push_back(n);

  std::string name = "cairn-" + lower(utc_stamp());
  for (int i = 2; api_.call("GET", repo + "/" + name).status == 200; ++i) name = "cairn-" + lower(utc_stamp()) + "-" + std::to_string(i);
  nlohmann::json body = {{"indices", join(indices)},
                         {"include_global_state", settings_.include_global_state},
                         {"ignore_unavailable", true},
                         {"partial", false},
                         {"metadata", {{"taken_by", "cairn"}, {"task", ctx.task_id}, {"safety", purpose.safety}}}};
  auto r = api_.call("PUT", repo + "/" + name + "?wait_for_completion=true", body, kSnapshotTimeout, ctx.cancel);
  if (r.status >= 400) throw Error(Errc::io, "the snapshot '" + name + "' of cluster '" + ci.name + "' failed: " + Api::reason(r));
  const auto& s = r.body.value("snapshot", nlohmann::json::object());
  const std::string state = s.value("state", "");
  if (state != "SUCCESS") {
    std::string failed;
    if (s.contains("failures") && s["failures"].is_array())
      for (const auto& f : s["failures"])
        failed += " '" + f.value("index", std::string("?")) + "' shard " + std::to_string(f.value("shard_id", -1)) + ": " +
                  f.value("reason", std::string()) + ";";
    (void)api_.call("DELETE", repo + "/" + name, nullptr, 120s);
    throw Error(Errc::io, "the snapshot '" + name + "' of cluster '" + ci.name + "' ended " + state +
                              (failed.empty() ? std::string() : ", failed shards:" + failed) + " (deleted again; nothing stored)");
  }
  failpoint("backup.opensearch.snapshotted");

  // The repository as it is now, hard links in a per-run tree beside it,
  // stored at snapshot_path: the write-once blobs of earlier snapshots are
  // found unchanged in the parent and read no more.
  const fs::path sp(settings_.snapshot_path);
  for (const auto& gone : remove_leftovers(sp.parent_path().string(), sp.filename().string() + ".cairn-backup-"))
    note(ctx, "removed '" + gone + "', left by an earlier backup that did not end");
  const std::string staging = settings_.snapshot_path + ".cairn-backup-" + utc_stamp();
  std::pair<uint64_t, uint64_t> linked;
  try {
    linked = link_tree(sp, staging);
  } catch (...) {
    remove_tree(staging);
    throw;
  }
  sink.on_done([staging] { remove_tree(staging); });
  // The snapshots older than this one are in earlier backups (or in none
  // that succeeded, and then not needed): deleted through the API so the
  // repository does not grow. Failing that is a note, not a failure.
  auto note_fn = ctx.note;
  sink.on_done([this, repo, name, note_fn] {
    try {
      auto list = api_.ok("GET", repo + "/cairn-*", nullptr, 60s);
      if (!list.contains("snapshots") || !list["snapshots"].is_array()) return;
      for (const auto& s : list["snapshots"]) {
        std::string n = s.value("snapshot", "");
        if (n.rfind("cairn-", 0) != 0 || n >= name) continue;  // names sort by time: only older ones
        auto d = api_.call("DELETE", repo + "/" + n, nullptr, 600s);
        if (d.status >= 400 && d.status != 404 && note_fn)
          note_fn("deleting the older snapshot '" + n + "' failed: " + Api::reason(d) + " (it stays in the repository)");
      }
    } catch (const std::exception& e) {
      if (note_fn) note_fn(std::string("the older snapshots were not deleted: ") + e.what());
    }
  });
  report_phase(ctx, v1::PHASE_SNAPSHOT, staging, 0, linked.first);
  sink.add_path(staging, settings_.snapshot_path);
  sink.immutable_links();

  // Metadata: identity, the snapshot, and per index what a restore checks.
  nlohmann::json after = index_stats(false);
  nlohmann::json per_index = nlohmann::json::object();
  std::vector<std::string> snap_indices;
  if (s.contains("indices") && s["indices"].is_array())
    for (const auto& i : s["indices"])
      if (i.is_string()) snap_indices.push_back(i.get<std::string>());
  std::sort(snap_indices.begin(), snap_indices.end());
  nlohmann::json aliases = nlohmann::json::object();
  try {
    auto a = api_.ok("GET", "/_alias?expand_wildcards=all", nullptr, 60s);
    for (const auto& [idx, v] : a.items())
      if (v.contains("aliases") && v["aliases"].is_object() && !v["aliases"].empty())
        for (const auto& [al, _] : v["aliases"].items()) aliases[idx].push_back(al);
  } catch (const Error& e) {
    note(ctx, std::string("the aliases are not recorded: ") + e.what());
  }
  const bool small = snap_indices.size() <= 200;  // metadata stays < 64 KiB
  for (const auto& n : snap_indices) {
    nlohmann::json e = after.contains(n) ? after[n] : nlohmann::json::object();
    // A document indexed while the snapshot ran may or may not be in it:
    // the lower count is what a restore must at least bring back.
    if (before.contains(n) && e.contains("docs")) e["docs"] = std::min(before[n].value("docs", int64_t(0)), e["docs"].get<int64_t>());
    e.erase("status");
    if (small) {
      if (aliases.contains(n)) e["aliases"] = aliases[n];
      try {
        auto m = api_.ok("GET", "/" + n + "/_mapping", nullptr, 30s);
        if (m.contains(n)) e["mapping"] = mapping_digest(m[n]);
      } catch (const Error&) {
      }
    }
    per_index[n] = std::move(e);
  }
  std::vector<std::string> templates;
  try {
    auto t = api_.call("GET", "/_index_template", nullptr, 30s);
    if (t.status == 200 && t.body.contains("index_templates"))
      for (const auto& x : t.body["index_templates"]) templates.push_back(x.value("name", ""));
  } catch (const Error&) {
  }
  nlohmann::json meta = {
      {"cluster_name", ci.name},
      {"cluster_uuid", ci.uuid},
      {"version", {{"number", ci.version}, {"distribution", ci.distribution}}},
      {"url", settings_.url},
      {"snapshot_repository", settings_.snapshot_repository},
      {"snapshot_path", settings_.snapshot_path},
      {"snapshot", {{"name", name}, {"uuid", s.value("uuid", "")}, {"state", state}}},
      {"include_global_state", settings_.include_global_state},
      {"saved_object_indices", saved_objects},
      {"indices", per_index},
      {"index_templates", templates},
      {"nodes", ci.nodes},
  };
  sink.set_metadata(std::move(meta));
}

std::vector<v1::Reason> OpenSearchDriver::check_snapshot(const repo::Snapshot& snap) const {
  std::vector<v1::Reason> out;
  bool has = false;
  for (const auto& p : snap.paths) {
    if (p == settings_.snapshot_path)
      has = true;
    else
      out.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                                "snapshot '" + snap.id.substr(0, 8) + "' holds '" + p + "', which component '" + component_ +
                                    "' does not declare (snapshot_path); nothing was changed",
                                p));
  }
  if (!has || !snap.component.is_object() || !snap.component.contains("snapshot"))
    out.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                              "snapshot '" + snap.id.substr(0, 8) + "' holds no OpenSearch snapshot repository at '" +
                                  settings_.snapshot_path + "' (taken of another snapshot_path?); nothing was changed",
                              settings_.snapshot_path));
  return out;
}

std::vector<v1::Reason> OpenSearchDriver::verify(TaskContext& ctx, const nlohmann::json& recorded) {
  std::vector<v1::Reason> out;
  report_phase(ctx, v1::PHASE_VERIFY, settings_.url);
  try {
    ClusterInfo ci = cluster_info(api_);
    if (ci.health == "red") out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, "cluster '" + ci.name + "' is red", component_));
    if (!recorded.is_object() || !recorded.contains("indices") || !recorded["indices"].is_object()) return out;
    std::vector<std::string> names;
    for (const auto& [n, _] : recorded["indices"].items()) names.push_back(n);
    for (auto& r : check_counts(recorded["indices"], names)) out.push_back(std::move(r));
  } catch (const Error& e) {
    out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, e.what(), component_));
  }
  return out;
}

}  // namespace cairn::agent::opensearch
