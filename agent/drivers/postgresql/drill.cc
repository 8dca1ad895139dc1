// The PostgreSQL drill (docs/drills.md): started in a drill's sandbox
// (agent/sandbox/sandbox.h) on the restored snapshot and checked against
// what the backup recorded. Its tools are its own [drill] keys.
#include "agent/drivers/postgresql/drill.h"

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
#include "agent/drivers/postgresql/recovery.h"
#include "agent/drivers/postgresql/wal.h"
#include "agent/platform/http.h"
#include "agent/platform/process.h"
#include "agent/platform/socket_client.h"
#include "agent/sandbox/sandbox.h"
#include "common/plan/recovery_target.h"
#include "common/repo/memory.h"
#include "common/repo/repository.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent {

namespace v1 = cairn::v1;
namespace fs = std::filesystem;

namespace drill_internal {

using Report = DrillReport;

struct PostgresqlDrillKeys {
  // PostgreSQL's server and client programs (postgres, psql, pg_amcheck),
  // of the major version the drilled backups ran; the server and the checks
  // run as postgresql_user (PostgreSQL refuses to run as root).
  std::string postgresql_bin_dir = "/usr/lib/postgresql/15/bin";
  std::string postgresql_user = "postgres";
};

// PostgreSQL: the digits of the first version number in a text ("15.8
// (Debian 15.8-1)", "postgres (PostgreSQL) 15.8") up to its first dot.
std::string pg_major(const std::string& text) {
  size_t i = 0;
  while (i < text.size() && !std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  size_t j = i;
  while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
  return text.substr(i, j - i);
}

// Lets the server's user pass through every directory of the confined root
// above `abs` (the restore makes the parents it was not given 0700, root's).
void open_path(const std::string& root, const std::string& abs) {
  ::chmod(root.c_str(), 0755);
  std::string at = root;
  for (const auto& part : fs::path(abs).relative_path().parent_path()) {
    at += "/" + part.string();
    struct stat st {};
    if (::lstat(at.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) ::chmod(at.c_str(), (st.st_mode & 07777) | 0111);
  }
}

std::string without_suffix(std::string text, const std::string& suffix) {
  if (text.ends_with(suffix)) text.resize(text.size() - suffix.size());
  return text;
}

// PostgreSQL (docs/drills.md): the server started on the backup in the
// sandbox as its whole filesystem (Confinement, as the HAProxy drill), as
// [drill] postgresql_user with no capability left, never archiving, never
// reaching a primary. A base backup is recovered exactly as a restore does
// (backup_label, tablespace_map, the WAL from its start to its consistent
// point read out of the repository and checked) with recovery_target =
// 'immediate', and promoted; a cold copy starts with crash recovery; a
// logical backup is replayed (globals, then pg_restore of each dump) into a
// server initdb made in the sandbox. Then: the system identifier, the LSN
// reached, every recorded database, and pg_amcheck over every relation
// (heap and B-tree; page checksums verified on read where they are on).
void drill_postgresql(const DrillDecl& d, const PostgresqlDrillKeys& dk, Sandbox& box, TaskContext& ctx, const repo::Snapshot& snap,
                      const std::string& restored, Report& rep, const std::atomic<bool>* cancel,
                      const std::function<void(const std::string&)>& phase) {
  namespace pg = postgresql;
  const nlohmann::json& meta = snap.component;
  const std::string mode = meta.is_object() ? meta.value("mode", "") : "";
  if (mode != "physical" && mode != "cold" && mode != "logical") {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot is not a PostgreSQL backup cairn recorded (mode '" + mode + "')");
    return;
  }
  struct passwd pwd {};
  struct passwd* pw = nullptr;
  char pwbuf[4096];
  if (::getpwnam_r(dk.postgresql_user.c_str(), &pwd, pwbuf, sizeof pwbuf, &pw) != 0 || !pw || pw->pw_uid == 0) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "[drill] postgresql_user '" + dk.postgresql_user +
                                                  "' is not a user of this host other than root; PostgreSQL's server runs as it");
    return;
  }
  const std::string bin = dk.postgresql_bin_dir;
  // A data directory is one major version's.
  const std::string recorded_major = pg_major(meta.value("server_version", ""));
  auto ver = box.run({bin + "/postgres", "--version"}, std::chrono::seconds(30), cancel);
  const std::string drill_major = ver.ok ? pg_major(ver.out) : "";
  if (!recorded_major.empty() && !rep.check("PostgreSQL major version of the drill's server", recorded_major,
                                            drill_major.empty() ? ver.why : drill_major, recorded_major == drill_major)) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "the backup ran PostgreSQL " + recorded_major + " and '" + bin + "/postgres' is " +
                                                  (drill_major.empty() ? "not a PostgreSQL server" : "PostgreSQL " + drill_major) +
                                                  ": set [drill] postgresql_bin_dir to PostgreSQL " + recorded_major + "'s programs");
    return;
  }

  // The root: the restored tree, with the host's libraries, shell and
  // PostgreSQL's shared files read-only at their paths, and the drill's own
  // directory (/.cairn-drill: the fetched WAL, the socket, the settings).
  ConfinedRoot root(restored);
  Confinement& conf = root.conf;
  conf.uid = pw->pw_uid;  // every capability dropped with root
  conf.gid = pw->pw_gid;
  root.host_basics();
  // restore_command runs through /bin/sh; the time zones and PostgreSQL's
  // share directory (timezonesets, initdb's templates).
  for (const char* p : {"/bin", "/usr/bin", "/usr/share/postgresql", "/usr/share/zoneinfo"}) root.bind(p, true);
  const std::string own = "/.cairn-drill";
  if (root.problem.empty()) root.problem = sandbox_mount_point(restored, own, true);
  std::string data_dir = mode == "logical" ? own + "/data" : meta.value("data_dir", "");
  if (std::string why; root.problem.empty() && mode != "logical" && !sandboxed_path(restored, data_dir, &why))
    root.problem = "the snapshot records the data directory '" + data_dir + "', which the drill does not use: " + why;
  if (root.problem.empty() && mode != "logical" && !fs::is_directory(fs::symlink_status(restored + data_dir)))
    root.problem = "the snapshot holds no data directory at '" + data_dir + "'";
  if (!root.problem.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the PostgreSQL drill's sandbox cannot be made: " + root.problem);
    return;
  }
  for (const char* sub : {"/wal", "/run"}) mkdir_p(restored + own + sub, 0700);
  {
    std::ofstream(restored + own + "/postgresql.conf")
        << "# a restore drill's server: its settings are on its command line (docs/drills.md)\n";
    std::ofstream(restored + own + "/pg_hba.conf")
        << "# a restore drill's server: its socket is in the sandbox only\nlocal all all trust\n";
    std::ofstream(restored + own + "/pg_ident.conf") << "";
  }
  const std::string su = meta.value("superuser", std::string("postgres"));
  const uid_t uid = pw->pw_uid;
  const gid_t gid = pw->pw_gid;

  auto t = Clock::now();
  phase("start");
  const plan::ParsedTarget target = [] {
    plan::ParsedTarget x;
    x.kind = v1::RecoveryTarget::KIND_IMMEDIATE;
    return x;
  }();
  if (mode == "physical") {
    // The WAL from the backup's start to its consistent point, read out of
    // the repository and checked as a restore reads it.
    const std::string want = meta.value("start_wal", std::string("?")) + " .. " + meta.value("stop_wal", std::string("?"));
    std::string found;
    pg::WalCatalog cat;
    pg::WalPlan wal;
    try {
      auto [code, why] = pg::plan_recovery(ctx, snap, target, restored + own + "/wal/.histories", &cat, &wal);
      if (code == v1::ERROR_CODE_OK) {
        struct Swap {  // the WAL fetch stops with the drill (its deadline included)
          TaskContext& c;
          const std::atomic<bool>* saved;
          ~Swap() { c.cancel = saved; }
        } swap{ctx, ctx.cancel};
        ctx.cancel = cancel;
        std::tie(code, why) = pg::fetch_wal(ctx, cat, wal, snap, target, restored + own + "/wal", ctx.memory_budget, nullptr);
      }
      found = code == v1::ERROR_CODE_OK ? want : without_suffix(why, "; nothing was changed");
    } catch (const Error& e) {
      found = std::string("cannot read the archived WAL: ") + e.what();
    }
    if (!rep.check("WAL to the backup's consistent point in the repository, whole", want, found, found == want)) return;
    struct stat owner {};
    owner.st_uid = uid;
    owner.st_gid = gid;
    try {
      pg::write_recovery_files(restored + data_dir, meta, target, wal.timeline, own + "/wal", owner);
    } catch (const std::exception& e) {
      rep.fail(v1::ERROR_CODE_IO_ERROR, std::string("preparing the recovery in the sandbox failed: ") + e.what());
      return;
    }
  }
  if (mode != "logical") {
    std::error_code ec;
    for (const char* f : {"/postmaster.pid", "/standby.signal"}) fs::remove(restored + data_dir + f, ec);
    give_tree(restored + data_dir, uid, gid);
    ::chmod((restored + data_dir).c_str(), 0700);
    open_path(restored, data_dir);
    if (meta.contains("tablespaces") && meta["tablespaces"].is_array())
      for (const auto& ts : meta["tablespaces"]) {
        const std::string path = ts.is_object() ? ts.value("path", "") : "";
        if (!sandboxed_path(restored, path, nullptr)) continue;  // the server finds no tablespace there: its check says so
        give_tree(restored + path, uid, gid);
        open_path(restored, path);
      }
  }
  give_tree(restored + own, uid, gid);
  open_path(restored, own + "/x");
  if (mode == "logical") {
    auto init = box.run({bin + "/initdb", "-D", data_dir, "-U", su, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"},
                        std::chrono::seconds(300), cancel, {}, &conf);
    if (!rep.check("initdb of the server the dumps are restored into", "done", init.ok ? std::string("done") : init.why, init.ok)) return;
  }
  // Everything that would reach outside the sandbox or run a command of the
  // backup's choosing is set on the command line, above any file's setting.
  std::vector<std::string> args = {bin + "/postgres", "-D", data_dir};
  for (const std::string& kv : {"config_file=" + own + "/postgresql.conf",
                                "hba_file=" + own + "/pg_hba.conf",
                                "ident_file=" + own + "/pg_ident.conf",
                                std::string("listen_addresses="),
                                std::string("port=5432"),
                                "unix_socket_directories=" + own + "/run",
                                std::string("unix_socket_permissions=0700"),
                                std::string("archive_mode=off"),
                                std::string("archive_command="),
                                std::string("archive_cleanup_command="),
                                std::string("recovery_end_command="),
                                mode == "physical" ? "restore_command=cp \"" + own + "/wal/%f\" \"%p\"" : std::string("restore_command="),
                                std::string("hot_standby=off"),
                                std::string("primary_conninfo="),
                                std::string("primary_slot_name="),
                                std::string("synchronous_standby_names="),
                                std::string("shared_preload_libraries="),
                                std::string("session_preload_libraries="),
                                std::string("local_preload_libraries="),
                                std::string("dynamic_shared_memory_type=mmap"),
                                std::string("huge_pages=off"),
                                std::string("logging_collector=off"),
                                std::string("log_destination=stderr"),
                                std::string("ssl=off"),
                                std::string("fsync=off"),
                                std::string("restart_after_crash=off"),
                                std::string("default_transaction_read_only=off"),
                                std::string("jit=off"),
                                std::string("cluster_name=cairn-drill")})
    args.insert(args.end(), {"-c", kv});
  const std::string log = box.dir() + "/postgresql.log";
  pid_t server = box.spawn(args, log, {}, {}, &conf);
  auto psql = [&](const std::string& db, const std::string& sql, std::chrono::milliseconds timeout) {
    return box.run(
        {bin + "/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", own + "/run", "-p", "5432", "-U", su, "-d", db, "-c", sql},
        timeout, cancel, {}, &conf);
  };
  auto trimmed = [](std::string x) {
    while (!x.empty() && (x.back() == '\n' || x.back() == ' ')) x.pop_back();
    return x;
  };
  const std::string ready_check = mode == "physical" ? "PostgreSQL recovered to the backup's consistent point and promoted"
                                  : mode == "cold"   ? "PostgreSQL recovered the stopped server's files and serves"
                                                     : "PostgreSQL serving";
  const std::string ready_word = mode == "physical" ? "promoted" : "serving";
  if (!wait_started(d, box, server, log, "PostgreSQL", ready_check, ready_word, cancel, rep, t, [&]() -> std::string {
        auto r = psql("postgres", "SELECT pg_is_in_recovery()", std::chrono::seconds(10));
        if (!r.ok) return r.why;
        return trimmed(r.out) == "f" ? "" : "still in recovery";
      }))
    return;

  t = Clock::now();
  phase("check");
  if (mode == "logical") {
    const std::string dump_dir = meta.value("dump_dir", "");
    give_tree(restored + dump_dir, uid, gid);
    open_path(restored, dump_dir + "/x");
    // Roles and tablespaces; a role that exists already (the superuser
    // initdb made) is an error psql reports and goes past.
    auto g =
        box.run({bin + "/psql", "-X", "-q", "-h", own + "/run", "-p", "5432", "-U", su, "-d", "postgres", "-f", dump_dir + "/globals.sql"},
                std::chrono::seconds(d.deadline_seconds), cancel, {}, &conf);
    rep.check("roles and tablespaces (globals.sql) replayed", "done", g.ok ? std::string("done") : g.why, g.ok);
    if (meta.contains("dumps") && meta["dumps"].is_object())
      for (const auto& [file, name] : meta["dumps"].items()) {
        if (!name.is_string() || file.find('/') != std::string::npos) continue;
        // As a restore runs it (--clean: initdb made 'postgres' already).
        auto r = box.run({bin + "/pg_restore", "--clean", "--if-exists", "--create", "--exit-on-error", "-h", own + "/run", "-p", "5432",
                          "-U", su, "-d", "template1", dump_dir + "/" + file},
                         std::chrono::seconds(d.deadline_seconds), cancel, {}, &conf);
        rep.check("database '" + name.get<std::string>() + "' restored from its dump", "restored", r.ok ? std::string("restored") : r.why,
                  r.ok);
      }
  } else if (mode == "physical") {
    auto r = psql("postgres", "SELECT system_identifier::text || ' ' || pg_current_wal_lsn()::text FROM pg_control_system()",
                  std::chrono::seconds(30));
    std::istringstream in(trimmed(r.out));
    std::string sysid, lsn_text;
    in >> sysid >> lsn_text;
    rep.check("database system identifier", meta.value("system_identifier", ""), r.ok ? sysid : r.why,
              r.ok && sysid == meta.value("system_identifier", ""));
    uint64_t lsn = 0, stop_lsn = 0;
    bool parsed = plan::parse_lsn(lsn_text, &lsn) && plan::parse_lsn(meta.value("stop_lsn", ""), &stop_lsn);
    rep.check("WAL position reached, at least the backup's end", ">= " + meta.value("stop_lsn", std::string("?")), r.ok ? lsn_text : r.why,
              parsed && lsn >= stop_lsn);
  }
  // Every database the backup recorded is there (a cold copy records none).
  if (meta.contains("databases") && meta["databases"].is_array()) {
    auto r = psql("postgres", "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname", std::chrono::seconds(30));
    std::set<std::string> have;
    std::istringstream in(r.out);
    for (std::string line; std::getline(in, line);) have.insert(line);
    std::vector<std::string> want, found;
    if (meta.contains("databases") && meta["databases"].is_array())
      for (const auto& db : meta["databases"])
        if (db.is_string()) {
          want.push_back(db.get<std::string>());
          if (have.count(db.get<std::string>())) found.push_back(db.get<std::string>());
        }
    rep.check("every database the backup recorded", want, r.ok ? nlohmann::json(found) : nlohmann::json(r.why), r.ok && want == found);
  }
  // pg_amcheck over every relation of every database (amcheck installed in
  // the sandbox's copy where missing).
  auto am = box.run({bin + "/pg_amcheck", "-h", own + "/run", "-p", "5432", "-U", su, "--all", "--install-missing"},
                    std::chrono::seconds(d.deadline_seconds), cancel, {}, &conf);
  std::string am_found = "no corruption";
  if (!am.ok) {
    std::string first;
    std::istringstream in(am.out);
    int n = 0;
    for (std::string line; std::getline(in, line) && n < 4; ++n) first += (first.empty() ? "" : " | ") + line;
    am_found = first.empty() ? am.why : first + " (pg_amcheck " + am.why + ")";
  }
  auto cs = psql("postgres", "SELECT current_setting('data_checksums')", std::chrono::seconds(30));
  rep.check(std::string("pg_amcheck --all (heap and B-tree indexes; page checksums ") +
                (cs.ok && trimmed(cs.out) == "on" ? "on, verified on read)" : "off)"),
            "no corruption", am_found, am.ok);
  rep.phases["check"] = seconds_since(t);
  box.run({bin + "/pg_ctl", "-D", data_dir, "-m", "immediate", "-w", "-t", "30", "stop"}, std::chrono::seconds(40), cancel, {}, &conf);
}

}  // namespace drill_internal

