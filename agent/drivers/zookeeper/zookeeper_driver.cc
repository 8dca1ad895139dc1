#include "agent/drivers/zookeeper/zookeeper_driver.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "agent/drivers/repo_progress.h"
#include "agent/drivers/zookeeper/staging.h"
#include "agent/platform/service.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::zookeeper {

namespace v1 = cairn::v1;
using namespace std::chrono_literals;

namespace {

std::string real_or_same(const std::string& p) {
  char buf[PATH_MAX];
  if (::realpath(p.c_str(), buf)) return buf;
  return p;
}

bool same_dir(const std::string& a, const std::string& b) { return real_or_same(a) == real_or_same(b); }

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::string base_name(const std::string& p) { return p.substr(p.find_last_of('/') + 1); }

// Task ids name directories: keep what is safe in a file name.
std::string plain(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_') ? c : '_';
  if (out.empty()) out = "task";
  return out.substr(0, 64);
}

bool serving_mode(const std::string& mode) { return mode == "leader" || mode == "follower" || mode == "standalone" || mode == "observer"; }

std::optional<uint64_t> json_u64(const nlohmann::json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return std::nullopt;
  const auto& v = j.at(key);
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer() && v.get<int64_t>() >= 0) return static_cast<uint64_t>(v.get<int64_t>());
  if (v.is_string()) return parse_zxid(v.get<std::string>());
  return std::nullopt;
}

v1::ErrorCode code_of(const Error& e) {
  switch (e.code()) {
    case Errc::no_space:
      return v1::ERROR_CODE_NO_SPACE;
    case Errc::interrupted:
      return v1::ERROR_CODE_CANCELLED;
    case Errc::corrupt:
      return v1::ERROR_CODE_REPOSITORY_CORRUPT;
    default:
      return v1::ERROR_CODE_IO_ERROR;
  }
}

}  // namespace

ZooKeeperDriver::ZooKeeperDriver(std::string component, Settings settings)
    : component_(std::move(component)), settings_(std::move(settings)) {}

std::string ZooKeeperDriver::client_address(const ZooConfig* cfg) const {
  if (!settings_.client_address.empty()) return settings_.client_address;
  ZooConfig local;
  if (!cfg) {
    try {
      local = read_zoo_cfg(settings_.config_file);
      cfg = &local;
    } catch (const Error&) {
      return "127.0.0.1:2181";
    }
  }
  std::string host = cfg->client_port_address;
  int port = cfg->client_port;
  if (port == 0) {
    // The reconfig form keeps the client port in this member's server entry.
    try {
      Bytes b = read_file(settings_.data_dir + "/myid", 4096);
      std::string id(b.begin(), b.end());
      while (!id.empty() && std::isspace(static_cast<unsigned char>(id.back()))) id.pop_back();
      auto it = cfg->servers.find(std::stoull(id));
      if (it != cfg->servers.end())
        if (auto c = client_of_server_entry(it->second)) {
          port = c->second;
          if (host.empty()) host = c->first;
        }
    } catch (const std::exception&) {
    }
  }
  if (host.empty() || host == "0.0.0.0") host = "127.0.0.1";
  if (host == "::" || host == "[::]") host = "[::1]";
  if (host.find(':') != std::string::npos && host.front() != '[') host = "[" + host + "]";
  return host + ":" + std::to_string(port ? port : 2181);
}

DriverCaps ZooKeeperDriver::capabilities() const {
  DriverCaps c;
  c.backup = true;
  c.restore = !settings_.service.empty();
  c.needs_service_stop = false;
  c.safety_backup = true;
  c.scope = "cluster";
  c.restore_stops_service = true;
  c.cluster_id = settings_.cluster_id;
  if (c.cluster_id.empty()) {
    try {
      c.cluster_id = derive_cluster_id(read_zoo_cfg(settings_.config_file));
    } catch (const Error&) {
    }
  }
  try {
    Bytes b = read_file(settings_.data_dir + "/myid", 4096);
    std::string id(b.begin(), b.end());
    while (!id.empty() && std::isspace(static_cast<unsigned char>(id.back()))) id.pop_back();
    c.member_id = id;
  } catch (const Error&) {
    c.member_id = "standalone";
  }
  return c;
}

