#include "agent/drivers/prometheus/prometheus_driver.h"

#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <thread>

#include "agent/drivers/prometheus/tsdb.h"
#include "agent/drivers/repo_progress.h"
#include "agent/failpoint.h"
#include "agent/platform/service.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::prometheus {

namespace fs = std::filesystem;
namespace v1 = cairn::v1;
using namespace std::chrono_literals;

namespace {

// Writing the head as a block takes a while on a large server.
constexpr std::chrono::milliseconds kSnapshotTimeout = 10min;

std::string real_or_empty(const std::string& p) {
  std::error_code ec;
  auto r = fs::canonical(p, ec);
  return ec ? std::string() : r.string();
}

// "data/", "./data" -> "data"
std::string normal_relative(std::string p) {
  while (p.rfind("./", 0) == 0) p = p.substr(2);
  while (!p.empty() && p.back() == '/') p.pop_back();
  return p;
}

std::string mib(uint64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

// Puts a restored configuration file (or directory) in place: a file through
// a temporary name in its own directory and a rename, so the server never
// reads half of it; a directory entry by entry.
void install_config(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  if (fs::is_directory(from, ec) && !fs::is_symlink(from, ec)) {
    fs::create_directories(to, ec);
    for (const auto& e : fs::directory_iterator(from)) install_config(e.path(), to / e.path().filename());
    return;
  }
  fs::path tmp = to;
  tmp += ".cairn-tmp";
  fs::remove(tmp, ec);
  if (fs::is_symlink(from, ec)) {
    fs::copy_symlink(from, tmp);
  } else {
    fs::copy_file(from, tmp, fs::copy_options::overwrite_existing);
    struct stat st {};
    if (::lstat(from.c_str(), &st) == 0) (void)::lchown(tmp.c_str(), st.st_uid, st.st_gid);  // as root only
  }
  fs::rename(tmp, to);
}

}  // namespace

PrometheusDriver::PrometheusDriver(std::string component, Settings settings)
    : component_(std::move(component)), settings_(std::move(settings)), api_(settings_.url) {}

DriverCaps PrometheusDriver::capabilities() const {
  DriverCaps c;
  c.backup = true;
  c.restore = true;
  c.restore_to_alternate = false;
  c.needs_service_stop = false;  // the server's own snapshot is consistent while it runs
  c.safety_backup = true;
  c.scope = "node";
  c.restore_stops_service = true;
  return c;
}

std::vector<std::string> PrometheusDriver::config_warnings() const {
  std::vector<std::string> w;
  std::error_code ec;
  if (!fs::is_directory(settings_.data_dir, ec))
    w.push_back("component '" + component_ + "': data_dir '" + settings_.data_dir + "' does not exist");
  for (const auto& p : settings_.config_files)
    if (!fs::exists(fs::symlink_status(p, ec))) w.push_back("component '" + component_ + "': config file '" + p + "' does not exist");
  if (settings_.service.empty()) w.push_back("component '" + component_ + "': no 'service' declared: backups work, restores are refused");
  return w;
}

std::vector<v1::Reason> PrometheusDriver::snapshot_checks() const {
  std::vector<v1::Reason> out;
  auto refuse = [&](const std::string& detail, v1::ErrorCode code = v1::ERROR_CODE_PREFLIGHT_FAILED) {
    out.push_back(make_reason(code, detail, component_));
  };
  std::string why;
  if (!api_.ready(&why)) {
    refuse("prometheus at '" + settings_.url + "' is not reachable or not ready: " + why);
    return out;  // nothing else can be asked of it
  }
  try {
    if (api_.admin_api() == Api::Admin::off)
      refuse("the admin API of prometheus at '" + settings_.url + "' is off: start the server with " + kAdminFlag +
             " (cairn takes its snapshots through POST /api/v1/admin/tsdb/snapshot; the admin API has no "
             "authentication, so listen on loopback only)");
  } catch (const Error& e) {
    refuse(e.what());
  }

  std::string mine = real_or_empty(settings_.data_dir);
  if (mine.empty()) {
    refuse("data_dir '" + settings_.data_dir + "' does not exist on this host");
    return out;
  }
  try {
    auto flags = api_.flags();
    std::string theirs = flags.value("storage.tsdb.path", "");
    if (theirs.empty()) {
      refuse("prometheus at '" + settings_.url + "' does not report its --storage.tsdb.path");
    } else if (theirs[0] == '/') {
      std::string real = real_or_empty(theirs);
      if (real.empty())
        refuse("prometheus at '" + settings_.url + "' stores its data in '" + theirs +
               "', which does not exist on this host: is 'url' a server on another host?");
      else if (real != mine)
        refuse("prometheus at '" + settings_.url + "' stores its data in '" + theirs + "', not in data_dir '" + settings_.data_dir +
               "': fix 'data_dir' or 'url' of component '" + component_ + "'");
    } else {
      // A path relative to the server's working directory, which the agent
      // cannot see: it must at least be how data_dir ends.
      std::string rel = normal_relative(theirs);
      if (rel.empty() || mine.size() < rel.size() + 1 || mine.compare(mine.size() - rel.size(), rel.size(), rel) != 0 ||
          mine[mine.size() - rel.size() - 1] != '/')
        refuse("prometheus at '" + settings_.url + "' stores its data in '" + theirs +
               "' (relative to its working directory), which is not data_dir '" + settings_.data_dir +
               "': fix 'data_dir', or start the server with an absolute --storage.tsdb.path");
    }
  } catch (const Error& e) {
    refuse(e.what());
  }

  // The snapshot links the persisted blocks (no room needed) and writes the
  // in-memory head as a new block, smaller than the WAL and head chunks it
  // comes from: their size is the bound asked for.
  uint64_t need = tree_bytes(settings_.data_dir + "/wal") + tree_bytes(settings_.data_dir + "/chunks_head");
  struct statvfs sv {};
  if (::statvfs(settings_.data_dir.c_str(), &sv) == 0) {
    uint64_t avail = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
    if (avail < need)
      refuse("not enough free space in data_dir '" + settings_.data_dir + "' for the snapshot: its head block needs up to " + mib(need) +
                 " (the size of wal/ and chunks_head/), " + mib(avail) + " are free",
             v1::ERROR_CODE_NO_SPACE);
  }
  return out;
}

std::vector<v1::Reason> PrometheusDriver::preflight(const v1::Task& task) const {
  if (task.kind() == v1::TASK_KIND_BACKUP) return snapshot_checks();
  std::vector<v1::Reason> out;
  auto refuse = [&](const std::string& detail) { out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, detail, component_)); };
  if (task.kind() != v1::TASK_KIND_RESTORE) {
    refuse("the prometheus driver does backups and restores only");
    return out;
  }
  const auto& o = task.options();
  if (!o.restore_target().empty())
    refuse("component '" + component_ + "' (prometheus) declares no restore targets; it restores in place, not to '" + o.restore_target() +
           "'");
  if (!o.restore_step().empty())
    refuse("component '" + component_ + "' (prometheus) is restored in one task, not in cluster steps ('" + o.restore_step() + "')");
  const auto& sv = settings_.service;
  if (sv.unit.empty() && (sv.start_command.empty() || sv.stop_command.empty()))
    refuse("a restore of component '" + component_ +
           "' stops and starts prometheus: declare its 'service' "
           "(a systemd unit, or start_command and stop_command) in the agent's configuration");
  else if (auto p = platform::Service(sv).problem(platform::ServiceUse::stop_start); !p.empty())
    refuse("a restore of component '" + component_ + "' stops and starts prometheus, but " + p);
  fs::path parent = fs::path(settings_.data_dir).parent_path();
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    refuse("the restore moves data_dir '" + settings_.data_dir + "' aside in '" + parent.string() +
           "', which this agent cannot write: " + std::strerror(errno));
  if (!o.skip_safety_backup())
    for (auto& r : snapshot_checks()) {
      r.set_detail(r.detail() +
                   " (the safety backup before the restore needs a running server; restore with "
                   "--skip-safety-backup to go without it)");
      out.push_back(std::move(r));
    }
  return out;
}

