#include "agent/drivers/kafka/kafka_driver.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

#include "agent/drivers/repo_progress.h"
#include "agent/failpoint.h"
#include "agent/platform/service.h"
#include "agent/restore_record.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::kafka {

namespace fs = std::filesystem;
namespace v1 = cairn::v1;
using namespace std::chrono_literals;

namespace {

std::string mib(uint64_t bytes) { return std::to_string((bytes + (1 << 20) - 1) >> 20) + " MiB"; }

dev_t device_of(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? st.st_dev : dev_t(-1);
}

// The size of the last segment of every partition: what an online backup
// copies instead of linking (an upper bound of the room it needs).
uint64_t active_segment_bytes(const std::string& log_dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& part : fs::directory_iterator(log_dir, ec)) {
    if (!part.is_directory(ec) || !is_partition_dir_name(part.path().filename().string())) continue;
    std::string last;
    uint64_t size = 0;
    for (const auto& f : fs::directory_iterator(part.path(), ec)) {
      std::string n = f.path().filename().string();
      if (n.size() == 24 && n.compare(20, 4, ".log") == 0 && n > last) {
        last = n;
        size = f.file_size(ec);
      }
    }
    total += size;
  }
  return total;
}

// A place in [0, 1) of its own for each broker, spread out whatever the ids
// (the golden ratio's fractions): where its backup starts reading partitions.
double walk_start_of(const std::string& node_id) {
  uint64_t n = 0;
  for (char c : node_id) n = n * 131 + uint8_t(c);
  double x = double(n % 1000003) * 0.6180339887498949;
  return x - std::floor(x);
}

// The staging directory of one task: <staging_dir>/<task>; one per log dir below it.
std::string task_staging(const Settings& s, const std::string& task) {
  std::string t;
  for (char c : task) t += (std::isalnum(uint8_t(c)) || c == '-' || c == '_') ? c : '_';
  return s.staging_dir + "/" + (t.empty() ? "task" : t);
}

// This broker's record of a restore that swaps its log dirs (the one format
// of a member's record, agent/restore_record.h; its payload: the stamp and
// the swaps, [log dir, where its previous contents went]).
std::string record_path(const Settings& s) { return s.staging_dir + "/restore-state.json"; }

// The record's payload with its restore as "restore"; an empty object when
// there is none or it cannot be read (nothing is acted on then).
nlohmann::json read_swaps(const Settings& s) {
  try {
    auto rec = read_step_record(record_path(s));
    if (!rec) return nlohmann::json::object();
    nlohmann::json j = rec->payload;
    j["restore"] = rec->restore_id;
    return j;
  } catch (const Error&) {
    return nlohmann::json::object();
  }
}

// Removes what an earlier task left in the staging directory (one task runs
// per component at a time: anything there is stale).
void remove_leftovers(const Settings& s, TaskContext& ctx) {
  std::error_code ec;
  if (!fs::is_directory(s.staging_dir, ec)) return;
  for (const auto& e : fs::directory_iterator(s.staging_dir, ec)) {
    if (e.path().filename() == "restore-state.json") continue;
    remove_tree(e.path().string());
    note(ctx, "removed '" + e.path().string() + "', left by an earlier backup or restore that did not end");
  }
}

// Removes a restore's staging directory when the step ends, whatever happened.
struct TreeGuard {
  std::string path;
  ~TreeGuard() { remove_tree(path); }
};

// How long verify asks again for partitions a restarted broker does not serve yet.
constexpr std::chrono::seconds kVerifySettle{30};

// A broker that does not answer this long after its start is started again.
constexpr std::chrono::seconds kStartAgainAfter{30};

// Compact per-partition positions for the metadata (which must stay under
// 64 KiB): "topic-0": [log_start, log_end, high_watermark].
constexpr size_t kMaxPartitionsRecorded = 1200;

}  // namespace

KafkaDriver::KafkaDriver(std::string component, Settings settings)
    : component_(std::move(component)), settings_(std::move(settings)), client_(settings_) {}

DriverCaps KafkaDriver::capabilities() const {
  DriverCaps c;
  c.backup = true;
  c.restore = true;
  c.needs_service_stop = false;  // online is the default; offline stops the broker itself
  c.safety_backup = true;
  // Each broker's data is its own (one snapshot per broker), but a restore of
  // several brokers of one cluster goes through the controller's steps.
  c.scope = "member";
  c.modes = {"online", "offline"};
  c.restore_stops_service = true;
  try {
    MetaProperties m = identity();
    c.cluster_id = m.cluster_id;
    c.member_id = m.node_id;
  } catch (const Error&) {
    // not readable now: preflight says so when a task comes
  }
  return c;
}

std::vector<std::string> KafkaDriver::config_warnings() const {
  std::vector<std::string> w;
  std::error_code ec;
  for (const auto& d : settings_.log_dirs) {
    if (!fs::is_directory(d, ec))
      w.push_back("component '" + component_ + "': log dir '" + d + "' does not exist");
    else if (!fs::exists(d + "/meta.properties", ec))
      w.push_back("component '" + component_ + "': log dir '" + d + "' holds no meta.properties (the broker never ran on it?)");
  }
  if (settings_.bootstrap.empty())
    w.push_back("component '" + component_ +
                "': no 'bootstrap' declared: offline backups and the checks after a restore "
                "cannot ask the broker");
  if (settings_.service.empty())
    w.push_back("component '" + component_ +
                "': no 'service' declared: online backups work; offline backups and "
                "restores are refused");
  return w;
}