std::vector<std::string> ZooKeeperDriver::config_warnings() const {
  std::vector<std::string> out;
  const std::string who = "component '" + component_ + "': ";
  try {
    checked_config();
  } catch (const Error& e) {
    out.push_back(who + e.what());
  }
  if (!is_dir(settings_.data_dir + "/version-2"))
    out.push_back(who + "'" + settings_.data_dir + "/version-2' does not exist (the server creates it when it starts)");
  if (settings_.service.empty()) out.push_back(who + "no 'service' declared: backups work, restores are refused");
  return out;
}

ZooConfig ZooKeeperDriver::checked_config() const {
  ZooConfig cfg = read_zoo_cfg(settings_.config_file);
  if (cfg.data_dir.empty())
    throw Error(Errc::invalid_input, "'" + settings_.config_file + "' sets no dataDir; the driver backs up '" + settings_.data_dir +
                                         "' only when the server uses it");
  if (!same_dir(cfg.data_dir, settings_.data_dir))
    throw Error(Errc::invalid_input, "the server's dataDir is '" + cfg.data_dir + "' ('" + settings_.config_file +
                                         "') but the component declares data_dir '" + settings_.data_dir +
                                         "'; declare the directory the server uses");
  std::string log_dir = cfg.data_log_dir.empty() ? cfg.data_dir : cfg.data_log_dir;
  if (!same_dir(log_dir, settings_.data_log_dir))
    throw Error(Errc::invalid_input, "the server's dataLogDir is '" + log_dir + "' ('" + settings_.config_file +
                                         "') but the component declares data_log_dir '" + settings_.data_log_dir +
                                         "'; declare the directory the server uses");
  return cfg;
}

std::optional<ServerStatus> ZooKeeperDriver::try_status(std::string* why) const {
  std::string addr = client_address();
  try {
    return parse_srvr(four_letter(addr, "srvr"));
  } catch (const Error& e) {
    if (why) *why = e.what();
    return std::nullopt;
  }
}

bool ZooKeeperDriver::has_own_data() const {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(settings_.data_dir + "/version-2", ec))
    if (e.path().filename().string().rfind("snapshot.", 0) == 0) return true;
  return false;
}

bool ZooKeeperDriver::answers() const {
  try {
    return four_letter(client_address(), "ruok", 2s).rfind("imok", 0) == 0;
  } catch (const Error& e) {
    // A server that refuses 'ruok' still answers.
    return e.code() == Errc::unsupported;
  }
}