void PrometheusDriver::snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) {
  (void)purpose;
  report_phase(ctx, v1::PHASE_SNAPSHOT, settings_.url);
  std::string name = api_.snapshot(kSnapshotTimeout, ctx.cancel);
  const std::string real = settings_.data_dir + "/snapshots/" + name;
  // Prometheus never removes its snapshots: this one goes once stored (or not).
  auto remove_snapshot = [real] {
    std::error_code ec;
    fs::remove_all(real, ec);
  };
  std::error_code ec;
  if (!fs::is_directory(real, ec))
    throw Error(Errc::io, "prometheus at '" + settings_.url + "' made snapshot '" + name + "', but '" + real +
                              "' does not exist: the server keeps its data elsewhere than data_dir '" + settings_.data_dir +
                              "' (remove that snapshot from the server's data directory)");
  sink.on_done(remove_snapshot);
  try {
    BlockSet blocks = read_blocks(real);
    for (const auto& p : blocks.problems) note(ctx, "snapshot '" + name + "': " + p + " (stored as it is)");
    report_phase(ctx, v1::PHASE_SNAPSHOT, real, 0, blocks.bytes);

    // Stored at <data_dir>, whatever the run's snapshot is named: the next
    // backup finds its parent's entries there and reads no unchanged block.
    sink.add_path(real, settings_.data_dir);
    sink.immutable_links();
    nlohmann::json configs = nlohmann::json::array();
    for (const auto& p : settings_.config_files) {
      if (!fs::exists(fs::symlink_status(p, ec))) {
        sink.add_reason(make_reason(v1::ERROR_CODE_ITEM_SKIPPED, "config file '" + p + "' does not exist; it is not in the snapshot", p));
        continue;
      }
      sink.add_path(p);
      configs.push_back(p);
    }

    std::string version;
    try {
      version = api_.version();
    } catch (const Error& e) {
      version = "unknown";
      note(ctx, std::string("the server's version is not recorded: ") + e.what());
    }
    nlohmann::json meta = blocks.to_json();
    meta["prometheus_version"] = version;
    meta["url"] = settings_.url;
    meta["data_dir"] = settings_.data_dir;
    meta["snapshot_name"] = name;
    meta["config_files"] = configs;
    sink.set_metadata(std::move(meta));
  } catch (...) {
    remove_snapshot();
    throw;
  }
}