MetaProperties KafkaDriver::identity() const {
  std::optional<MetaProperties> first;
  std::string first_dir;
  for (const auto& d : settings_.log_dirs) {
    auto m = read_meta_properties(d);
    if (!m)
      throw Error(Errc::not_found, "log dir '" + d + "' holds no meta.properties: not a Kafka log dir, or the broker never started on it");
    if (m->cluster_id.empty()) throw Error(Errc::corrupt, "'" + d + "/meta.properties' names no cluster.id");
    if (!first) {
      first = m;
      first_dir = d;
    } else if (m->cluster_id != first->cluster_id || m->node_id != first->node_id) {
      throw Error(Errc::corrupt, "log dirs '" + first_dir + "' and '" + d + "' belong to different brokers (cluster.id '" +
                                     first->cluster_id + "' node " + first->node_id + " vs '" + m->cluster_id + "' node " + m->node_id +
                                     ")");
    }
  }
  return *first;
}

std::string KafkaDriver::kafka_version() const {
  std::vector<std::string> dirs;
  if (!settings_.libs_dir.empty()) dirs.push_back(settings_.libs_dir);
  dirs.insert(dirs.end(), {"/opt/kafka/libs", "/usr/share/kafka/libs", "/usr/lib/kafka/libs"});
  std::error_code ec;
  for (const auto& d : dirs) {
    for (const auto& e : fs::directory_iterator(d, ec)) {
      // kafka_2.13-3.9.1.jar (the broker), not kafka-clients-*.jar
      std::string n = e.path().filename().string();
      if (n.rfind("kafka_2.", 0) != 0 || n.size() < 10 || n.compare(n.size() - 4, 4, ".jar") != 0) continue;
      if (n.find("-sources") != std::string::npos || n.find("-test") != std::string::npos) continue;
      size_t dash = n.find('-');
      if (dash != std::string::npos) return n.substr(dash + 1, n.size() - 4 - dash - 1);
    }
  }
  return "unknown";
}

bool KafkaDriver::answers() const {
  if (settings_.bootstrap.empty()) return false;
  try {
    client_.describe(3s);
    return true;
  } catch (const Error&) {
    return false;
  }
}

std::vector<v1::Reason> KafkaDriver::backup_checks(bool offline) const {
  std::vector<v1::Reason> out;
  broker_error_.clear();
  auto refuse = [&](const std::string& why, v1::ErrorCode code = v1::ERROR_CODE_PREFLIGHT_FAILED) {
    out.push_back(make_reason(code, "component '" + component_ + "': " + why, component_));
  };
  MetaProperties meta;
  try {
    meta = identity();
  } catch (const Error& e) {
    refuse(e.what());
    return out;
  }
  // The staging directory: outside the log dirs, on their filesystem.
  std::error_code ec;
  fs::path staging_parent = fs::path(settings_.staging_dir).parent_path();
  if (!fs::is_directory(staging_parent, ec)) {
    refuse("the parent of staging_dir '" + settings_.staging_dir + "' does not exist");
    return out;
  }
  if (::access(staging_parent.c_str(), W_OK | X_OK) != 0 && !fs::is_directory(settings_.staging_dir, ec))
    refuse("staging_dir '" + settings_.staging_dir + "' cannot be created: " + std::strerror(errno));
  dev_t sdev = device_of(fs::is_directory(settings_.staging_dir, ec) ? settings_.staging_dir : staging_parent.string());
  uint64_t copies = 0;
  for (const auto& d : settings_.log_dirs) {
    if (device_of(d) != sdev)
      refuse("log dir '" + d + "' is on another filesystem than staging_dir '" + settings_.staging_dir +
             "': segments are hard-linked there; set 'staging_dir' to a directory on the log dir's filesystem, outside it");
    if (!offline) copies += active_segment_bytes(d);
  }
  struct statvfs sv {};
  if (copies && ::statvfs(staging_parent.c_str(), &sv) == 0) {
    uint64_t avail = uint64_t(sv.f_bavail) * sv.f_frsize;
    if (avail < copies + (copies >> 3))
      refuse("not enough free space for the copies of the active segments: up to " + mib(copies) + " are copied, " + mib(avail) +
                 " are free on the log dirs' filesystem",
             v1::ERROR_CODE_NO_SPACE);
  }
  if (offline) {
    const auto& sv2 = settings_.service;
    if (sv2.unit.empty() && (sv2.start_command.empty() || sv2.stop_command.empty()))
      refuse(
          "an offline backup stops and starts the broker: declare its 'service' (a systemd unit, or start_command "
          "and stop_command) in the agent's configuration");
    else if (auto p = platform::Service(sv2).problem(platform::ServiceUse::stop_start); !p.empty())
      refuse("an offline backup stops and starts the broker, but " + p);
    if (settings_.bootstrap.empty())
      refuse("an offline backup waits until the broker is back in the ISR of its partitions: declare 'bootstrap'");
  }
  if (!settings_.bootstrap.empty()) {
    try {
      ClusterView v = client_.describe(10s);
      if (std::to_string(v.answered_by) != meta.node_id)
        refuse("the broker at '" + settings_.bootstrap + "' is node " + std::to_string(v.answered_by) +
               ", but the log dirs' meta.properties say node " + meta.node_id + ": 'bootstrap' or 'log_dirs' names another broker");
      else if (!v.cluster_id.empty() && v.cluster_id != meta.cluster_id)
        refuse("the broker at '" + settings_.bootstrap + "' belongs to cluster '" + v.cluster_id +
               "', but the log dirs' meta.properties say '" + meta.cluster_id + "': the log dirs are not the ones it uses");
    } catch (const Error& e) {
      if (offline) refuse(std::string("the broker is not reachable: ") + e.what());
      // online: the files are read either way; a broker that is down is backed
      // up as it lies, and the snapshot says why it could not be asked
      broker_error_ = e.what();
    }
  }
  return out;
}

