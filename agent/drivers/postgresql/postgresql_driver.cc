#include "agent/drivers/postgresql/postgresql_driver.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "agent/config.h"
#include "agent/drivers/postgresql/conn.h"
#include "agent/drivers/postgresql/recovery.h"
#include "agent/drivers/postgresql/wal.h"
#include "agent/drivers/repo_progress.h"
#include "agent/failpoint.h"
#include "agent/platform/process.h"
#include "agent/platform/service.h"
#include "common/plan/recovery_target.h"
#include "common/repo/policy.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::postgresql {

namespace fs = std::filesystem;
namespace v1 = cairn::v1;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

std::string pg_real(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : std::string();
}

int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)" -> "0/2000028"
std::string label_value(const std::string& label, const std::string& key) {
  std::istringstream in(label);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ": ", 0) == 0) {
      std::string v = line.substr(key.size() + 2);
      return v.substr(0, v.find(' '));
    }
  return {};
}

// Files and directory contents a base backup leaves out (as pg_basebackup
// does): recreated by the server, or wrong to restore.
std::vector<std::string> base_excludes(const std::string& d) {
  std::vector<std::string> out;
  for (const char* dir : {"pg_wal", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_stat_tmp", "pg_subtrans"})
    out.push_back(d + "/" + dir + "/*");
  for (const char* f : {"postmaster.pid", "postmaster.opts", "backup_label", "tablespace_map", "backup_manifest", "recovery.signal",
                        "standby.signal", "postgresql.auto.conf.tmp", "current_logfiles.tmp"})
    out.push_back(d + "/" + f);
  out.push_back("pgsql_tmp*");
  out.push_back("pg_internal.init");
  return out;
}

// Relation files (base/, global/, each tablespace) are 8 KiB pages a
// checkpoint writes one by one: cut into small chunks, an incremental backup
// stores about the pages that changed (a 1-row update: a few 32 KiB chunks),
// where 1 MiB chunks would store a MiB or more per page touched.
void relation_pages(SnapshotSink& sink, const std::string& d, const std::vector<std::string>& tablespaces) {
  sink.pages_under(d + "/base");
  sink.pages_under(d + "/global");
  for (const auto& t : tablespaces) sink.pages_under(t);
}

const char* kRecoveryBegin = "# cairn recovery begin: written by cairn-agent for a restore, removed when it ends";
const char* kRecoveryEnd = "# cairn recovery end";

std::string without_recovery_block(const std::string& text) {
  std::istringstream in(text);
  std::string line, out;
  bool inside = false;
  while (std::getline(in, line)) {
    if (line == kRecoveryBegin) inside = true;
    if (!inside) out += line + "\n";
    if (line == kRecoveryEnd) inside = false;
  }
  return out;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes a file the server reads, owned as the data directory is, 0600.
void write_owned(const std::string& path, const std::string& content, const struct stat& owner) {
  write_file_atomic(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(content.data()), content.size()), 0600);
  if (::chown(path.c_str(), owner.st_uid, owner.st_gid) != 0 && ::geteuid() == 0)
    throw Error(Errc::io, "cannot give '" + path + "' to the data directory's owner: " + std::strerror(errno));
}

// A PostgreSQL string literal.
std::string pg_quote(const std::string& s) {
  std::string o = "'";
  for (char c : s) {
    if (c == '\'') o += '\'';
    o += c;
  }
  return o + "'";
}

// Removes a directory when the scope ends (a run's scratch space).
struct RemoveAtEnd {
  std::string dir;
  ~RemoveAtEnd() { remove_tree(dir); }
};

// One of PostgreSQL's client programs, with libpq's environment (client_env).
platform::ProcessResult run_client(std::vector<std::string> argv, const std::vector<std::string>& env, const std::atomic<bool>* cancel) {
  platform::ProcessSpec ps;
  ps.argv = std::move(argv);
  ps.env = env;
  ps.timeout = std::chrono::hours(12);
  ps.cancel = cancel;
  return platform::run_process(ps);
}

}  // namespace

std::pair<v1::ErrorCode, std::string> plan_recovery(TaskContext& ctx, const repo::Snapshot& base, const plan::ParsedTarget& target,
                                                    const std::string& scratch, WalCatalog* cat, WalPlan* wal) {
  try {
    ctx.repo->refresh_index();
    *cat = load_wal_catalog(*ctx.repo, base.component.value("system_identifier", ""));
  } catch (const Error& e) {
    return {v1::ERROR_CODE_REPOSITORY_ERROR, std::string("cannot list the archived WAL: ") + e.what()};
  }
  try {
    read_histories(*ctx.repo, *cat, scratch, ctx.cancel);
  } catch (const Error& e) {
    if (e.code() == Errc::interrupted) return {v1::ERROR_CODE_CANCELLED, "cancelled; nothing was changed"};
    return {v1::ERROR_CODE_REPOSITORY_CORRUPT, std::string(e.what()) + "; nothing was changed"};
  }
  return plan_wal(base, *cat, target, wal);
}

void write_recovery_files(const std::string& staged, const json& meta, const plan::ParsedTarget& target, uint32_t timeline,
                          const std::string& server_wal_dir, const struct stat& owner) {
  write_owned(staged + "/backup_label", meta.value("backup_label", ""), owner);
  if (!meta.value("tablespace_map", "").empty()) write_owned(staged + "/tablespace_map", meta.value("tablespace_map", ""), owner);
  write_owned(staged + "/recovery.signal", "", owner);
  std::string conf = without_recovery_block(slurp(staged + "/postgresql.auto.conf"));
  conf += std::string(kRecoveryBegin) + "\n";
  conf += "restore_command = " + pg_quote("cp \"" + server_wal_dir + "/%f\" \"%p\"") + "\n";
  conf += "recovery_target_timeline = " + pg_quote(std::to_string(timeline ? timeline : meta.value("timeline", 1u))) + "\n";
  switch (target.kind) {
    case v1::RecoveryTarget::KIND_TIME:
      conf += "recovery_target_time = " + pg_quote(plan::format_time_us(target.time_us)) + "\n";
      break;
    case v1::RecoveryTarget::KIND_LSN:
      conf += "recovery_target_lsn = " + pg_quote(plan::format_lsn(target.lsn)) + "\n";
      break;
    case v1::RecoveryTarget::KIND_XID:
      conf += "recovery_target_xid = " + pg_quote(std::to_string(target.xid)) + "\n";
      break;
    case v1::RecoveryTarget::KIND_IMMEDIATE:
      conf += "recovery_target = 'immediate'\n";
      break;
    default:
      break;
  }
  if (target.exclusive) conf += "recovery_target_inclusive = off\n";
  conf += "recovery_target_action = 'promote'\n";
  conf += std::string(kRecoveryEnd) + "\n";
  write_owned(staged + "/postgresql.auto.conf", conf, owner);
}

PostgresqlDriver::PostgresqlDriver(std::string component, Settings settings)
    : component_(std::move(component)), settings_(std::move(settings)) {}

PostgresqlDriver::~PostgresqlDriver() { stop_background(); }

DriverCaps PostgresqlDriver::capabilities() const {
  DriverCaps c;
  c.backup = true;
  c.restore = true;
  c.needs_service_stop = false;  // the base backup is read while the server runs; WAL replay makes it consistent
  c.safety_backup = true;
  c.scope = "node";
  c.modes = {"physical", "logical"};
  c.restore_stops_service = true;
  c.preflight_whole_restore = true;
  c.replays_to_target = true;
  c.restore_to_alternate = !settings_.logical_restore_as.empty();
  if (c.restore_to_alternate) c.restore_targets = {settings_.restore_to_name};
  return c;
}

std::vector<std::string> PostgresqlDriver::config_warnings() const {
  std::vector<std::string> w;
  std::error_code ec;
  if (!fs::is_directory(settings_.data_dir, ec))
    w.push_back("component '" + component_ + "': data_dir '" + settings_.data_dir + "' does not exist");
  if (settings_.service.empty()) w.push_back("component '" + component_ + "': no 'service' declared: backups work, restores are refused");
  return w;
}

void PostgresqlDriver::start_background(BackgroundContext ctx) {
  auto a = std::make_unique<WalArchive>(component_, settings_.archive_socket, settings_.data_dir);
  // What the server says it archived (through an earlier run of this agent):
  // the status is not "never" after the agent restarts.
  a->set_server_view([conn = settings_.conn]() -> std::pair<std::string, int64_t> {
    Conn c(conn);
    auto rows = c.query(
        "SELECT coalesce(last_archived_wal, ''), coalesce(extract(epoch FROM last_archived_time)::bigint, 0)::text "
        "FROM pg_stat_archiver");
    if (rows.empty()) return {};
    return {rows[0][0].value_or(""), std::stoll(rows[0][1].value_or("0"))};
  });
  a->set_check_interval(std::chrono::seconds(settings_.archive_check_seconds));
  a->start(std::move(ctx));
  std::lock_guard g(archive_mu_);
  archive_ = std::move(a);
}

void PostgresqlDriver::stop_background() {
  std::unique_ptr<WalArchive> a;
  {
    std::lock_guard g(archive_mu_);
    a = std::move(archive_);
  }
  if (a) a->stop();
}

void PostgresqlDriver::report_background(v1::Heartbeat& hb) const {
  std::lock_guard g(archive_mu_);
  if (archive_) *hb.add_wal_archives() = archive_->status();
}

std::vector<v1::Reason> PostgresqlDriver::backup_checks(bool logical) const {
  std::vector<v1::Reason> out;
  auto refuse = [&](const std::string& d, v1::ErrorCode code = v1::ERROR_CODE_PREFLIGHT_FAILED) {
    out.push_back(make_reason(code, d, component_));
  };
  try {
    Conn c(settings_.conn);
    auto rows = c.query(
        "SELECT current_setting('data_directory'), current_setting('archive_mode'), current_setting('archive_command'), "
        "pg_is_in_recovery()::text, current_setting('wal_level'), current_setting('wal_segment_size')");
    const auto& r = rows.at(0);
    std::string theirs = r[0].value_or(""), mode = r[1].value_or(""), command = r[2].value_or("");
    bool standby = r[3].value_or("") == "true";
    if (c.server_version() / 10000 != 15)
      refuse("postgresql at " + settings_.conn.describe() + " is version " + std::to_string(c.server_version()) +
             "; this driver backs up PostgreSQL 15");
    if (logical) {
      for (const char* prog : {"pg_dump", "pg_dumpall"})
        if (!platform::find_program(settings_.bin_dir + "/" + prog))
          refuse(std::string("'") + settings_.bin_dir + "/" + prog + "' is not there: install postgresql-client-15, or set bin_dir");
      return out;  // a dump needs neither the data directory nor the archive
    }
    if (pg_real(theirs) != pg_real(settings_.data_dir))
      refuse("postgresql at " + settings_.conn.describe() + " keeps its data in '" + theirs + "', not in data_dir '" + settings_.data_dir +
             "': fix 'data_dir' or the connection of component '" + component_ + "'");
    if (r[4].value_or("") == "minimal") refuse("wal_level is 'minimal': set wal_level = replica (a base backup needs its WAL)");
    if (r[5].value_or("") != "16MB")
      refuse("the cluster's WAL segments are " + r[5].value_or("?") + "; this driver archives 16MB segments");
    const std::string want = "cairn-agent wal-push --socket " + settings_.archive_socket + " %p";
    if (mode == "off" || (standby && mode != "always"))
      refuse(std::string("WAL is not archived") + (standby ? " on this standby" : "") +
             ": set archive_mode = " + (standby ? "always" : "on") + " and archive_command = '" + want +
             "' (a restart is needed for archive_mode); a base backup without its WAL does not restore");
    else if (command.find("wal-push") == std::string::npos || command.find(settings_.archive_socket) == std::string::npos)
      refuse("archive_command is '" + command + "', which does not hand WAL to this agent: set archive_command = '" + want +
             "' and reload");
  } catch (const Error& e) {
    refuse(e.what());
  }
  return out;
}

std::vector<v1::Reason> PostgresqlDriver::preflight(const v1::Task& task) const {
  if (task.kind() == v1::TASK_KIND_BACKUP) return backup_checks(task.options().mode() == "logical");
  std::vector<v1::Reason> out;
  auto refuse = [&](const std::string& d) { out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, d, component_)); };
  if (task.kind() != v1::TASK_KIND_RESTORE) {
    refuse("the postgresql driver does backups and restores only");
    return out;
  }
  const auto& o = task.options();
  if (!o.restore_target().empty() && !has_restore_target(o.restore_target()))
    refuse(settings_.logical_restore_as.empty()
               ? "component '" + component_ + "' (postgresql) declares no restore targets; it restores in place"
               : "component '" + component_ + "' (postgresql) declares one restore target, '" + settings_.restore_to_name +
                     "' (logical_restore_as), not '" + o.restore_target() + "'");
  if (!o.restore_step().empty()) refuse("component '" + component_ + "' (postgresql) is restored in one task, not in cluster steps");
  if (std::string why = plan::parse_recovery_target(o.recovery_target(), nullptr); !why.empty()) refuse(why);
  const auto& sv = settings_.service;
  if (sv.unit.empty() && (sv.start_command.empty() || sv.stop_command.empty()))
    refuse("a restore of component '" + component_ +
           "' stops and starts postgresql: declare its 'service' "
           "(a systemd unit such as postgresql@15-main.service, or start_command and stop_command)");
  else if (auto p = platform::Service(sv).problem(platform::ServiceUse::stop_start); !p.empty())
    refuse("a restore of component '" + component_ + "' stops and starts postgresql, but " + p);
  fs::path parent = fs::path(settings_.data_dir).parent_path();
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    refuse("the restore moves data_dir '" + settings_.data_dir + "' aside in '" + parent.string() +
           "', which this agent cannot write: " + std::strerror(errno));
  return out;
}