std::vector<v1::Reason> PrometheusDriver::check_snapshot(const repo::Snapshot& snap) const {
  std::vector<v1::Reason> out;
  bool has_data = false;
  for (const auto& p : snap.paths) {
    if (p == settings_.data_dir) {
      has_data = true;
    } else if (std::find(settings_.config_files.begin(), settings_.config_files.end(), p) == settings_.config_files.end()) {
      out.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                                "snapshot '" + snap.id.substr(0, 8) + "' holds '" + p + "', which component '" + component_ +
                                    "' does not declare (data_dir or config_files); nothing was changed",
                                p));
    }
  }
  if (!has_data)
    out.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                              "snapshot '" + snap.id.substr(0, 8) + "' holds no '" + settings_.data_dir +
                                  "' (taken of another data directory?); nothing was changed",
                              settings_.data_dir));
  return out;
}

bool PrometheusDriver::wait_ready(const std::atomic<bool>* cancel, std::string* why) const {
  auto deadline = std::chrono::steady_clock::now() + settings_.service.timeout;
  while (true) {
    if (api_.ready(why)) return true;
    if (cancel && cancel->load()) {
      if (why) *why = "cancelled";
      return false;
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(500ms);
  }
}

DriverResult PrometheusDriver::restore(TaskContext& ctx, const RestoreSpec& spec) {
  DriverResult res;
  auto fail = [&](v1::ErrorCode code, const std::string& detail) {
    res.outcome = v1::TASK_OUTCOME_FAILED;
    res.reasons.push_back(make_reason(code, detail, component_));
    return res;
  };
  if (spec.step != v1::RESTORE_STEP_ALL)
    return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + component_ + "' (prometheus) is restored in one task");
  if (!spec.target_name.empty())
    return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + component_ + "' declares no restore target '" + spec.target_name + "'");
  if (settings_.service.empty())
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "component '" + component_ + "' declares no 'service' to stop and start");

  // 1. The snapshot must hold this data_dir: nothing is stopped otherwise.
  std::string id;
  uint64_t need = 0;  // what the snapshot's files hold: staged beside data_dir
  try {
    id = repo::resolve_snapshot(*ctx.repo, spec.snapshot_id);
    auto snap = repo::load_snapshot(*ctx.repo, id);
    snap.id = id;
    need = snapshot_bytes(snap);
    if (auto bad = check_snapshot(snap); !bad.empty()) {
      res.reasons = std::move(bad);
      return res;
    }
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, std::string("cannot read the snapshot: ") + e.what());
  }

  // 2. Everything read out of the repository beside the data dir (the same
  // filesystem, so the swap is a rename) while the server still runs.
  std::error_code ec;
  // What restores killed in this step left (one task runs per component at a time).
  for (const auto& gone : remove_leftovers(fs::path(settings_.data_dir).parent_path().string(),
                                           fs::path(settings_.data_dir).filename().string() + ".cairn-restore-"))
    note(ctx, "removed '" + gone + "', left by an earlier restore that did not end");
  std::string stamp = utc_stamp();
  for (int i = 2; fs::exists(fs::symlink_status(settings_.data_dir + ".cairn-old-" + stamp, ec)); ++i)
    stamp = utc_stamp() + "-" + std::to_string(i);
  const std::string staging = settings_.data_dir + ".cairn-restore-" + stamp;
  const std::string old_dir = settings_.data_dir + ".cairn-old-" + stamp;
  struct StagingGuard {
    std::string path;
    ~StagingGuard() {
      std::error_code ec;
      fs::remove_all(path, ec);
    }
  } guard{staging};
  fs::remove_all(staging, ec);
  if (auto p = staging_space_problem(fs::path(settings_.data_dir).parent_path().string(), need, {settings_.data_dir}); !p.empty())
    return fail(v1::ERROR_CODE_NO_SPACE, p);
  repo::RestoreOptions ro;
  ro.memory_budget = ctx.memory_budget;
  ro.target = staging;
  ro.cancel = ctx.cancel;
  ro.progress = repo_progress(ctx, v1::PHASE_RESTORE);
  repo::RestoreResult rr;
  try {
    rr = repo::restore(*ctx.repo, id, ro);
  } catch (const Error& e) {
    return fail(repository_read_code(e), std::string("reading the snapshot failed, nothing was changed: ") + e.what());
  }
  if (!rr.failures.empty()) {
    for (const auto& f : rr.failures)
      res.reasons.push_back(make_reason(v1::ERROR_CODE_REPOSITORY_CORRUPT, "'" + f.path + "': " + f.reason, f.path));
    return fail(v1::ERROR_CODE_REPOSITORY_CORRUPT,
                std::to_string(rr.failures.size()) + " entries of the snapshot could not be read; nothing was changed");
  }
  const std::string staged_data = staging + settings_.data_dir;
  if (!fs::is_directory(staged_data, ec))
    return fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "the snapshot's '" + settings_.data_dir + "' is not a directory");
  BlockSet blocks = read_blocks(staged_data);
  res.bytes = rr.bytes_restored;
  res.files = rr.files_restored;

  // 3. Stop, swap, configuration back, start. The restore's record
  // (restore_journal.h) is on disk from before the stop until the end: an
  // agent killed in between puts the previous data back at its next start.
  // The TSDB directory and each configuration file the snapshot holds are
  // moved aside (<path>.cairn-old-<stamp>) and the snapshot's put in place.
  platform::Service service(settings_.service);
  InPlaceRestore rec = in_place_restore(ctx, stamp);
  rec.scratch = {staging};
  JournalGuard journal(ctx.journal, std::move(rec));
  try {
    journal.write();
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_IO_ERROR, e.what());
  }
  report_phase(ctx, v1::PHASE_STOP_SERVICE, settings_.service.describe());
  try {
    service.stop(ctx.cancel);
  } catch (const Error& e) {
    return fail(e.code() == Errc::interrupted ? v1::ERROR_CODE_CANCELLED : v1::ERROR_CODE_SERVICE_CONTROL_FAILED,
                std::string("stopping prometheus failed, nothing was changed: ") + e.what());
  }
  failpoint("restore.prometheus.stopped");
  report_phase(ctx, v1::PHASE_RESTORE, settings_.data_dir, rr.bytes_restored, rr.bytes_restored);
  bool had_old = fs::exists(fs::symlink_status(settings_.data_dir, ec));
  std::vector<std::string> configs_in_snapshot;
  for (const auto& p : settings_.config_files) {
    if (fs::exists(fs::symlink_status(staging + p, ec)))
      configs_in_snapshot.push_back(p);
    else
      res.reasons.push_back(
          make_reason(v1::ERROR_CODE_ITEM_SKIPPED, "config file '" + p + "' is not in the snapshot; the one on disk is kept", p));
  }
  // Puts everything moved so far back, for a failure inside this task.
  auto put_back = [&]() {
    std::string left = put_back_moves(journal.record());
    if (!left.empty()) journal.keep();  // the agent's next start tries again
    return left;
  };
  nlohmann::json restored_configs = nlohmann::json::array();
  try {
    // Every move is in the record before the first is made.
    journal.record().state = InPlaceRestore::State::swapping;
    journal.record().moves.push_back({settings_.data_dir, had_old ? old_dir : ""});
    for (const auto& p : configs_in_snapshot)
      journal.record().moves.push_back({p, fs::exists(fs::symlink_status(p, ec)) ? p + ".cairn-old-" + stamp : ""});
    journal.write();
    if (had_old) fs::rename(settings_.data_dir, old_dir);
    fs::rename(staged_data, settings_.data_dir);
    for (size_t i = 0; i < configs_in_snapshot.size(); ++i) {
      const auto& m = journal.record().moves[i + 1];
      if (!m.aside.empty()) fs::rename(m.path, m.aside);
      install_config(staging + m.path, m.path);
      restored_configs.push_back(m.path);
    }
  } catch (const std::exception& e) {
    std::string left = put_back();
    std::string detail = std::string("replacing data_dir '") + settings_.data_dir + "' or its configuration failed: " + e.what() +
                         (left.empty() ? "; the previous data is back" : "; could not put back:" + left);
    try {
      service.start(ctx.cancel);
      detail += " and prometheus was started again";
    } catch (const Error& e2) {
      detail += std::string("; starting prometheus failed: ") + e2.what();
    }
    return fail(v1::ERROR_CODE_IO_ERROR, detail);
  }
  failpoint("restore.prometheus.swapped");

  // A server that does not come up on the restored data is stopped, the
  // previous data and configuration go back, and it is started on them: a
  // restore never leaves prometheus down that was up before it.
  auto roll_back = [&](v1::ErrorCode code, const std::string& why) {
    return fail(code, why + put_back_and_restart(journal, service, "prometheus", settings_.data_dir, ctx.cancel));
  };
  report_phase(ctx, v1::PHASE_START_SERVICE, settings_.service.describe());
  try {
    service.start(ctx.cancel);
  } catch (const Error& e) {
    return roll_back(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, std::string("prometheus did not start on the restored data: ") + e.what());
  }
  failpoint("restore.prometheus.started");
  report_phase(ctx, v1::PHASE_VERIFY, settings_.url);
  std::string why;
  if (!wait_ready(ctx.cancel, &why))
    return roll_back(v1::ERROR_CODE_VERIFY_FAILED, "prometheus did not become ready within " +
                                                       std::to_string(settings_.service.timeout.count() / 1000) +
                                                       " s after the restore: " + why);
  if (had_old) note(ctx, "the previous TSDB directory is kept at '" + old_dir + "' (remove it when no longer needed)");

  // Blocks older than the retention are deleted by the server's next
  // compaction: the restore worked, but the operator must hear of it.
  try {
    std::string ret = api_.retention();
    int64_t ret_ms = parse_duration_ms(ret.substr(0, ret.find(' ')));
    int64_t now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    if (blocks.blocks > 0 && ret_ms > 0 && blocks.min_time < now_ms - ret_ms)
      note(ctx, "the restored data reaches back further than the server's retention (" + ret +
                    "): prometheus deletes the older blocks at its next compaction; raise "
                    "--storage.tsdb.retention.time to keep them");
  } catch (const Error& e) {
    note(ctx, std::string("the server's retention could not be compared with the restored data: ") + e.what());
  }

  res.metadata = blocks.to_json();
  res.metadata["data_dir"] = settings_.data_dir;
  if (had_old) res.metadata["previous_data_dir"] = old_dir;
  res.metadata["config_files"] = restored_configs;
  res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_PARTIAL;
  return res;
}