std::vector<v1::Reason> KafkaDriver::preflight(const v1::Task& task) const {
  if (task.kind() == v1::TASK_KIND_BACKUP) return backup_checks(task.options().mode() == "offline");
  std::vector<v1::Reason> out;
  auto refuse = [&](const std::string& why) {
    out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, "component '" + component_ + "': " + why, component_));
  };
  if (task.kind() != v1::TASK_KIND_RESTORE) {
    refuse("the kafka driver does backups and restores only");
    return out;
  }
  const auto& o = task.options();
  if (!o.restore_target().empty()) refuse("kafka restores in place, not to a target ('" + o.restore_target() + "')");
  const auto& sv = settings_.service;
  if (sv.unit.empty() && (sv.start_command.empty() || sv.stop_command.empty()))
    refuse(
        "a restore stops and starts the broker: declare its 'service' (a systemd unit, or start_command and "
        "stop_command) in the agent's configuration");
  else if (auto p = platform::Service(sv).problem(platform::ServiceUse::stop_start); !p.empty())
    refuse("a restore stops and starts the broker, but " + p);
  for (const auto& d : settings_.log_dirs) {
    fs::path parent = fs::path(d).parent_path();
    if (::access(parent.c_str(), W_OK | X_OK) != 0)
      refuse("the restore moves log dir '" + d + "' aside in '" + parent.string() +
             "', which this agent cannot write: " + std::strerror(errno));
  }
  auto step = proto::restore_step_from_name(o.restore_step());
  bool takes_safety = !o.skip_safety_backup() &&
                      (!step || *step == v1::RESTORE_STEP_ALL || *step == v1::RESTORE_STEP_PREFLIGHT || *step == v1::RESTORE_STEP_STOP);
  if (takes_safety) {
    std::error_code ec;
    bool any = false;
    for (const auto& d : settings_.log_dirs) any |= fs::exists(d + "/meta.properties", ec);
    if (any)
      for (auto& r : backup_checks(false)) {
        r.set_detail(r.detail() + " (for the safety backup before the restore; restore with --skip-safety-backup to go without it)");
        out.push_back(std::move(r));
      }
  }
  return out;
}