namespace postgresql {

namespace {

// PostgreSQL runs with the restored tree as its root: a link there resolves
// inside it.
class PostgresqlDrill : public DriverDrill {
 public:
  drill_internal::PostgresqlDrillKeys keys_;
  nlohmann::json keys() const override {
    return {{"postgresql_bin_dir", keys_.postgresql_bin_dir}, {"postgresql_user", keys_.postgresql_user}};
  }
  std::string tools_missing(const DrillDecl&) const override {
    if (::getpwnam(keys_.postgresql_user.c_str()) == nullptr)
      return "[drill] postgresql_user '" + keys_.postgresql_user + "' is not a user of this host";
    for (const char* tool : {"/postgres", "/psql", "/pg_amcheck", "/pg_restore", "/initdb", "/pg_ctl"})
      if (::access((keys_.postgresql_bin_dir + tool).c_str(), X_OK) != 0)
        return "'" + keys_.postgresql_bin_dir + tool + "' ([drill] postgresql_bin_dir) is not executable";
    return {};
  }
  // Twice the snapshot + 128 MiB, and a base backup's WAL from its start to its end.
  uint64_t disk_needed(const std::vector<repo::Snapshot>& snaps) const override {
    uint64_t need = DriverDrill::disk_needed(snaps);
    const repo::Snapshot& snap = snaps.front();
    if (uint64_t start = 0, stop = 0; snap.component.is_object() && plan::parse_lsn(snap.component.value("start_lsn", ""), &start) &&
                                      plan::parse_lsn(snap.component.value("stop_lsn", ""), &stop) && stop >= start)
      need += (stop / kWalSegmentSize - start / kWalSegmentSize + 2) * kWalSegmentSize;
    return need;
  }
  bool runs_on_host_files() const override { return false; }
  void run(DrillRun& r) const override {
    drill_internal::drill_postgresql(r.decl, keys_, r.box, r.ctx, r.snaps.front(), r.roots.front(), r.rep, r.cancel, r.phase);
  }
};

}  // namespace

std::shared_ptr<const DriverDrill> make_drill(TableReader* dr) {
  auto d = std::make_shared<PostgresqlDrill>();
  if (!dr) return d;
  d->keys_.postgresql_bin_dir = dr->string_or("postgresql_bin_dir", d->keys_.postgresql_bin_dir);
  require_absolute(*dr, "postgresql_bin_dir", d->keys_.postgresql_bin_dir);
  d->keys_.postgresql_user = dr->string_or("postgresql_user", d->keys_.postgresql_user);
  if (d->keys_.postgresql_user.empty() || d->keys_.postgresql_user == "root")
    dr->fail("postgresql_user", "must name the user PostgreSQL runs as in a drill's sandbox, not root (it refuses to run as root)");
  return d;
}

}  // namespace postgresql

}  // namespace cairn::agent