std::vector<v1::Reason> ZooKeeperDriver::preflight(const v1::Task& task) const {
  std::vector<v1::Reason> out;
  auto fail = [&](v1::ErrorCode code, const std::string& why) {
    out.push_back(make_reason(code, "component '" + component_ + "': " + why));
  };
  ZooConfig cfg;
  try {
    cfg = checked_config();
  } catch (const Error& e) {
    fail(v1::ERROR_CODE_PREFLIGHT_FAILED, e.what());
    return out;
  }
  if (task.kind() == v1::TASK_KIND_BACKUP) {
    const std::string addr = client_address(&cfg);
    try {
      // srvr is the one word ZooKeeper whitelists by default.
      std::string r = four_letter(addr, "srvr");
      if (r.find("not currently serving") != std::string::npos)
        fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "ZooKeeper at '" + addr + "' is not serving requests (no quorum, or still loading)");
      else
        parse_srvr(r);
    } catch (const Error& e) {
      fail(v1::ERROR_CODE_PREFLIGHT_FAILED, e.code() == Errc::unsupported
                                                ? std::string(e.what())
                                                : "ZooKeeper at '" + addr + "' does not answer: " + e.what() +
                                                      " (is the server running and 'client_address' its client port?)");
      return out;
    }
    if (!is_dir(settings_.data_dir + "/version-2")) {
      fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "'" + settings_.data_dir + "/version-2' does not exist");
      return out;
    }
    // Room for the copy of the live log (what it really holds: it is
    // preallocated with holes) and the small files, where they are staged.
    uint64_t need = 1 << 20;
    try {
      Selection sel = select_files(settings_.data_dir + "/version-2", settings_.data_log_dir + "/version-2");
      if (!sel.logs.empty()) {
        struct stat st {};
        if (::stat(sel.logs.back().c_str(), &st) == 0) need += static_cast<uint64_t>(st.st_blocks) * 512;
      }
    } catch (const Error& e) {
      fail(v1::ERROR_CODE_PREFLIGHT_FAILED, e.what());
      return out;
    }
    struct statvfs vs {};
    if (::statvfs(settings_.data_log_dir.c_str(), &vs) == 0) {
      uint64_t avail = static_cast<uint64_t>(vs.f_bavail) * vs.f_frsize;
      if (avail < need)
        fail(v1::ERROR_CODE_NO_SPACE, "'" + settings_.data_log_dir + "' has " + std::to_string(avail) +
                                          " bytes free; the copy of the live transaction log needs " + std::to_string(need));
    }
  } else if (task.kind() == v1::TASK_KIND_RESTORE) {
    if (!task.options().restore_target().empty())
      fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
           "declares no restore target '" + task.options().restore_target() + "'; a ZooKeeper server is restored in place");
    if (settings_.service.empty())
      fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
           "a restore stops and starts the server: declare 'service' (a systemd unit, or a table "
           "with 'start_command' and 'stop_command')");
    else if (auto p = platform::Service(settings_.service).problem(platform::ServiceUse::stop_start); !p.empty())
      fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "a restore stops and starts the server, but " + p);
    const std::string& step = task.options().restore_step();
    if (!proto::restore_step_from_name(step)) fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "unknown restore step '" + step + "'");
    for (const auto& d : {settings_.data_dir, settings_.data_log_dir})
      if (::access(d.c_str(), W_OK) != 0) fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "cannot write '" + d + "': " + std::strerror(errno));
  }
  return out;
}