void PostgresqlDriver::snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) {
  // A logical restore's safety copy is a logical dump too: it needs no WAL archive.
  const bool restoring_dumps = purpose.safety && purpose.restoring && purpose.restoring->component.is_object() &&
                               purpose.restoring->component.value("mode", "") == "logical";
  if ((!purpose.safety && ctx.mode == "logical") || restoring_dumps) return dump(ctx, sink);
  const std::string& d = settings_.data_dir;
  std::shared_ptr<Conn> conn;
  try {
    conn = std::make_shared<Conn>(settings_.conn);
  } catch (const Error& e) {
    if (!purpose.safety) throw;
    // The server is down (often why it is restored): what is on disk is the
    // safety copy, whole, with its pg_wal, as a stopped server left it.
    std::error_code ec;
    if (!fs::exists(d, ec)) return;  // nothing to save
    note(ctx, std::string("postgresql is not reachable (") + e.what() + "); the safety backup copies data_dir as it is on disk");
    sink.add_path(d);
    relation_pages(sink, d, {});
    sink.set_metadata({{"mode", "cold"}, {"data_dir", d}});
    return;
  }
  report_phase(ctx, v1::PHASE_SNAPSHOT, "pg_backup_start");
  std::string system_id = conn->value("SELECT system_identifier::text FROM pg_control_system()");
  bool standby = conn->value("SELECT pg_is_in_recovery()::text") == "true";
  std::string version = conn->value("SELECT current_setting('server_version')");
  // The bootstrap superuser (a drill's checks connect as it).
  std::string superuser = conn->value("SELECT rolname::text FROM pg_roles WHERE oid = 10");
  json databases = json::array();
  for (const auto& row : conn->query("SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"))
    databases.push_back(row[0].value_or(""));
  // fast: an immediate checkpoint, as pg_basebackup --checkpoint=fast.
  conn->value("SELECT pg_backup_start($1, true)::text", {"cairn " + ctx.task_id});
  // From here until pg_backup_stop, the session must stay open: closing it
  // aborts the backup (the non-exclusive API).
  sink.on_done([conn]() mutable { conn.reset(); });
  sink.changes_repaired_by_log();
  sink.add_path(d);
  for (const auto& g : base_excludes(d)) sink.exclude(g);
  json tablespaces = json::array();
  std::vector<std::string> tablespace_paths;
  std::error_code ec;
  if (fs::is_directory(d + "/pg_tblspc", ec))
    for (const auto& e : fs::directory_iterator(d + "/pg_tblspc")) {
      if (!fs::is_symlink(e.symlink_status())) continue;
      std::string target = fs::read_symlink(e.path()).string();
      sink.add_path(target);
      tablespace_paths.push_back(target);
      tablespaces.push_back({{"oid", e.path().filename().string()}, {"path", target}});
    }
  relation_pages(sink, d, tablespace_paths);
  json meta = {{"mode", "physical"},      {"system_identifier", system_id}, {"server_version", version},  {"data_dir", d},
               {"from_standby", standby}, {"databases", databases},         {"tablespaces", tablespaces}, {"superuser", superuser}};
  sink.set_metadata(meta);
  sink.before_seal([this, conn, meta, d, &sink, &ctx]() mutable {
    report_phase(ctx, v1::PHASE_SNAPSHOT, "pg_backup_stop");
    // wait_for_archive: returns once the WAL the backup needs is archived,
    // which the archive socket answers only when it is in the repository.
    auto rows = conn->query("SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(true)");
    const auto& r = rows.at(0);
    std::string label = r[1].value_or(""), spcmap = r[2].value_or("");
    uint64_t start = 0, stop = 0;
    if (!plan::parse_lsn(label_value(label, "START WAL LOCATION"), &start) || !plan::parse_lsn(r[0].value_or(""), &stop))
      throw Error(Errc::corrupt, "pg_backup_stop returned a backup label without a START WAL LOCATION");
    uint32_t tli = uint32_t(std::stoul(label_value(label, "START TIMELINE").empty() ? "0" : label_value(label, "START TIMELINE")));
    if (tli == 0) throw Error(Errc::corrupt, "pg_backup_stop returned a backup label without a START TIMELINE");
    meta["backup_label"] = label;
    meta["tablespace_map"] = spcmap;
    meta["timeline"] = tli;
    // Which timelines this one branched from, and where: the controller picks
    // a base backup on a target timeline's history from it.
    meta["history"] = timeline_history(d, tli);
    // The WAL it replays from (common/repo/policy.h log chains): `repo
    // forget` refuses a segment from here on while this backup is kept.
    meta["replays_log"] = {{"log", "pg-" + meta.value("system_identifier", std::string())}, {"from", repo::log_position(segno_of(start))}};
    meta["start_lsn"] = plan::format_lsn(start);
    meta["stop_lsn"] = plan::format_lsn(stop);
    meta["start_wal"] = segment_name(tli, segno_of(start));
    // The backup is consistent once replay passed stop_lsn: that segment holds it.
    meta["stop_wal"] = segment_name(tli, segno_of(stop == 0 ? 0 : stop - 1));
    meta["backup_end_time_us"] = now_us();
    sink.set_metadata(meta);
  });
}