void KafkaDriver::snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) {
  const bool offline = !purpose.safety && ctx.mode == "offline";
  std::error_code ec;
  // A safety backup of log dirs that hold nothing yet has nothing to save.
  if (purpose.safety) {
    bool any = false;
    for (const auto& d : settings_.log_dirs) any |= fs::exists(d + "/meta.properties", ec);
    if (!any) return;
  }
  MetaProperties meta = identity();
  remove_leftovers(settings_, ctx);
  mkdir_p(settings_.staging_dir, 0700);
  const std::string root = task_staging(settings_, ctx.task_id);
  mkdir_p(root, 0700);
  auto remove_staging = [root] { remove_tree(root); };
  sink.on_done(remove_staging);

  std::string version = kafka_version();
  if (offline) {
    report_phase(ctx, v1::PHASE_STOP_SERVICE, settings_.service.describe());
    stop_broker(ctx);
    // Started again once the snapshot is stored (or failed), and waited for.
    sink.after_store([this, &ctx, node = meta.node_id]() -> std::vector<v1::Reason> {
      try {
        report_phase(ctx, v1::PHASE_START_SERVICE, settings_.service.describe());
        start_broker(ctx, node);
        return {};
      } catch (const Error& e) {
        return {make_reason(v1::ERROR_CODE_SERVICE_CONTROL_FAILED,
                            std::string("the snapshot is complete, but the broker did not come back after the offline backup: ") + e.what(),
                            component_)};
      }
    });
  }

  report_phase(ctx, v1::PHASE_SNAPSHOT, settings_.log_dirs.front());
  nlohmann::json dirs = nlohmann::json::array();
  nlohmann::json partitions = nlohmann::json::object();
  uint64_t linked = 0, copied = 0, bytes = 0, recorded = 0, total_partitions = 0;
  for (size_t i = 0; i < settings_.log_dirs.size(); ++i) {
    const std::string& d = settings_.log_dirs[i];
    StageSpec spec;
    spec.log_dir = d;
    spec.staging = root + "/" + std::to_string(i);
    spec.offline = offline;
    Staged st = stage(spec);
    linked += st.files_linked;
    copied += st.files_copied;
    bytes += st.bytes;
    for (const auto& n : st.notes) note(ctx, n);
    for (const auto& s : st.skipped_dirs)
      note(ctx, "'" + d + "/" + s + "' is not a topic-partition directory: left out (a broker refuses to start with it)");
    if (st.meta && (st.meta->cluster_id != meta.cluster_id || st.meta->node_id != meta.node_id))
      throw Error(Errc::corrupt, "log dir '" + d + "' changed its identity while it was read");
    for (const auto& [name, p] : st.partitions) {
      ++total_partitions;
      if (recorded < kMaxPartitionsRecorded) {
        partitions[name] = {p.log_start, p.log_end, p.high_watermark};
        ++recorded;
      }
    }
    dirs.push_back({{"path", d}, {"partitions", st.partitions.size()}, {"bytes", st.bytes}});
    // Stored at the log dir's own path: the next backup finds its parent's
    // entries there and reads no unchanged (linked) segment again.
    sink.add_path(spec.staging, d);
  }
  if (!settings_.config_file.empty()) {
    if (fs::exists(fs::symlink_status(settings_.config_file, ec)))
      sink.add_path(settings_.config_file);
    else
      sink.add_reason(make_reason(v1::ERROR_CODE_ITEM_SKIPPED,
                                  "config file '" + settings_.config_file + "' does not exist; it is not in the snapshot",
                                  settings_.config_file));
  }
  sink.immutable_links();
  sink.shared_with_replicas(walk_start_of(meta.node_id));

  nlohmann::json m;
  m["cluster_id"] = meta.cluster_id;
  m["node_id"] = meta.node_id;
  m["kafka_version"] = version;
  m["mode"] = offline ? "offline" : "online";
  if (auto it = meta.props.find("node.id"); it != meta.props.end())
    m["metadata_mode"] = "kraft";
  else
    m["metadata_mode"] = "zookeeper";
  // How the controller groups a drill (controller/driver_metadata.h): the
  // brokers of one cluster together, the ensemble of a ZooKeeper-mode
  // cluster started beside them.
  m["drill_group"] = meta.cluster_id;
  if (m["metadata_mode"] == "zookeeper")
    m["drill_beside"] = {{"driver", "zookeeper"}, {"why", "a Kafka broker in ZooKeeper mode: its topics' metadata lives in ZooKeeper"}};
  m["log_dirs"] = dirs;
  // Where the snapshot holds the broker's configuration: a drill reads its
  // roles and voters there (docs/drills.md § Kafka).
  if (!settings_.config_file.empty() && fs::exists(fs::symlink_status(settings_.config_file, ec))) m["config_file"] = settings_.config_file;
  m["files_linked"] = linked;
  m["files_copied"] = copied;
  m["bytes"] = bytes;
  m["partition_count"] = total_partitions;
  m["partitions_format"] = "[log_start, log_end, high_watermark]";
  m["partitions"] = partitions;
  if (recorded < total_partitions) m["partitions_truncated"] = total_partitions - recorded;
  if (!offline && !purpose.safety && !broker_error_.empty()) {
    // Not a failure (the log dirs are whole), but the connection a restore's
    // checks and an offline backup need does not work: say so now, not then.
    m["broker_unreachable"] = broker_error_;
    note(ctx, "the broker at '" + settings_.bootstrap + "' could not be asked (" + broker_error_ +
                  "); its log dirs were read as they lie. Restores and offline backups need this connection: check "
                  "'bootstrap' and the security settings");
  }
  sink.set_metadata(std::move(m));
}

std::vector<v1::Reason> KafkaDriver::check_snapshot(const repo::Snapshot& snap) const {
  std::vector<v1::Reason> out;
  std::set<std::string> declared(settings_.log_dirs.begin(), settings_.log_dirs.end());
  std::set<std::string> seen;
  for (const auto& p : snap.paths) {
    if (declared.count(p)) {
      seen.insert(p);
    } else if (p != settings_.config_file) {
      out.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                                "snapshot '" + snap.id.substr(0, 8) + "' holds '" + p + "', which component '" + component_ +
                                    "' does not declare (log_dirs, config_file); nothing was changed",
                                p));
    }
  }
  for (const auto& d : settings_.log_dirs)
    if (!seen.count(d))
      out.push_back(make_reason(
          v1::ERROR_CODE_UNSUPPORTED_TASK,
          "snapshot '" + snap.id.substr(0, 8) + "' holds no log dir '" + d + "' (taken of other log dirs?); nothing was changed", d));
  return out;
}

int KafkaDriver::stop_wave() const {
  if (settings_.config_file.empty()) return 0;
  try {
    Bytes b = read_file(settings_.config_file, 1 << 20);
    auto props = parse_properties(std::string(b.begin(), b.end()));
    auto it = props.find("process.roles");
    if (it != props.end() && it->second.find("controller") != std::string::npos) return 1;
  } catch (const Error&) {
  }
  return 0;
}