void ZooKeeperDriver::snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) {
  report_phase(ctx, v1::PHASE_SNAPSHOT, settings_.data_dir);
  ZooConfig cfg = checked_config();
  std::string why_before;
  auto before = try_status(&why_before);
  // An empty host (a replaced disk, a lost site): no server runs and the
  // data dir holds nothing of one. There is nothing to save before a restore.
  if (!before && purpose.safety && !is_dir(settings_.data_dir + "/version-2")) {
    note(ctx, "the server does not answer (" + why_before + ") and '" + settings_.data_dir +
                  "/version-2' does not exist: nothing to save (an empty host)");
    return;
  }
  if (!before) note(ctx, "the server did not answer 'srvr' (" + why_before + "); its files are backed up as they are");

  StageSpec spec;
  spec.data_dir = settings_.data_dir;
  spec.data_log_dir = same_dir(settings_.data_log_dir, settings_.data_dir) ? settings_.data_dir : settings_.data_log_dir;
  spec.config_file = settings_.config_file;
  spec.dynamic_config_file = cfg.dynamic_config_file;
  spec.task = plain(ctx.task_id) + (purpose.safety ? "-safety" : "");
  spec.raw_when_no_snapshot = purpose.safety;
  for (const auto& d : {spec.data_dir, spec.data_log_dir})
    for (const auto& gone : remove_leftovers(d, ".cairn-staging-"))
      note(ctx, "removed '" + gone + "', left by a backup that did not finish");
  Staged st = stage(spec);
  const std::string data_staging = st.data_staging, log_staging = st.log_staging;
  sink.on_done([data_staging, log_staging] {
    remove_tree(data_staging);
    if (!log_staging.empty()) remove_tree(log_staging);
  });
  auto after = before ? try_status(nullptr) : std::nullopt;

  for (const auto& k : st.selection.skipped)
    note(ctx, "snapshot '" + base_name(k.path) + "' is not taken: it " + k.reason + "; the one before it is");
  if (st.raw) note(ctx, "'" + settings_.data_dir + "/version-2' holds no valid snapshot: every file in it is saved as it is");
  if (st.logs_copied_across_filesystems)
    note(ctx, "the transaction logs are on another filesystem than the staging directory: they were copied, not linked");

  const uint64_t files_zxid = std::max(st.last_zxid, st.selection.snapshot_zxid);
  nlohmann::json md = {
      {"driver", "zookeeper"},
      {"data_dir", settings_.data_dir},
      {"data_log_dir", settings_.data_log_dir},
      {"config_file", settings_.config_file},
      {"snapshot_file", base_name(st.selection.snapshot)},
      {"snapshot_zxid", zxid_hex(st.selection.snapshot_zxid)},
      {"zxid", zxid_hex(files_zxid)},
      {"epoch", files_zxid >> 32},
      {"log_files", nlohmann::json::array()},
      {"server_id", st.myid.empty() ? "standalone" : st.myid},
      {"cluster_id", settings_.cluster_id.empty() ? derive_cluster_id(cfg) : settings_.cluster_id},
      {"files_linked", st.files_linked},
      {"files_copied", st.files_copied},
      {"bytes", st.bytes},
  };
  for (const auto& l : st.selection.logs) md["log_files"].push_back(base_name(l));
  if (st.raw) md["raw"] = true;
  if (st.current_epoch) md["current_epoch"] = *st.current_epoch;
  if (st.accepted_epoch) md["accepted_epoch"] = *st.accepted_epoch;
  if (!st.selection.skipped.empty()) {
    md["skipped_snapshots"] = nlohmann::json::array();
    for (const auto& k : st.selection.skipped) md["skipped_snapshots"].push_back(base_name(k.path) + ": " + k.reason);
  }
  if (before) {
    md["version"] = before->version;
    md["mode"] = before->mode;
    md["server_zxid"] = zxid_hex(before->zxid);
    if (before->has_node_count) md["node_count"] = before->node_count;
    // The count describes the files only when nothing was written while
    // they were gathered and they end where the server stood.
    md["node_count_exact"] = after && after->has_zxid && before->has_zxid && after->zxid == before->zxid && files_zxid == before->zxid;
    try {
      ServerStatus m = parse_mntr(four_letter(client_address(&cfg), "mntr"));
      if (m.ephemerals) md["ephemerals"] = *m.ephemerals;
    } catch (const Error&) {
    }
  } else {
    md["server_answered"] = false;
  }
  sink.set_metadata(md);
  sink.add_path(data_staging, settings_.data_dir + "/" + kDataRootName);
  if (!log_staging.empty()) sink.add_path(log_staging, settings_.data_log_dir + "/" + kLogRootName);
  sink.immutable_links();
}

std::vector<v1::Reason> ZooKeeperDriver::check_snapshot(const repo::Snapshot& snap) const {
  // What snapshot() stores, from whichever member it was taken: the data
  // root, and the log root when that member kept its logs apart.
  int data = 0, logs = 0;
  for (const auto& p : snap.paths) {
    if (base_name(p) == kDataRootName)
      ++data;
    else if (base_name(p) == kLogRootName)
      ++logs;
    else
      return {make_reason(
          v1::ERROR_CODE_UNSUPPORTED_TASK,
          "snapshot '" + snap.id.substr(0, 8) + "' holds '" + p + "', which the zookeeper driver does not store; nothing was changed", p)};
  }
  if (data != 1 || logs > 1)
    return {make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK, "snapshot '" + snap.id.substr(0, 8) + "' does not hold one '" + kDataRootName +
                                                             "' (and at most one '" + kLogRootName +
                                                             "'); it is not a backup of the zookeeper driver")};
  return {};
}

void ZooKeeperDriver::wait_down(TaskContext& ctx) const {
  auto deadline = std::chrono::steady_clock::now() + settings_.service.timeout;
  while (answers()) {
    if (std::chrono::steady_clock::now() > deadline || cancelled(ctx))
      throw Error(Errc::io, "ZooKeeper at '" + client_address() + "' still answers after " + settings_.service.describe() + " stopped it");
    std::this_thread::sleep_for(200ms);
  }
}