std::vector<v1::Reason> PostgresqlDriver::check_snapshot(const repo::Snapshot& snap) const {
  std::vector<v1::Reason> out;
  std::string mode = snap.component.is_object() ? snap.component.value("mode", "") : "";
  const std::string& want = mode == "logical" ? settings_.dump_dir : settings_.data_dir;
  bool has_data = std::find(snap.paths.begin(), snap.paths.end(), want) != snap.paths.end();
  if (!has_data || (mode != "physical" && mode != "cold" && mode != "logical"))
    out.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                              "snapshot '" + snap.id.substr(0, 8) + "' is not a base backup of data_dir '" + settings_.data_dir +
                                  "' of component '" + component_ + "'; nothing was changed",
                              settings_.data_dir));
  return out;
}

std::vector<v1::Reason> PostgresqlDriver::restore_preflight(TaskContext& ctx, const RestoreSpec& spec) {
  plan::ParsedTarget target;
  if (std::string why = plan::parse_recovery_target(spec.recovery_target, &target); !why.empty())
    return {make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, why)};
  if (target.kind == v1::RecoveryTarget::KIND_UNSPECIFIED) target.kind = v1::RecoveryTarget::KIND_LATEST;
  repo::Snapshot base;
  try {
    base = repo::load_snapshot(*ctx.repo, spec.snapshot_id);
    base.id = spec.snapshot_id;
  } catch (const Error& e) {
    return {make_reason(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, std::string("cannot read the snapshot: ") + e.what())};
  }
  if (base.component.value("mode", "") != "physical" || !spec.target_name.empty()) return {};  // checked by restore()
  // Only the archive's index and the small history files are read here; the
  // segments are read (and their records proven) by the restore itself,
  // still before anything is stopped.
  const std::string scratch = settings_.data_dir + ".cairn-wal-preflight-" + utc_stamp();
  RemoveAtEnd gone{scratch};
  WalCatalog cat;
  WalPlan wal;
  if (auto [code, why] = plan_recovery(ctx, base, target, scratch, &cat, &wal); code != v1::ERROR_CODE_OK)
    return {make_reason(code, why + " (refused before the safety backup)")};
  // Past a gap, whether a time or a transaction is reached is known only from
  // the commit records before it: read them now, not after the safety backup.
  if (!wal.gap.empty() && (target.kind == v1::RecoveryTarget::KIND_TIME || target.kind == v1::RecoveryTarget::KIND_XID)) {
    mkdir_p(scratch + "/wal", 0700);
    if (auto [code, why] = fetch_wal(ctx, cat, wal, base, target, scratch + "/wal", ctx.memory_budget / 4, nullptr);
        code != v1::ERROR_CODE_OK)
      return {make_reason(code, why + " (refused before the safety backup)")};
  }
  return {};
}