std::string KafkaDriver::stop_broker(TaskContext& ctx) const {
  platform::Service svc(settings_.service);
  std::string escalated;
  const auto& d = settings_.service;
  const auto began = std::chrono::steady_clock::now();
  bool killed = false;
  try {
    auto out = svc.stop(ctx.cancel);
    if (out.killed) {
      killed = true;
      escalated = out.detail + " (kill_after_seconds of the component's 'service')";
      note(ctx, escalated);
    }
  } catch (const Error& e) {
    if (answers()) throw;  // a stop that fails on a broker already down is no failure
    note(ctx, std::string("stopping the broker failed, but it does not answer anyway: ") + e.what());
  }
  // A stop command may return before the broker is down (it only signalled
  // it): the broker still answering after kill_after is killed all the same.
  auto deadline = began + std::max(d.timeout, d.kill_after + std::chrono::milliseconds(30'000));
  while (answers()) {
    auto now = std::chrono::steady_clock::now();
    if (!killed && d.kill_after.count() > 0 && svc.can_kill() && now - began >= d.kill_after) {
      svc.kill(ctx.cancel);
      killed = true;
      escalated = "the broker still answered " + std::to_string(d.kill_after.count() / 1000) +
                  " s after it was asked to stop: killed (SIGKILL; kill_after_seconds of the component's 'service')";
      note(ctx, escalated);
      continue;
    }
    if (now > deadline || cancelled(ctx))
      throw Error(Errc::io, "the broker at '" + settings_.bootstrap + "' still answers after " + settings_.service.describe() +
                                " stopped it" + (killed ? " and it was killed" : ""));
    std::this_thread::sleep_for(200ms);
  }
  return escalated;
}

void KafkaDriver::wait_in_isr(TaskContext& ctx, const std::string& node_id, const std::function<void()>& start_again) const {
  if (settings_.bootstrap.empty()) return;
  auto deadline = std::chrono::steady_clock::now() + settings_.ready_timeout;
  auto last_answer = std::chrono::steady_clock::now();
  std::string why = "it did not answer";
  int32_t me = std::atoi(node_id.c_str());
  while (true) {
    // A broker that exits while it starts (in ZooKeeper mode, its last
    // session's registration not yet expired: "node already exists") is
    // started again, as systemd's Restart=on-failure would.
    if (start_again && std::chrono::steady_clock::now() - last_answer > kStartAgainAfter) {
      note(ctx,
           "the broker has not answered for " + std::to_string(kStartAgainAfter.count()) + " s since it was started: starting it again");
      start_again();
      last_answer = std::chrono::steady_clock::now();
    }
    try {
      ClusterView v = client_.describe(5s);
      last_answer = std::chrono::steady_clock::now();
      if (v.answered_by != me) {
        why = "the broker at '" + settings_.bootstrap + "' answers as node " + std::to_string(v.answered_by) + ", not " + node_id;
      } else {
        std::vector<std::string> missing;
        for (const auto& p : v.partitions) {
          if (std::find(p.replicas.begin(), p.replicas.end(), me) == p.replicas.end()) continue;
          if (std::find(p.isr.begin(), p.isr.end(), me) == p.isr.end() || p.leader < 0)
            missing.push_back(p.topic + "-" + std::to_string(p.partition));
        }
        if (missing.empty()) return;
        why = std::to_string(missing.size()) + " partition(s) without it in their ISR, e.g. '" + missing.front() + "'";
      }
    } catch (const Error& e) {
      why = e.what();
    }
    if (cancelled(ctx)) throw Error(Errc::interrupted, "cancelled while waiting for the broker");
    if (std::chrono::steady_clock::now() > deadline)
      throw Error(Errc::io, "the broker is not back in the ISR of its partitions after " + std::to_string(settings_.ready_timeout.count()) +
                                " s: " + why);
    std::this_thread::sleep_for(500ms);
  }
}

void KafkaDriver::start_broker(TaskContext& ctx, const std::string& node_id) const {
  platform::Service svc(settings_.service);
  svc.start(ctx.cancel);
  wait_in_isr(ctx, node_id, [&] { svc.start(ctx.cancel); });
}

// Reads the snapshot into the staging directory (the log dirs' filesystem)
// after checking it is this broker's; nothing on the broker changes here.
std::optional<KafkaDriver::Prepared> KafkaDriver::prepare(TaskContext& ctx, const RestoreSpec& spec, DriverResult& res) const {
  auto fail = [&](v1::ErrorCode code, const std::string& detail) {
    res.outcome = v1::TASK_OUTCOME_FAILED;
    res.reasons.push_back(make_reason(code, detail, component_));
    return std::nullopt;
  };
  Prepared p;
  repo::Snapshot snap;
  try {
    p.snapshot_id = repo::resolve_snapshot(*ctx.repo, spec.snapshot_id);
    snap = repo::load_snapshot(*ctx.repo, p.snapshot_id);
    snap.id = p.snapshot_id;
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, std::string("cannot read the snapshot: ") + e.what());
  }
  if (auto bad = check_snapshot(snap); !bad.empty()) {
    res.reasons = std::move(bad);
    return std::nullopt;
  }
  const nlohmann::json& rec = snap.component;
  p.cluster_id = rec.is_object() ? rec.value("cluster_id", "") : "";
  p.node_id = rec.is_object() ? rec.value("node_id", "") : "";
  std::optional<MetaProperties> here;
  for (const auto& d : settings_.log_dirs) {
    try {
      if (auto m = read_meta_properties(d)) {
        here = m;
        break;
      }
    } catch (const Error&) {
      // a damaged meta.properties is what a restore replaces
    }
  }
  if (here && !spec.force_identity) {
    if (!p.cluster_id.empty() && here->cluster_id != p.cluster_id)
      return fail(v1::ERROR_CODE_PREFLIGHT_FAILED,
                  "the snapshot is of Kafka cluster '" + p.cluster_id + "', but this broker's log dirs belong to cluster '" +
                      here->cluster_id +
                      "': the broker would refuse to start (InconsistentClusterIdException), or "
                      "join the wrong cluster; nothing was changed (restore with --force-identity to replace them anyway)");
    if (!p.node_id.empty() && here->node_id != p.node_id)
      return fail(v1::ERROR_CODE_PREFLIGHT_FAILED,
                  "the snapshot is of broker " + p.node_id + ", but this is broker " + here->node_id +
                      ": nothing was changed (restore each broker from its own snapshot, or with --force-identity)");
  }
  if (p.node_id.empty() && here) p.node_id = here->node_id;

  mkdir_p(settings_.staging_dir, 0700);
  p.stamp = utc_stamp();
  std::error_code ec;
  for (int i = 2; fs::exists(fs::symlink_status(settings_.log_dirs.front() + ".cairn-old-" + p.stamp, ec)); ++i)
    p.stamp = utc_stamp() + "-" + std::to_string(i);
  p.staging = settings_.staging_dir + "/restore-" + p.stamp;
  remove_tree(p.staging);
  // A full disk under the log dirs would stop this broker and every other
  // writer there: the staged copy must fit with room to spare.
  if (auto prob = staging_space_problem(settings_.staging_dir, snapshot_bytes(snap), settings_.log_dirs); !prob.empty())
    return fail(v1::ERROR_CODE_NO_SPACE, prob);
  repo::RestoreOptions ro;
  ro.memory_budget = ctx.memory_budget;
  ro.target = p.staging;
  ro.cancel = ctx.cancel;
  ro.progress = repo_progress(ctx, v1::PHASE_RESTORE);
  repo::RestoreResult rr;
  try {
    rr = repo::restore(*ctx.repo, p.snapshot_id, ro);
  } catch (const Error& e) {
    remove_tree(p.staging);
    return fail(repository_read_code(e), std::string("reading the snapshot failed, nothing was changed: ") + e.what());
  }
  if (!rr.failures.empty()) {
    remove_tree(p.staging);
    for (const auto& f : rr.failures)
      res.reasons.push_back(make_reason(v1::ERROR_CODE_REPOSITORY_CORRUPT, "'" + f.path + "': " + f.reason, f.path));
    return fail(v1::ERROR_CODE_REPOSITORY_CORRUPT,
                std::to_string(rr.failures.size()) + " entries of the snapshot could not be read; nothing was changed");
  }
  for (const auto& d : settings_.log_dirs)
    if (!fs::is_directory(p.staging + d, ec)) {
      remove_tree(p.staging);
      return fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "the snapshot's '" + d + "' is not a directory; nothing was changed");
    }
  res.bytes = rr.bytes_restored;
  res.files = rr.files_restored;
  return p;
}