// A cluster restore's preflight, before any member is stopped: the data
// step stages the snapshot in data_dir (.cairn-restore-<task>), so it must
// fit there with the reserve the running server needs.
std::vector<v1::Reason> ZooKeeperDriver::restore_preflight(TaskContext& ctx, const RestoreSpec& spec) {
  if (auto p = restore_space_problem(ctx, spec.snapshot_id, settings_.data_dir, {settings_.data_dir + "/version-2"}); !p.empty())
    return {make_reason(v1::ERROR_CODE_NO_SPACE, p, component_)};
  // What the server needs to start, checked before any member stops: its
  // configuration as the driver reads it, and in an ensemble this member's
  // id in '<dataDir>/myid', one of the configuration's server.N (a server
  // without it exits at start with "Invalid config"). The restore does not
  // write myid: it is this host's configuration, not the backup's data.
  std::vector<v1::Reason> out;
  ZooConfig cfg;
  try {
    cfg = checked_config();
  } catch (const Error& e) {
    out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, e.what(), component_));
    return out;
  }
  if (!cfg.servers.empty()) {
    std::string ids;
    for (const auto& [n, entry] : cfg.servers) ids += (ids.empty() ? "" : ", ") + std::to_string(n);
    const std::string myid = settings_.data_dir + "/myid";
    std::string id;
    try {
      Bytes b = read_file(myid, 4096);
      id.assign(b.begin(), b.end());
      while (!id.empty() && std::isspace(static_cast<unsigned char>(id.back()))) id.pop_back();
    } catch (const Error& e) {
      out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED,
                                "'" + myid + "' cannot be read (" + e.what() + "): the server of an ensemble (server." + ids + " in '" +
                                    settings_.config_file +
                                    "') does not start without it. Write this "
                                    "member's id there, as the host's configuration does, and run the restore again",
                                component_));
      return out;
    }
    uint64_t n = 0;
    bool numeric = !id.empty() && id.size() < 20 && std::all_of(id.begin(), id.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (numeric) n = std::stoull(id);
    if (!numeric || !cfg.servers.count(n))
      out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED,
                                "'" + myid + "' says '" + id + "', which is not one of the ensemble's server ids (" + ids + " in '" +
                                    settings_.config_file + "'): the server would not start",
                                component_));
  }
  return out;
}

void ZooKeeperDriver::step_stop(TaskContext& ctx, DriverResult& res) {
  report_phase(ctx, v1::PHASE_STOP_SERVICE, settings_.service.describe());
  // A rollback starts again only a server that ran before the restore.
  if (!res.metadata.contains("was_running")) res.metadata["was_running"] = answers();
  platform::Service svc(settings_.service);
  try {
    svc.stop(ctx.cancel);
  } catch (const Error& e) {
    // A stop command that fails on a server already down is no failure.
    if (answers()) throw;
    note(ctx, std::string("stopping reported an error, and the server does not answer: ") + e.what());
  }
  wait_down(ctx);
  res.metadata["stopped"] = true;
}