std::string PrometheusDriver::recover_interrupted_restore(const InPlaceRestore& r) {
  return undo_around_service(r, platform::Service(settings_.service), "prometheus", settings_.data_dir, [] { return false; });
}

std::vector<v1::Reason> PrometheusDriver::verify(TaskContext& ctx, const nlohmann::json& recorded) {
  std::vector<v1::Reason> out;
  report_phase(ctx, v1::PHASE_VERIFY, settings_.url);
  std::string why;
  if (!api_.ready(&why)) {
    out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, "prometheus is not ready: " + why, component_));
    return out;
  }
  if (!recorded.is_object() || recorded.value("blocks", 0) == 0 || !recorded.contains("min_time") || !recorded.contains("max_time") ||
      !recorded["min_time"].is_number_integer() || !recorded["max_time"].is_number_integer())
    return out;  // nothing recorded to look for: health only
  int64_t lo = recorded["min_time"].get<int64_t>(), hi = recorded["max_time"].get<int64_t>();
  try {
    size_t n = api_.series_count(lo, hi - 1);  // a block's maxTime is exclusive
    if (n == 0)
      out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED,
                                "prometheus answers no series for the snapshot's time range (" + std::to_string(lo) + " to " +
                                    std::to_string(hi) +
                                    " ms): the restored blocks are not served (retention "
                                    "shorter than their age?)",
                                component_));
  } catch (const Error& e) {
    out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, std::string("querying the restored range failed: ") + e.what(), component_));
  }
  return out;
}

}  // namespace cairn::agent::prometheus