// Swaps every log dir for the prepared one; on failure, what moved is moved
// back and the error thrown. Records the swap for a rollback of the same restore.
void KafkaDriver::swap_all(TaskContext& ctx, const Prepared& p, std::vector<std::pair<std::string, std::string>>& swapped) const {
  // Every swap is in the record before the first is made (a rollback step
  // undoes only those that happened: swap_back), so an agent killed between
  // two log dirs leaves a record that puts the first back too.
  nlohmann::json planned = nlohmann::json::array();
  for (const auto& d : settings_.log_dirs) {
    struct stat st {};
    planned.push_back({d, ::lstat(d.c_str(), &st) == 0 ? d + ".cairn-old-" + p.stamp : std::string()});
  }
  StepRecord rec;
  rec.restore_id = ctx.restore_id;
  rec.task_id = ctx.task_id;
  rec.member = component_;
  rec.payload = {{"stamp", p.stamp}, {"swaps", planned}};
  write_step_record(record_path(settings_), rec);
  for (const auto& d : settings_.log_dirs) {
    try {
      swapped.emplace_back(d, swap_in(p.staging + d, d, p.stamp));
    } catch (const Error&) {
      undo_swaps(ctx, swapped, p.stamp);
      ::unlink(record_path(settings_).c_str());
      throw;
    }
  }
}

std::string KafkaDriver::undo_swaps(TaskContext& ctx, std::vector<std::pair<std::string, std::string>>& swapped,
                                    const std::string& stamp) const {
  std::string problems;
  for (auto it = swapped.rbegin(); it != swapped.rend(); ++it) {
    try {
      std::string aside = swap_back(it->first, it->second, stamp);
      if (!aside.empty()) note(ctx, "the restored log dir that did not work is kept at '" + aside + "'");
    } catch (const Error& e) {
      problems += std::string("; ") + e.what();
    }
  }
  swapped.clear();
  return problems;
}

DriverResult KafkaDriver::restore_commit(TaskContext& ctx, const RestoreSpec& spec) {
  (void)spec;
  DriverResult res;
  res.metadata = {{"step", "commit"}, {"committed", false}};
  const std::string path = record_path(settings_);
  nlohmann::json state = read_swaps(settings_);
  if (state.is_object() && !ctx.restore_id.empty() && state.value("restore", "") == ctx.restore_id) {
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      res.reasons.push_back(make_reason(v1::ERROR_CODE_IO_ERROR, "removing the restore's record '" + path + "': " + std::strerror(errno)));
      res.outcome = v1::TASK_OUTCOME_FAILED;
      return res;
    }
    res.metadata["committed"] = true;
    nlohmann::json kept = nlohmann::json::array();
    if (state.contains("swaps") && state["swaps"].is_array())
      for (const auto& s : state["swaps"])
        if (s.is_array() && s.size() == 2 && s[1].is_string() && !s[1].get<std::string>().empty()) kept.push_back(s[1]);
    res.metadata["kept"] = kept;
  } else {
    note(ctx, "no record of this restore here: nothing to commit");
  }
  res.outcome = v1::TASK_OUTCOME_SUCCEEDED;
  return res;
}