void ZooKeeperDriver::step_data(TaskContext& ctx, const RestoreSpec& spec, DriverResult& res) {
  if (answers())
    throw Error(Errc::exists, "ZooKeeper at '" + client_address() +
                                  "' still answers: its data is not replaced under a running server (run the 'stop' step first)");
  report_phase(ctx, v1::PHASE_RESTORE, spec.snapshot_id);
  if (!ctx.repo) throw Error(Errc::invalid_input, "no repository is open for the restore");
  std::string id = repo::resolve_snapshot(*ctx.repo, spec.snapshot_id);
  repo::Snapshot snap = repo::load_snapshot(*ctx.repo, id);
  if (std::find(snap.tags.begin(), snap.tags.end(), "component:" + ctx.component) == snap.tags.end())
    throw Error(Errc::invalid_input, "snapshot '" + id.substr(0, 8) + "' is not a snapshot of component '" + ctx.component + "'");
  if (auto bad = check_snapshot(snap); !bad.empty()) throw Error(Errc::invalid_input, bad.front().detail());
  std::string data_path, log_path;
  for (const auto& p : snap.paths) (base_name(p) == kDataRootName ? data_path : log_path) = p;

  for (const auto& gone : remove_leftovers(settings_.data_dir, ".cairn-restore-"))
    note(ctx, "removed '" + gone + "', left by a restore that did not finish");
  const std::string temp = settings_.data_dir + "/.cairn-restore-" + plain(ctx.task_id);
  if (auto prob = staging_space_problem(settings_.data_dir, snapshot_bytes(snap), {settings_.data_dir + "/version-2"}); !prob.empty())
    throw Error(Errc::no_space, prob);
  struct Cleanup {
    std::string dir;
    ~Cleanup() { remove_tree(dir); }
  } cleanup{temp};
  repo::RestoreOptions ro;
  ro.memory_budget = ctx.memory_budget;
  ro.target = temp;
  ro.cancel = ctx.cancel;
  ro.progress = repo_progress(ctx, v1::PHASE_RESTORE);
  repo::RestoreResult rr = repo::restore(*ctx.repo, id, ro);
  if (!rr.failures.empty()) {
    for (const auto& f : rr.failures)
      res.reasons.push_back(make_reason(v1::ERROR_CODE_REPOSITORY_CORRUPT, "could not restore '" + f.path + "': " + f.reason, f.path));
    throw Error(Errc::corrupt, "the snapshot could not be read whole; the server's data was not changed");
  }
  PlaceSpec ps;
  ps.data_root = temp + data_path;
  ps.log_root = log_path.empty() ? std::string() : temp + log_path;
  ps.data_dir = settings_.data_dir;
  ps.data_log_dir = same_dir(settings_.data_log_dir, settings_.data_dir) ? settings_.data_dir : settings_.data_log_dir;
  ps.stamp = utc_stamp();
  ps.restore_id = ctx.restore_id;
  ps.task_id = ctx.task_id;
  ps.member = component_;
  Placed placed = place_restored(ps);
  res.snapshot_id = id;
  res.manifest_digest = id;
  res.files = placed.files;
  res.bytes = placed.bytes;
  res.metadata["snapshot_zxid"] = zxid_hex(placed.snapshot_zxid);
  res.metadata["zxid"] = zxid_hex(placed.zxid);
  res.metadata["old_data_v2"] = placed.old_data_v2;
  if (!placed.old_log_v2.empty()) res.metadata["old_log_v2"] = placed.old_log_v2;
  if (!placed.old_data_v2.empty())
    note(ctx, "the server's previous data is kept in '" + placed.old_data_v2 + "'" +
                  (placed.old_log_v2.empty() ? "" : " and '" + placed.old_log_v2 + "'"));
}

void ZooKeeperDriver::step_start(TaskContext& ctx, DriverResult& res) {
  report_phase(ctx, v1::PHASE_START_SERVICE, settings_.service.describe());
  platform::Service svc(settings_.service);
  svc.start(ctx.cancel);
  auto deadline = std::chrono::steady_clock::now() + settings_.ready_timeout;
  while (!answers()) {
    if (std::chrono::steady_clock::now() > deadline || cancelled(ctx))
      throw Error(Errc::io, "ZooKeeper at '" + client_address() + "' does not answer " + std::to_string(settings_.ready_timeout.count()) +
                                " s after " + settings_.service.describe() + " started it");
    std::this_thread::sleep_for(250ms);
  }
  res.metadata["started"] = true;
}