DriverResult PostgresqlDriver::restore(TaskContext& ctx, const RestoreSpec& spec) {
  DriverResult res;
  auto fail = [&](v1::ErrorCode code, const std::string& detail) {
    res.outcome = v1::TASK_OUTCOME_FAILED;
    res.reasons.push_back(make_reason(code, detail, component_));
    return res;
  };
  const std::string& d = settings_.data_dir;
  if (spec.step != v1::RESTORE_STEP_ALL)
    return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + component_ + "' (postgresql) is restored in one task");
  if (settings_.service.empty())
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "component '" + component_ + "' declares no 'service' to stop and start");
  plan::ParsedTarget target;
  if (std::string why = plan::parse_recovery_target(spec.recovery_target, &target); !why.empty())
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, why);
  if (target.kind == v1::RecoveryTarget::KIND_UNSPECIFIED) target.kind = v1::RecoveryTarget::KIND_LATEST;

  // 1. The base backup and what it recorded; nothing is stopped until every
  // piece the recovery needs was read out of the repository and checked.
  repo::Snapshot base;
  try {
    const std::string id = repo::resolve_snapshot(*ctx.repo, spec.snapshot_id);
    base = repo::load_snapshot(*ctx.repo, id);
    base.id = id;
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, std::string("cannot read the snapshot: ") + e.what());
  }
  if (auto bad = check_snapshot(base); !bad.empty()) {
    res.reasons = std::move(bad);
    return res;
  }
  const json meta = base.component;
  const bool renamed = !spec.target_name.empty();
  if (renamed && meta.value("mode", "") != "logical")
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED,
                "snapshot '" + base.id.substr(0, 8) + "' is a " + meta.value("mode", std::string("physical")) +
                    " backup: it restores the whole server in place; a restore under other database names (target '" + spec.target_name +
                    "') takes a logical dump; nothing was changed");
  if (meta.value("mode", "") == "logical") {
    if (spec.recovery_target.kind() != v1::RecoveryTarget::KIND_UNSPECIFIED)
      return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "snapshot '" + base.id.substr(0, 8) +
                                                       "' is a logical dump: it restores as it was, without a recovery "
                                                       "target; nothing was changed");
    return restore_dumps(ctx, base, renamed ? &settings_.logical_restore_as : nullptr);
  }
  const bool physical = meta.value("mode", "") == "physical";
  if (!physical && spec.recovery_target.kind() != v1::RecoveryTarget::KIND_UNSPECIFIED)
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "snapshot '" + base.id.substr(0, 8) +
                                                     "' is a copy of a stopped server's files (a safety backup), not a "
                                                     "base backup: it restores as it was, without a recovery target");

  std::error_code ec;
  const std::string parent = fs::path(d).parent_path().string(), base_name = fs::path(d).filename().string();
  for (const char* kind : {".cairn-restore-", ".cairn-wal-"})
    for (const auto& gone : remove_leftovers(parent, base_name + kind))
      note(ctx, "removed '" + gone + "', left by an earlier restore that did not end");
  std::string stamp = utc_stamp();
  for (int i = 2; fs::exists(fs::symlink_status(d + ".cairn-old-" + stamp, ec)); ++i) stamp = utc_stamp() + "-" + std::to_string(i);
  const std::string staging = d + ".cairn-restore-" + stamp, wal_dir = d + ".cairn-wal-" + stamp, old_dir = d + ".cairn-old-" + stamp;
  RemoveAtEnd cleanup_staging{staging}, cleanup_wal{wal_dir};

  json reached;
  std::atomic<uint64_t> wal_count{0};
  uint64_t base_budget = ctx.memory_budget;
  WalCatalog cat;
  WalPlan wal;
  // The WAL fetch running beside the base backup's read; every way out of
  // this function waits for it first (it uses what is declared above).
  std::future<std::pair<v1::ErrorCode, std::string>> wal_job;
  struct JoinWal {
    std::future<std::pair<v1::ErrorCode, std::string>>& f;
    ~JoinWal() {
      if (f.valid()) f.wait();
    }
  } join_wal{wal_job};
  // Each phase's seconds, reported with the result: the restore's RTO, by part.
  json phase_seconds = json::object();
  std::string phase_name;
  auto phase_start = std::chrono::steady_clock::now();
  auto mark = [&](const std::string& next) {
    auto now = std::chrono::steady_clock::now();
    if (!phase_name.empty()) phase_seconds[phase_name] = std::chrono::duration<double>(now - phase_start).count();
    phase_name = next;
    phase_start = now;
  };
  if (physical) {
    // The archive socket stores WAL beside this task (the safety backup's
    // own WAL among it): what it indexed since the task began is read too.
    mkdir_p(wal_dir, 0700);
    if (auto [code, why] = plan_recovery(ctx, base, target, wal_dir + "/.histories", &cat, &wal); code != v1::ERROR_CODE_OK)
      return fail(code, why);
    // 2. The WAL, read and checked before anything is stopped: a damaged
    // segment is found here, not halfway through the recovery.
    struct stat owner {};
    if (::stat(d.c_str(), &owner) != 0 && ::stat(parent.c_str(), &owner) != 0)
      return fail(v1::ERROR_CODE_IO_ERROR, "cannot read the owner of '" + d + "'");
    (void)::chown(wal_dir.c_str(), owner.st_uid, owner.st_gid);
    report_phase(ctx, v1::PHASE_RESTORE, "WAL and base backup");
    mark("restore");
    // Room for the base backup and the WAL beside the live data directory.
    if (auto p = staging_space_problem(parent, snapshot_bytes(base) + wal.needed.size() * kWalSegmentSize); !p.empty())
      return fail(v1::ERROR_CODE_NO_SPACE, p + kept_copies_hint(d));
    // The WAL is read on a thread of its own while the base backup is read
    // below (a quarter of the memory budget for it); both end before
    // anything is stopped.
    const uint64_t wal_budget = ctx.memory_budget / 4;
    base_budget = ctx.memory_budget - wal_budget;
    wal_job = std::async(std::launch::async, [&ctx, &cat, &base, &wal, &wal_count, &target, wal_dir, wal_budget]() {
      return fetch_wal(ctx, cat, wal, base, target, wal_dir, wal_budget, &wal_count);
    });
    reached["covered_lsn"] = plan::format_lsn(wal.covered_lsn);
    reached["timeline_followed"] = wal.timeline_said;
  }

  // 3. The base backup, read beside the data directory while the server runs.
  if (!physical) {
    mark("restore");
    if (auto p = staging_space_problem(parent, snapshot_bytes(base)); !p.empty())
      return fail(v1::ERROR_CODE_NO_SPACE, p + kept_copies_hint(d));
  }
  repo::RestoreOptions ro;
  ro.memory_budget = base_budget;
  ro.target = staging;
  ro.cancel = ctx.cancel;
  ro.progress = repo_progress(ctx, v1::PHASE_RESTORE);
  repo::RestoreResult rr;
  try {
    rr = repo::restore(*ctx.repo, base.id, ro);
  } catch (const Error& e) {
    return fail(repository_read_code(e), std::string("reading the base backup failed, nothing was changed: ") + e.what());
  }
  if (!rr.failures.empty()) {
    for (const auto& f : rr.failures)
      res.reasons.push_back(make_reason(v1::ERROR_CODE_REPOSITORY_CORRUPT, "'" + f.path + "': " + f.reason, f.path));
    return fail(v1::ERROR_CODE_REPOSITORY_CORRUPT,
                std::to_string(rr.failures.size()) + " entries of the base backup could not be read; nothing was changed");
  }
  if (wal_job.valid()) {
    auto [code, detail] = wal_job.get();
    if (code != v1::ERROR_CODE_OK) return fail(code, detail);
    phase_seconds["wal_fetch"] = std::stod(detail);
    reached["wal_segments_fetched"] = wal_count.load();
    reached["proven"] = wal.proof;
    note(ctx, "recovery to " + target.describe() + " follows " + wal.timeline_said + "; the archived WAL reaches it: " + wal.proof);
  }
  const std::string staged = staging + d;
  struct stat owner {};
  if (::stat(staged.c_str(), &owner) != 0) return fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "the snapshot's '" + d + "' is not a directory");
  try {
    if (physical) {
      write_recovery_files(staged, meta, target, wal.timeline, wal_dir, owner);
    }
  } catch (const std::exception& e) {
    return fail(v1::ERROR_CODE_IO_ERROR, std::string("preparing the recovery failed, nothing was changed: ") + e.what());
  }
  res.bytes = rr.bytes_restored;
  res.files = rr.files_restored;

  // The standbys streaming from the server now: the restore replaces the
  // data they follow, so they are left on the old timeline (said at the end).
  std::vector<std::array<std::string, 4>> standbys;  // name, from, role, replayed to
  try {
    Conn c(settings_.conn);
    for (const auto& row : c.query("SELECT application_name, coalesce(client_addr::text, 'a local socket'), usename::text, "
                                   "coalesce(replay_lsn::text, '?') FROM pg_stat_replication ORDER BY 1"))
      standbys.push_back({row[0].value_or(""), row[1].value_or(""), row[2].value_or(""), row[3].value_or("")});
  } catch (const Error&) {
    // Not answering (often why it is restored): its standbys are unknown here.
  }

  // 4. Stop, swap (data_dir and each tablespace), start. The restore's
  // record (restore_journal.h) is on disk from before the stop until the
  // end: an agent killed in between puts the previous data back at its start.
  platform::Service service(settings_.service);
  InPlaceRestore rec = in_place_restore(ctx, stamp);
  rec.scratch = {staging, wal_dir};
  JournalGuard journal(ctx.journal, std::move(rec));
  try {
    journal.write();
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_IO_ERROR, e.what());
  }
  report_phase(ctx, v1::PHASE_STOP_SERVICE, settings_.service.describe());
  mark("stop");
  try {
    service.stop(ctx.cancel);
  } catch (const Error& e) {
    if (fs::exists(d + "/postmaster.pid", ec))
      return fail(e.code() == Errc::interrupted ? v1::ERROR_CODE_CANCELLED : v1::ERROR_CODE_SERVICE_CONTROL_FAILED,
                  std::string("stopping postgresql failed, nothing was changed: ") + e.what());
    note(ctx, std::string("stopping postgresql reported '") + e.what() + "', and no postmaster.pid is left: it was not running");
  }
  // Fault injection for tests (agent/failpoint.h; only with CAIRN_FAILPOINTS_FILE).
  failpoint("restore.postgresql.stopped");
  // Puts back what the record's moves did so far (the restored copies to
  // <path>.cairn-failed-<stamp>), for a failure inside this task.
  auto put_back = [&]() {
    std::string left = put_back_moves(journal.record());
    if (!left.empty()) journal.keep();  // the agent's next start tries again
    return left;
  };
  try {
    // Every move is in the record before the first is made.
    journal.record().state = InPlaceRestore::State::swapping;
    for (const auto& p : base.paths) {
      std::string old = p == d ? old_dir : p + ".cairn-old-" + stamp;
      journal.record().moves.push_back({p, fs::exists(fs::symlink_status(p, ec)) ? old : ""});
    }
    journal.write();
    for (const auto& m : journal.record().moves) {
      if (!m.aside.empty()) fs::rename(m.path, m.aside);
      fs::rename(staging + m.path, m.path);
    }
  } catch (const std::exception& e) {
    std::string left = put_back();
    std::string detail = std::string("replacing data_dir failed: ") + e.what() +
                         (left.empty() ? "; the previous data is back" : "; could not put back:" + left);
    try {
      service.start(ctx.cancel);
    } catch (const Error& e2) {
      detail += std::string("; starting postgresql failed: ") + e2.what();
    }
    return fail(v1::ERROR_CODE_IO_ERROR, detail);
  }
  res.metadata["previous_data_dir"] = old_dir;
  failpoint("restore.postgresql.swapped");

  // A failure from here: the server is stopped, the previous data put back
  // and started again; the restored copy is kept for a look.
  auto roll_back = [&](v1::ErrorCode code, const std::string& why) {
    std::string detail = why + put_back_and_restart(journal, service, "postgresql", d, ctx.cancel);
    res.metadata.erase("previous_data_dir");
    return fail(code, detail);
  };

  report_phase(ctx, v1::PHASE_START_SERVICE, settings_.service.describe());
  mark("start");
  try {
    service.start(ctx.cancel);
  } catch (const Error& e) {
    return roll_back(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, std::string("postgresql did not start on the restored data (") + e.what() +
                                                                "): recovery to " + target.describe() + " failed; its log says why");
  }

  failpoint("restore.postgresql.started");
  // 5. Recovery runs until the target, then the server promotes itself.
  report_phase(ctx, v1::PHASE_VERIFY, "recovery to " + target.describe());
  mark("recovery");
  auto deadline = std::chrono::steady_clock::now() + std::max<std::chrono::milliseconds>(settings_.service.timeout, 1h);
  std::string last_error;
  int gone = 0;
  while (true) {
    if (ctx.cancel && ctx.cancel->load()) return roll_back(v1::ERROR_CODE_CANCELLED, "cancelled during the recovery");
    try {
      Conn c(settings_.conn);
      if (c.value("SELECT pg_is_in_recovery()::text") == "false") {
        const uint32_t now_tli = uint32_t(std::stoul(c.value("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), nullptr, 16));
        reached["timeline"] = now_tli;
        reached["history"] = timeline_history(d, now_tli);
        reached["lsn"] = c.value("SELECT pg_current_wal_lsn()::text");
        break;
      }
      gone = 0;
    } catch (const Error& e) {
      last_error = e.what();
      if (!fs::exists(d + "/postmaster.pid", ec) && ++gone >= 3)
        return roll_back(v1::ERROR_CODE_VERIFY_FAILED,
                         "postgresql stopped during the recovery to " + target.describe() + " (" + last_error + "); its log says why");
    }
    if (std::chrono::steady_clock::now() > deadline)
      return roll_back(v1::ERROR_CODE_VERIFY_FAILED, "the recovery to " + target.describe() + " did not end in time");
    std::this_thread::sleep_for(200ms);
  }

  // 6. The recovery settings go from the file (a promoted server ignores
  // them; they would only mislead the next reader, and reloading now would
  // log them as "cannot be changed without restarting"); the WAL fetched
  // goes with the cleanup.
  try {
    struct stat o2 {};
    if (::stat(d.c_str(), &o2) == 0 && physical)
      write_owned(d + "/postgresql.auto.conf", without_recovery_block(slurp(d + "/postgresql.auto.conf")), o2);
  } catch (const std::exception& e) {
    note(ctx, std::string("the recovery settings could not be removed from postgresql.auto.conf: ") + e.what());
  }
  note(ctx, "the previous data directory is kept at '" + old_dir + "' (remove it when no longer needed)");
  mark("");
  reached["seconds"] = phase_seconds;
  reached["target"] = target.describe();
  reached["base_backup"] = base.id;
  res.metadata["recovery"] = reached;
  res.metadata["databases"] = meta.value("databases", json::array());
  // The restored server is on a new timeline at an earlier point: a standby
  // that streamed from the replaced data cannot follow it and still serves
  // that data to its readers. The restore of the primary is whole; the
  // cluster is not until each is re-seeded (docs/postgresql.md § Standbys
  // after a restore).
  json left = json::array();
  for (const auto& [name, from, role, replayed] : standbys) {
    left.push_back(name);
    res.reasons.push_back(
        make_reason(v1::ERROR_CODE_ITEM_SKIPPED,
                    "standby '" + name + "' (from " + from + ", replayed to " + replayed +
                        ") streamed from the data this restore replaced: it cannot follow the restored primary (timeline " +
                        reached.value("timeline", json(0)).dump() +
                        ") and serves the replaced data to its readers. Re-seed it: stop it, "
                        "move its data directory aside, run pg_basebackup -h <this server> -U " +
                        role + " -D <its data directory> -R -X stream -c fast as its server's user, and start it",
                    name));
  }
  if (!left.empty()) res.metadata["standbys_to_reseed"] = left;
  res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_PARTIAL;
  return res;
}

std::string PostgresqlDriver::recover_interrupted_restore(const InPlaceRestore& r) {
  // Whatever runs on data_dir now (the restored copy, perhaps still in
  // recovery, or nothing) is stopped; a stop that fails with no
  // postmaster.pid left found nothing running.
  const std::string d = settings_.data_dir;
  return undo_around_service(r, platform::Service(settings_.service), "postgresql", d, [&d] {
    std::error_code ec;
    return !fs::exists(d + "/postmaster.pid", ec);
  });
}

std::vector<std::string> PostgresqlDriver::client_env(const std::string& dir) const {
  std::vector<std::string> env = {"PGHOST=" + settings_.conn.host, "PGPORT=" + std::to_string(settings_.conn.port),
                                  "PGUSER=" + settings_.conn.user, "PGAPPNAME=cairn-agent", "PGCONNECT_TIMEOUT=10"};
  if (!settings_.conn.sslmode.empty()) env.push_back("PGSSLMODE=" + settings_.conn.sslmode);
  if (!settings_.conn.password_file.empty()) {
    if (std::string why = check_secret_file_mode(settings_.conn.password_file); !why.empty())
      throw Error(Errc::invalid_input, "password_file '" + settings_.conn.password_file + "': " + why);
    // One line of .pgpass for any host, port and database of this user; ':'
    // and '\\' in the password escaped as libpq reads them.
    std::string pw = read_secret_file(settings_.conn.password_file), esc;
    for (char c : pw) {
      if (c == ':' || c == '\\') esc += '\\';
      esc += c;
    }
    std::string user;
    for (char c : settings_.conn.user) {
      if (c == ':' || c == '\\') user += '\\';
      user += c;
    }
    std::string line = "*:*:*:" + user + ":" + esc + "\n";
    write_file_atomic(dir + "/.pgpass", std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(line.data()), line.size()), 0600);
    std::fill(pw.begin(), pw.end(), '\0');
    std::fill(line.begin(), line.end(), '\0');
    env.push_back("PGPASSFILE=" + dir + "/.pgpass");
  } else if (!settings_.conn.passfile.empty()) {
    env.push_back("PGPASSFILE=" + settings_.conn.passfile);
  }
  return env;
}

void PostgresqlDriver::dump(TaskContext& ctx, SnapshotSink& sink) {
  const std::string& dir = settings_.dump_dir;
  remove_tree(dir);  // what a killed backup left
  mkdir_p(dir, 0700);
  sink.on_done([dir] { remove_tree(dir); });
  const std::string scratch = dir + ".pgpass-" + std::to_string(::getpid());
  mkdir_p(scratch, 0700);
  RemoveAtEnd gone{scratch};
  auto env = client_env(scratch);
  Conn c(settings_.conn);
  std::string version = c.value("SELECT current_setting('server_version')");
  std::string superuser = c.value("SELECT rolname::text FROM pg_roles WHERE oid = 10");
  json dbs = json::array();
  for (const auto& row : c.query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname"))
    dbs.push_back(row[0].value_or(""));
  auto run = [&](std::vector<std::string> argv, const std::string& what) {
    auto r = run_client(std::move(argv), env, ctx.cancel);
    if (!r.ok()) throw Error(Errc::io, what + " failed: " + r.describe());
  };
  report_phase(ctx, v1::PHASE_SNAPSHOT, "pg_dumpall --globals-only");
  run({settings_.bin_dir + "/pg_dumpall", "--globals-only", "--no-password", "-f", dir + "/globals.sql"}, "pg_dumpall --globals-only");
  uint64_t n = 0;
  json files = json::object();
  for (const auto& db : dbs) {
    const std::string name = db.get<std::string>();
    const std::string file = "db-" + std::to_string(n++) + ".dump";  // a database's name may hold any character
    report_phase(ctx, v1::PHASE_SNAPSHOT, "pg_dump " + name, n, dbs.size());
    run({settings_.bin_dir + "/pg_dump", "-Fc", "--no-password", "-f", dir + "/" + file, "-d", name}, "pg_dump of database '" + name + "'");
    files[file] = name;
  }
  sink.add_path(dir);
  sink.set_metadata({{"mode", "logical"},
                     {"server_version", version},
                     {"databases", dbs},
                     {"dumps", files},
                     {"dump_dir", dir},
                     {"superuser", superuser}});
}

namespace {

// A quoted SQL identifier ("a ""b"""): any name without NUL (config.cc refuses those).
std::string quote_ident(const std::string& name) {
  std::string out = "\"";
  for (char ch : name) out += ch == '"' ? std::string("\"\"") : std::string(1, ch);
  return out + "\"";
}

// libpq's conninfo for a database name: dbname='...' with ' and \ escaped,
// so that a name holding '=' or spaces is never read as a connection string.
std::string dbname_conninfo(const std::string& name) {
  std::string out = "dbname='";
  for (char ch : name) {
    if (ch == '\'' || ch == '\\') out += '\\';
    out += ch;
  }
  return out + "'";
}

}  // namespace

DriverResult PostgresqlDriver::restore_dumps(TaskContext& ctx, const repo::Snapshot& snap, const std::map<std::string, std::string>* as) {
  DriverResult res;
  auto fail = [&](v1::ErrorCode code, const std::string& detail) {
    res.outcome = v1::TASK_OUTCOME_FAILED;
    res.reasons.push_back(make_reason(code, detail, component_));
    return res;
  };
  const json dumps = snap.component.value("dumps", json::object());
  // Under other names: every new name must be free before anything is read
  // or made; the live databases and the roles are never touched.
  if (as) {
    std::set<std::string> in_dump;
    for (const auto& [file, name] : dumps.items())
      if (name.is_string()) in_dump.insert(name.get<std::string>());
    std::vector<std::string> wanted;
    for (const auto& [from, to] : *as)
      if (in_dump.count(from))
        wanted.push_back(to);
      else
        note(ctx, "database '" + from + "' (logical_restore_as) is not in snapshot '" + snap.id.substr(0, 8) + "'");
    if (wanted.empty())
      return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, "snapshot '" + snap.id.substr(0, 8) +
                                                       "' holds none of the databases "
                                                       "logical_restore_as names; nothing was changed");
    try {
      Conn c(settings_.conn);
      std::string taken;
      size_t n_taken = 0;
      for (const auto& to : wanted)
        if (c.value("SELECT count(*) FROM pg_database WHERE datname = $1", {to}) != "0") taken += (n_taken++ ? ", '" : "'") + to + "'";
      if (n_taken)
        return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, (n_taken == 1 ? "database " + taken + " exists" : "databases " + taken + " exist") +
                                                         " already: a restore under another name makes new databases only; drop " +
                                                         (n_taken == 1 ? "it" : "them") +
                                                         ", or map other names in logical_restore_as; nothing was changed");
    } catch (const Error& e) {
      return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, std::string("postgresql does not answer: ") + e.what() + "; nothing was changed");
    }
  }
  const std::string staging = settings_.dump_dir + ".cairn-restore-" + utc_stamp();
  RemoveAtEnd gone{staging};
  repo::RestoreOptions ro;
  ro.target = staging;
  ro.memory_budget = ctx.memory_budget;
  ro.cancel = ctx.cancel;
  ro.progress = repo_progress(ctx, v1::PHASE_RESTORE);
  try {
    auto rr = repo::restore(*ctx.repo, snap.id, ro);
    if (!rr.failures.empty())
      return fail(v1::ERROR_CODE_REPOSITORY_CORRUPT,
                  "'" + rr.failures.front().path + "': " + rr.failures.front().reason + "; nothing was changed");
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_REPOSITORY_ERROR, std::string("reading the dumps failed, nothing was changed: ") + e.what());
  }
  const std::string dir = staging + snap.component.value("dump_dir", settings_.dump_dir);
  std::vector<std::string> env;
  try {
    env = client_env(staging);
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, e.what());
  }
  auto run = [&](std::vector<std::string> argv) { return run_client(std::move(argv), env, ctx.cancel); };
  json restored = json::array();
  uint64_t n = 0;
  if (as) {
    // Each database into a new one of its new name: made here (the server's
    // default encoding and locale, owned by the connecting role), filled by
    // pg_restore with the dump's objects, owners and grants (the roles are the
    // server's own: not replayed), dropped again when that fails.
    for (const auto& [file, name] : dumps.items()) {
      auto it = name.is_string() ? as->find(name.get<std::string>()) : as->end();
      if (it == as->end()) continue;
      const std::string& from = it->first;
      const std::string& to = it->second;
      report_phase(ctx, v1::PHASE_RESTORE, "pg_restore " + from + " as " + to, ++n, as->size());
      try {
        Conn(settings_.conn).query("CREATE DATABASE " + quote_ident(to) + " TEMPLATE template0");
      } catch (const Error& e) {
        res.reasons.push_back(make_reason(v1::ERROR_CODE_IO_ERROR, "database '" + to + "' could not be made: " + e.what(), to));
        continue;
      }
      auto r = run({settings_.bin_dir + "/pg_restore", "--no-password", "--exit-on-error", "-d", dbname_conninfo(to), dir + "/" + file});
      if (r.ok()) {
        restored.push_back(to);
        continue;
      }
      std::string dropped = "; the new database was dropped again";
      try {
        Conn(settings_.conn).query("DROP DATABASE IF EXISTS " + quote_ident(to));
      } catch (const Error& e) {
        dropped = std::string("; dropping the new database failed too (") + e.what() + "): drop '" + to + "' by hand";
      }
      res.reasons.push_back(
          make_reason(v1::ERROR_CODE_IO_ERROR, "database '" + from + "' was not restored as '" + to + "': " + r.describe() + dropped, to));
    }
    res.metadata["databases"] = restored;
    res.metadata["restored_as"] = *as;
    res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : restored.empty() ? v1::TASK_OUTCOME_FAILED : v1::TASK_OUTCOME_PARTIAL;
    return res;
  }
  // Roles and tablespaces first; a role that exists already is an error
  // psql reports and goes past (the dumps' grants need the roles, not new ones).
  report_phase(ctx, v1::PHASE_RESTORE, "globals");
  auto g = run({settings_.bin_dir + "/psql", "-X", "-q", "--no-password", "-d", settings_.conn.dbname, "-f", dir + "/globals.sql"});
  if (!g.ok()) return fail(v1::ERROR_CODE_IO_ERROR, "restoring roles and tablespaces failed: " + g.describe());
  for (const auto& [file, name] : dumps.items()) {
    report_phase(ctx, v1::PHASE_RESTORE, "pg_restore " + name.get<std::string>(), ++n, dumps.size());
    // --clean --create: the database is dropped and made again from the dump
    // (the safety backup holds what it was).
    // Connected to template1: the dump may be of the database the settings name.
    auto r = run({settings_.bin_dir + "/pg_restore", "--no-password", "--clean", "--if-exists", "--create", "--exit-on-error", "-d",
                  "template1", dir + "/" + file});
    if (!r.ok())
      res.reasons.push_back(make_reason(v1::ERROR_CODE_IO_ERROR,
                                        "database '" + name.get<std::string>() + "' was not restored: " + r.describe(),
                                        name.get<std::string>()));
    else
      restored.push_back(name);
  }
  res.metadata["databases"] = restored;
  res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : restored.empty() ? v1::TASK_OUTCOME_FAILED : v1::TASK_OUTCOME_PARTIAL;
  return res;
}

std::vector<v1::Reason> PostgresqlDriver::verify(TaskContext& ctx, const json& recorded) {
  std::vector<v1::Reason> out;
  report_phase(ctx, v1::PHASE_VERIFY, settings_.conn.describe());
  try {
    Conn c(settings_.conn);
    if (c.value("SELECT pg_is_in_recovery()::text") != "false")
      out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, "postgresql is still in recovery", component_));
    std::vector<std::string> have;
    for (const auto& row : c.query("SELECT datname FROM pg_database")) have.push_back(row[0].value_or(""));
    if (recorded.is_object() && recorded.contains("databases") && recorded["databases"].is_array())
      for (const auto& db : recorded["databases"])
        if (db.is_string() && std::find(have.begin(), have.end(), db.get<std::string>()) == have.end())
          out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED,
                                    "database '" + db.get<std::string>() + "' of the backup is not on the restored server", component_));
  } catch (const Error& e) {
    out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, std::string("postgresql does not answer: ") + e.what(), component_));
  }
  return out;
}

}  // namespace cairn::agent::postgresql