// A cluster restore's preflight, before any broker is stopped: the data
// step stages this broker's snapshot under staging_dir, so it must fit there.
std::vector<v1::Reason> KafkaDriver::restore_preflight(TaskContext& ctx, const RestoreSpec& spec) {
  if (auto p = restore_space_problem(ctx, spec.snapshot_id, settings_.staging_dir, settings_.log_dirs); !p.empty())
    return {make_reason(v1::ERROR_CODE_NO_SPACE, p, component_)};
  return {};
}

DriverResult KafkaDriver::restore(TaskContext& ctx, const RestoreSpec& spec) {
  DriverResult res;
  auto fail = [&](v1::ErrorCode code, const std::string& detail) {
    res.outcome = v1::TASK_OUTCOME_FAILED;
    res.reasons.push_back(make_reason(code, detail, component_));
    return res;
  };
  auto done = [&] {
    res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_PARTIAL;
    return res;
  };
  if (!spec.target_name.empty())
    return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + component_ + "' declares no restore target '" + spec.target_name + "'");
  if (settings_.service.empty())
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "component '" + component_ + "' declares no 'service' to stop and start");

  switch (spec.step) {
    case v1::RESTORE_STEP_STOP:
    case v1::RESTORE_STEP_HALT:
      report_phase(ctx, v1::PHASE_STOP_SERVICE, settings_.service.describe());
      try {
        if (auto esc = stop_broker(ctx); !esc.empty()) res.metadata = {{"escalated", esc}};
      } catch (const Error& e) {
        return fail(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, std::string("stopping the broker failed: ") + e.what());
      }
      return done();
    case v1::RESTORE_STEP_START: {
      report_phase(ctx, v1::PHASE_START_SERVICE, settings_.service.describe());
      std::string node;
      try {
        node = identity().node_id;
        start_broker(ctx, node);
      } catch (const Error& e) {
        return fail(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, std::string("the broker did not come up: ") + e.what());
      }
      return done();
    }
    case v1::RESTORE_STEP_DATA: {
      if (answers())
        return fail(v1::ERROR_CODE_PREFLIGHT_FAILED,
                    "the broker at '" + settings_.bootstrap + "' still answers: the log dirs are not replaced under a running broker");
      auto p = prepare(ctx, spec, res);
      if (!p) return res;
      TreeGuard guard{p->staging};
      std::vector<std::pair<std::string, std::string>> swapped;
      try {
        swap_all(ctx, *p, swapped);
      } catch (const Error& e) {
        return fail(v1::ERROR_CODE_IO_ERROR, std::string("replacing the log dirs failed; the old ones are in place: ") + e.what());
      }
      for (const auto& [d, old] : swapped)
        if (!old.empty()) note(ctx, "the previous log dir is kept at '" + old + "' (remove it when no longer needed)");
      res.metadata = {{"log_dirs", settings_.log_dirs}, {"swaps", swapped}};
      return done();
    }
    case v1::RESTORE_STEP_ROLLBACK: {
      if (answers()) {
        try {
          stop_broker(ctx);
        } catch (const Error& e) {
          return fail(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, std::string("stopping the broker for the rollback failed: ") + e.what());
        }
      }
      nlohmann::json state = read_swaps(settings_);
      if (state.is_object() && state.value("restore", "") == ctx.restore_id && state.contains("swaps") && state["swaps"].is_array()) {
        std::vector<std::pair<std::string, std::string>> swapped;
        for (const auto& s : state["swaps"])
          if (s.is_array() && s.size() == 2 && s[0].is_string() && s[1].is_string())
            swapped.emplace_back(s[0].get<std::string>(), s[1].get<std::string>());
        std::string problems = undo_swaps(ctx, swapped, utc_stamp());
        if (!problems.empty()) return fail(v1::ERROR_CODE_IO_ERROR, "putting the previous log dirs back failed" + problems);
        ::unlink(record_path(settings_).c_str());
        note(ctx, "the previous log dirs are back in place");
      } else {
        note(ctx, "this restore replaced no log dir here: nothing to put back");
      }
      try {
        start_broker(ctx, identity().node_id);
      } catch (const Error& e) {
        return fail(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, std::string("the broker did not come back after the rollback: ") + e.what());
      }
      return done();
    }
    case v1::RESTORE_STEP_VERIFY:
      return done();  // the runner calls verify()
    case v1::RESTORE_STEP_PREFLIGHT:
    case v1::RESTORE_STEP_COMMIT:
      return done();  // the runner calls restore_preflight / restore_commit
    case v1::RESTORE_STEP_ALL:
      break;
    default:  // not a step (protobuf's sentinels): admission refused it already
      return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "unknown restore step");
  }

  // The whole restore on this broker.
  auto p = prepare(ctx, spec, res);
  if (!p) return res;
  TreeGuard guard{p->staging};
  report_phase(ctx, v1::PHASE_STOP_SERVICE, settings_.service.describe());
  try {
    stop_broker(ctx);
  } catch (const Error& e) {
    return fail(e.code() == Errc::interrupted ? v1::ERROR_CODE_CANCELLED : v1::ERROR_CODE_SERVICE_CONTROL_FAILED,
                std::string("stopping the broker failed, nothing was changed: ") + e.what());
  }
  failpoint("restore.kafka.stopped");  // fault injection for tests (agent/failpoint.h)
  report_phase(ctx, v1::PHASE_RESTORE, settings_.log_dirs.front(), res.bytes, res.bytes);
  std::vector<std::pair<std::string, std::string>> swapped;  // log dir, where its old one went
  try {
    swap_all(ctx, *p, swapped);
  } catch (const Error& e) {
    std::string detail = std::string("replacing the log dirs failed: ") + e.what();
    try {
      start_broker(ctx, p->node_id);
      detail += "; the old log dirs are in place and the broker was started again";
    } catch (const Error& e2) {
      detail += std::string("; the old log dirs are in place, but the broker did not come back: ") + e2.what();
    }
    return fail(v1::ERROR_CODE_IO_ERROR, detail);
  }
  for (const auto& [d, old] : swapped)
    if (!old.empty()) note(ctx, "the previous log dir is kept at '" + old + "' (remove it when no longer needed)");
  failpoint("restore.kafka.swapped");

  report_phase(ctx, v1::PHASE_START_SERVICE, settings_.service.describe());
  try {
    start_broker(ctx, p->node_id);
  } catch (const Error& e) {
    // The broker does not come up on the restored data: the old data goes back.
    std::string detail = std::string("the broker did not come up on the restored log dirs: ") + e.what();
    try {
      stop_broker(ctx);
      detail += "; the previous log dirs were put back" + undo_swaps(ctx, swapped, utc_stamp());
      start_broker(ctx, p->node_id);
      detail += " and the broker runs on them again";
    } catch (const Error& e2) {
      detail += std::string("; putting the previous log dirs back failed: ") + e2.what();
    }
    return fail(v1::ERROR_CODE_VERIFY_FAILED, detail);
  }
  ::unlink(record_path(settings_).c_str());  // for a rollback of a step restore only
  res.metadata = {{"log_dirs", settings_.log_dirs}, {"cluster_id", p->cluster_id}, {"node_id", p->node_id}};
  nlohmann::json kept = nlohmann::json::array();
  for (const auto& [d, old] : swapped)
    if (!old.empty()) kept.push_back(old);
  res.metadata["previous_log_dirs"] = kept;
  return done();
}