std::vector<v1::Reason> ZooKeeperDriver::verify(TaskContext& ctx, const nlohmann::json& recorded) {
  report_phase(ctx, v1::PHASE_VERIFY, client_address());
  std::vector<v1::Reason> out;
  // A server that has just started loads its data and, in an ensemble, waits
  // for an election: give it the ready timeout to serve.
  auto deadline = std::chrono::steady_clock::now() + settings_.ready_timeout;
  std::optional<ServerStatus> st;
  std::string why;
  for (;;) {
    st = try_status(&why);
    if (st && serving_mode(st->mode)) break;
    if (std::chrono::steady_clock::now() > deadline || cancelled(ctx)) {
      out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED,
                                st ? "ZooKeeper at '" + client_address() + "' is in mode '" + st->mode + "', not serving"
                                   : "ZooKeeper at '" + client_address() + "' does not answer 'srvr': " + why));
      return out;
    }
    std::this_thread::sleep_for(500ms);
  }
  if (auto want = json_u64(recorded, "zxid"); want && st->has_zxid && st->zxid < *want)
    out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, "ZooKeeper at '" + client_address() + "' is at zxid " + zxid_hex(st->zxid) +
                                                                ", behind the backup's " + zxid_hex(*want)));
  auto want_nodes = json_u64(recorded, "node_count");
  bool exact = recorded.is_object() && recorded.value("node_count_exact", false);
  if (want_nodes && exact && st->has_node_count) {
    // Ephemeral znodes go when their sessions expire after a restore.
    uint64_t eph = json_u64(recorded, "ephemerals").value_or(0);
    if (st->node_count + eph < *want_nodes)
      out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, "ZooKeeper at '" + client_address() + "' holds " +
                                                                  std::to_string(st->node_count) + " znodes; the backup held " +
                                                                  std::to_string(*want_nodes)));
  }
  return out;
}

void ZooKeeperDriver::step_verify(TaskContext& ctx, DriverResult& res) {
  // What the data step recorded next to the data: the zxid the restored
  // files reach. The znode count is checked by verify() when the runner
  // passes the backup's metadata.
  nlohmann::json state = read_restore_state(settings_.data_dir);
  nlohmann::json recorded = nlohmann::json::object();
  if (state.contains("zxid")) recorded["zxid"] = state["zxid"];
  auto reasons = verify(ctx, recorded);
  if (auto st = try_status(nullptr)) {
    res.metadata["mode"] = st->mode;
    res.metadata["zxid"] = zxid_hex(st->zxid);
    res.metadata["node_count"] = st->node_count;
    res.metadata["version"] = st->version;
  }
  for (auto& r : reasons) res.reasons.push_back(std::move(r));
}

void ZooKeeperDriver::step_rollback(TaskContext& ctx, DriverResult& res) {
  if (answers()) step_stop(ctx, res);
  report_phase(ctx, v1::PHASE_RESTORE, "rollback");
  RolledBack rb =
      rollback(settings_.data_dir, same_dir(settings_.data_log_dir, settings_.data_dir) ? settings_.data_dir : settings_.data_log_dir,
               utc_stamp(), ctx.restore_id);
  if (rb.nothing) {
    res.metadata["rolled_back"] = false;
    note(ctx, "this restore's data step changed nothing here: nothing to roll back");
    return;
  }
  res.metadata["rolled_back"] = true;
  res.metadata["restored_data_set_aside"] = rb.restored_aside;
  res.metadata["put_back"] = rb.old_data_v2;
  note(ctx, "the data the restore replaced is back; the restored data is kept in '" + rb.restored_aside + "'");
}

DriverResult ZooKeeperDriver::restore_commit(TaskContext& ctx, const RestoreSpec& spec) {
  (void)spec;
  DriverResult res;
  res.metadata = {{"step", "commit"}};
  try {
    nlohmann::json state = commit_restore(settings_.data_dir, ctx.restore_id);
    if (state.empty()) {
      res.metadata["committed"] = false;
      note(ctx, "no record of this restore here: nothing to commit");
    } else {
      res.metadata["committed"] = true;
      res.metadata["kept"] = nlohmann::json::array();
      for (const char* k : {"old_data_v2", "old_log_v2"})
        if (!state.value(k, "").empty()) res.metadata["kept"].push_back(state.value(k, ""));
    }
    res.outcome = v1::TASK_OUTCOME_SUCCEEDED;
  } catch (const Error& e) {
    res.reasons.push_back(make_reason(v1::ERROR_CODE_IO_ERROR, "component '" + component_ + "', step 'commit': " + e.what()));
    res.outcome = v1::TASK_OUTCOME_FAILED;
  }
  return res;
}

DriverResult ZooKeeperDriver::restore(TaskContext& ctx, const RestoreSpec& spec) {
  DriverResult res;
  res.metadata = nlohmann::json::object();
  res.metadata["step"] = proto::step_label(spec.step);
  auto fail = [&](v1::ErrorCode code, const std::string& what) {
    res.reasons.push_back(make_reason(code, "component '" + component_ + "', step '" + proto::step_label(spec.step) + "': " + what));
    res.outcome = v1::TASK_OUTCOME_FAILED;
    return res;
  };
  if (!spec.target_name.empty()) return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "declares no restore target '" + spec.target_name + "'");
  if (settings_.service.empty())
    return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "no 'service' declared (a restore stops and starts the server)");
  try {
    switch (spec.step) {
      case v1::RESTORE_STEP_STOP:
      case v1::RESTORE_STEP_HALT:
        step_stop(ctx, res);
        break;
      case v1::RESTORE_STEP_DATA:
        step_data(ctx, spec, res);
        break;
      case v1::RESTORE_STEP_START:
        step_start(ctx, res);
        break;
      case v1::RESTORE_STEP_VERIFY:
        step_verify(ctx, res);
        break;
      case v1::RESTORE_STEP_ROLLBACK: {
        // Back on the data it had, and serving again, when it was serving
        // before the restore and has data of its own: a server that did not
        // run (an empty host) is not started on nothing.
        step_rollback(ctx, res);
        auto was = spec.cluster_options.find("was_running");
        if (was != spec.cluster_options.end() && was->second == "false") {
          res.metadata["started"] = false;
          note(ctx, "the server did not run before this restore: left stopped");
        } else if (!has_own_data()) {
          res.metadata["started"] = false;
          note(ctx, "'" + settings_.data_dir +
                        "/version-2' holds no snapshot of this server's own: left stopped "
                        "rather than started empty");
        } else {
          step_start(ctx, res);
        }
        break;
      }
      case v1::RESTORE_STEP_PREFLIGHT:
      case v1::RESTORE_STEP_COMMIT:
        break;  // the runner calls restore_preflight / restore_commit
      case v1::RESTORE_STEP_ALL: {
        // The space check before the stop: a refusal leaves the server serving.
        if (auto p = restore_space_problem(ctx, spec.snapshot_id, settings_.data_dir, {settings_.data_dir + "/version-2"}); !p.empty())
          return fail(v1::ERROR_CODE_NO_SPACE, p);
        step_stop(ctx, res);
        try {
          step_data(ctx, spec, res);
        } catch (...) {
          // The old data is where it was: start the server on it again.
          try {
            step_start(ctx, res);
          } catch (const Error& e) {
            res.reasons.push_back(make_reason(v1::ERROR_CODE_SERVICE_CONTROL_FAILED,
                                              std::string("the server could not be started again on its old data: ") + e.what()));
          }
          throw;
        }
        try {
          step_start(ctx, res);
        } catch (const Error& e) {
          // Not serving on the restored data: put the old data back.
          res.reasons.push_back(make_reason(v1::ERROR_CODE_SERVICE_CONTROL_FAILED,
                                            "component '" + component_ + "': the server did not start on the restored data: " + e.what()));
          try {
            step_rollback(ctx, res);
            step_start(ctx, res);
            res.reasons.push_back(
                make_reason(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, "the old data was put back and the server started on it"));
          } catch (const Error& e2) {
            res.reasons.push_back(make_reason(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, std::string("rollback failed: ") + e2.what()));
          }
          res.outcome = v1::TASK_OUTCOME_FAILED;
          return res;
        }
        // The runner verifies next, against the backup's metadata.
        break;
      }
      default:  // not a step (protobuf's sentinels): admission refused it already
        throw Error(Errc::unsupported, "unknown restore step");
    }
  } catch (const Error& e) {
    v1::ErrorCode code = code_of(e);
    if (spec.step == v1::RESTORE_STEP_STOP || spec.step == v1::RESTORE_STEP_START) code = v1::ERROR_CODE_SERVICE_CONTROL_FAILED;
    if (e.code() == Errc::not_found && spec.step == v1::RESTORE_STEP_DATA) code = v1::ERROR_CODE_SNAPSHOT_NOT_FOUND;
    return fail(code, e.what());
  }
  res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_FAILED;
  return res;
}

}  // namespace cairn::agent::zookeeper