std::vector<v1::Reason> KafkaDriver::verify(TaskContext& ctx, const nlohmann::json& recorded) {
  report_phase(ctx, v1::PHASE_VERIFY, settings_.bootstrap);
  if (settings_.bootstrap.empty()) return {};  // nothing to ask
  // A broker just started learns the cluster's topics from its controller a
  // moment later: what is missing is asked again for up to 30 s.
  auto deadline = std::chrono::steady_clock::now() + kVerifySettle;
  while (true) {
    std::vector<v1::Reason> out = verify_once(recorded);
    if (out.empty() || std::chrono::steady_clock::now() >= deadline || cancelled(ctx)) return out;
    std::this_thread::sleep_for(1s);
  }
}

std::vector<v1::Reason> KafkaDriver::verify_once(const nlohmann::json& recorded) const {
  std::vector<v1::Reason> out;
  auto problem = [&](const std::string& why) { out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, why, component_)); };
  ClusterView v;
  try {
    v = client_.describe(10s);
  } catch (const Error& e) {
    problem(std::string("the broker does not answer: ") + e.what());
    return out;
  }
  if (!recorded.is_object()) return out;
  std::string node = recorded.value("node_id", "");
  if (!node.empty() && std::to_string(v.answered_by) != node)
    problem("the broker at '" + settings_.bootstrap + "' is node " + std::to_string(v.answered_by) + ", the snapshot's is " + node);
  if (!recorded.contains("partitions") || !recorded["partitions"].is_object()) return out;
  std::map<std::string, const PartitionView*> known;
  for (const auto& p : v.partitions) known[p.topic + "-" + std::to_string(p.partition)] = &p;
  size_t unknown = 0, behind = 0;
  std::string first_unknown, first_behind;
  for (const auto& [name, pos] : recorded["partitions"].items()) {
    if (name.rfind("__cluster_metadata", 0) == 0) continue;  // KRaft's own log, not a topic
    if (!pos.is_array() || pos.size() != 3 || !pos[2].is_number_integer()) continue;
    auto it = known.find(name);
    if (it == known.end()) {
      if (!unknown++) first_unknown = name;
      continue;
    }
    int64_t hw = pos[2].get<int64_t>();
    if (hw <= 0) continue;
    try {
      auto [lo, hi] = client_.watermarks(it->second->topic, it->second->partition, 10s);
      (void)lo;
      if (hi < hw && !behind++) first_behind = name + " (high watermark " + std::to_string(hi) + ", recorded " + std::to_string(hw) + ")";
    } catch (const Error& e) {
      if (!behind++) first_behind = name + " (" + e.what() + ")";
    }
  }
  if (unknown)
    problem(std::to_string(unknown) + " partition(s) of the snapshot are not known to the cluster, e.g. '" + first_unknown +
            "': their data is on disk, but the cluster's metadata (ZooKeeper, or the KRaft controllers) no longer has "
            "their topic; restore the metadata from the same point too");
  if (behind) problem(std::to_string(behind) + " partition(s) serve less than the snapshot recorded, e.g. " + first_behind);
  return out;
}

}  // namespace cairn::agent::kafka
