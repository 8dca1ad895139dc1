// The HAProxy drill (docs/drills.md): started in a drill's sandbox
// (agent/sandbox/sandbox.h) on the restored snapshot and checked against
// what the backup recorded. Its tools are its own [drill] keys.
#include "agent/drivers/haproxy/drill.h"

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
#include "agent/drivers/haproxy/cfg_parser.h"
#include "agent/drivers/haproxy/haproxy_driver.h"
#include "agent/drivers/haproxy/runtime.h"
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

struct HaproxyDrillKeys {
  std::string haproxy = "haproxy";
};

// HAProxy's directives that run code of their own (Lua, external health
// checks, programs, an OpenSSL engine or provider): a drill starts no
// configuration that has one, since `haproxy -c` alone would run it.
bool haproxy_runs_code(const std::vector<haproxy::Word>& w, const std::string& section) {
  static const std::set<std::string> kCode = {
      "lua-load",     "lua-load-per-thread", "lua-prepend-path", "external-check",      "ssl-engine",
      "ssl-provider", "ssl-provider-path",   "program",          "insecure-fork-wanted"};
  if (w.empty()) return false;
  if (kCode.count(w[0].text)) return true;
  // HAProxy expands environment variables (which the configuration itself
  // can set: setenv, presetenv) before it reads a keyword: a keyword built
  // from one is read here as HAProxy will only once expanded, so it is
  // taken as code (a drill never runs what it cannot check).
  if (!w[0].env.empty() || (w[0].text == "option" && w.size() > 1 && !w[1].env.empty())) return true;
  if (w[0].text == "option" && w.size() > 1 && w[1].text == "external-check") return true;
  return section == "program";
}
// Why `haproxy -c` refused a configuration: its [ALERT] lines that name a
// problem (the one naming the missing map, certificate or keyword), not
// only its last line, the summary ("Error(s) found in configuration file").
std::string haproxy_alerts(const Sandbox::Ran& r) {
  std::string out;
  int n = 0;
  std::istringstream in(r.err + "\n" + r.out);
  for (std::string line; std::getline(in, line);) {
    auto at = line.find("[ALERT]");
    if (at == std::string::npos) continue;
    // "[ALERT]    (1234) : config : parsing [f:9] : ..." -> "parsing [f:9] : ..."
    auto colon = line.find(" : ", at);
    std::string what = colon == std::string::npos ? line.substr(at) : line.substr(colon + 3);
    if (what.rfind("config : ", 0) == 0) what = what.substr(9);
    if (what.find("found in configuration file") != std::string::npos || what.find("Fatal errors found") != std::string::npos) continue;
    if (++n > 5) {
      out += "; ...";
      break;
    }
    out += (out.empty() ? "" : "; ") + what;
  }
  return out.empty() ? r.why : r.why.substr(0, r.why.find(':')) + ": " + out;
}

// HAProxy: the restored configuration checked (`haproxy -c`) and started with
// the sandbox as its whole filesystem (Confinement), so it reads the restored
// files at the paths it names and writes only into the sandbox, on the
// addresses it names (the drill's network namespace accepts any local
// address); the saved runtime state set back over a stats socket of the
// drill's own, as a restore would; then every frontend open, every recorded
// server's forced state and weight, every saved map and stick table, and
// every referenced certificate loaded.
void drill_haproxy(const DrillDecl& d, const HaproxyDrillKeys& dk, Sandbox& box, const repo::Snapshot& snap, const std::string& restored,
                   Report& rep, const std::atomic<bool>* cancel, const std::function<void(const std::string&)>& phase) {
  const nlohmann::json& rec = snap.component;
  std::vector<std::string> config;
  if (rec.contains("config") && rec["config"].is_array())
    for (const auto& c : rec["config"])
      if (c.is_string() && c.get<std::string>().starts_with("/") && c.get<std::string>().find("/../") == std::string::npos)
        config.push_back(c.get<std::string>());
  if (config.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED,
             "the backup recorded no HAProxy configuration paths (backups taken before cairn recorded them); take a new backup to drill");
    return;
  }
  haproxy::ParseOptions po;
  po.read_root = restored;
  haproxy::ParseResult parsed = haproxy::parse_config(config, po);
  if (!parsed.errors.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the restored HAProxy configuration cannot be read: " + parsed.errors.front());
    return;
  }
  // Code of its own refused; the directories it writes in made.
  std::string code;
  std::vector<std::string> dirs = {"/tmp", "/run", "/var/run"};
  for (const auto& f : parsed.files) {
    if (f.crt_list) continue;
    std::istringstream in(read_text(restored + f.path));
    std::string section;
    uint32_t n = 0;
    for (std::string raw; std::getline(in, raw);) {
      ++n;
      auto l = haproxy::tokenize_line(raw);
      const auto& w = l.words;
      if (w.empty()) continue;
      static const std::set<std::string> kSections = {"global",   "defaults", "frontend", "backend",     "listen", "peers", "resolvers",
                                                      "userlist", "program",  "mailers",  "http-errors", "ring",   "cache", "log-forward"};
      if (kSections.count(w[0].text)) section = w[0].text;
      if (code.empty() && haproxy_runs_code(w, section)) code = "'" + w[0].text + "' at " + f.path + ":" + std::to_string(n);
      auto unix_path = [](const std::string& a) -> std::string {
        if (a.starts_with("/")) return a;
        if (a.starts_with("unix@/")) return a.substr(5);
        return {};
      };
      if (w[0].text == "chroot" && w.size() > 1 && w[1].text.starts_with("/")) dirs.push_back(w[1].text);
      if (w[0].text == "pidfile" && w.size() > 1 && w[1].text.starts_with("/")) dirs.push_back(parent_of(w[1].text));
      if (w[0].text == "stats" && w.size() > 2 && w[1].text == "socket" && !unix_path(w[2].text).empty())
        dirs.push_back(parent_of(unix_path(w[2].text)));
      if (w[0].text == "bind" && w.size() > 1 && !unix_path(w[1].text).empty()) dirs.push_back(parent_of(unix_path(w[1].text)));
    }
  }
  if (!rep.check("runs no code of its own (Lua, external checks, programs, SSL engines)", "none", code.empty() ? "none" : code,
                 code.empty())) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "the restored HAProxy configuration runs code of its own (" + code +
                                                  "): a drill does not start it, since even `haproxy -c` would run that code");
    return;
  }

  // The root: the restored tree, with the host's libraries and haproxy's
  // binary mounted read-only at their paths.
  const std::string exe = platform::program_path(dk.haproxy);
  if (exe.empty()) throw Error(Errc::not_found, "'" + dk.haproxy + "' is not an executable on the agent's PATH");
  ConfinedRoot box_root(restored);
  Confinement& conf = box_root.conf;
  // CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_SETGID, CAP_SETUID,
  // CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_SYS_RESOURCE: bind, raise its
  // file limit, chroot and drop to its user; nothing that mounts, traces,
  // kills another user's process or reaches a device.
  conf.keep_caps = {CAP_CHOWN,  CAP_DAC_OVERRIDE,     CAP_FOWNER,     CAP_SETGID,
                    CAP_SETUID, CAP_NET_BIND_SERVICE, CAP_SYS_CHROOT, CAP_SYS_RESOURCE};
  box_root.host_basics();
  box_root.bind(exe, false);
  std::string& problem = box_root.problem;
  for (const auto& dir : dirs)
    if (problem.empty()) problem = sandbox_mount_point(restored, dir, true, false);
  const std::string own = "/.cairn-drill";
  if (problem.empty()) problem = sandbox_mount_point(restored, own, true);
  if (!problem.empty()) {
    rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the HAProxy drill's sandbox cannot be made: " + problem);
    return;
  }
  {
    std::ofstream extra(restored + own + "/stats.cfg");
    extra << "# added by the drill: a stats socket of its own (docs/drills.md)\nglobal\n    stats socket " << own
          << "/admin.sock mode 600 level admin\n";
  }
  // Any address the configuration binds, in this namespace only.
  for (const char* knob : {"/proc/sys/net/ipv4/ip_nonlocal_bind", "/proc/sys/net/ipv6/ip_nonlocal_bind"}) write_text(knob, "1");
  std::vector<std::string> args = {exe};
  for (const auto& c : config) args.insert(args.end(), {"-f", c});
  args.insert(args.end(), {"-f", own + "/stats.cfg"});

  auto t = Clock::now();
  phase("start");
  std::vector<std::string> check_args = args;
  check_args.insert(check_args.begin() + 1, "-c");
  auto checked = box.run(check_args, std::chrono::seconds(60), cancel, {}, &conf);
  if (!rep.check("haproxy -c", "valid", checked.ok ? std::string("valid") : haproxy_alerts(checked), checked.ok)) {
    rep.phases["start"] = seconds_since(t);
    return;
  }
  args.insert(args.begin() + 1, "-db");  // in the foreground whatever 'daemon' says: the drill holds its PID
  const std::string log = box.dir() + "/haproxy.log";
  pid_t server = box.spawn(args, log, {}, {}, &conf);
  // The socket's path can exceed a Unix socket's 107 bytes: reached through
  // a descriptor of its directory.
  int own_fd = ::open((restored + own).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (own_fd < 0) throw_errno("opening", restored + own, errno);
  struct CloseAtEnd {
    int fd;
    ~CloseAtEnd() { ::close(fd); }
  } close_own{own_fd};
  platform::SocketAddress sock;
  sock.unix_path = "/proc/self/fd/" + std::to_string(own_fd) + "/admin.sock";
  auto cli = [&](const std::string& command) { return platform::socket_exchange(sock, command + "\n", std::chrono::seconds(10)); };
  std::string version;
  if (!wait_started(d, box, server, log, "HAProxy", "HAProxy serving", "serving", cancel, rep, t, [&]() -> std::string {
        auto info = haproxy::parse_info(platform::socket_exchange(sock, "show info\n", std::chrono::seconds(2)));
        version = info["Version"];
        return version.empty() ? "the stats socket answers without a version" : "";
      }))
    return;

  t = Clock::now();
  phase("check");
  // The runtime state back, as a restore sets it.
  const std::string runtime_path = rec.value("runtime_path", std::string());
  haproxy::RuntimeState saved;
  bool have_runtime = false;
  if (!runtime_path.empty() && fs::exists(restored + runtime_path + "/runtime.json")) {
    saved = haproxy::runtime_from_json(nlohmann::json::parse(read_text(restored + runtime_path + "/runtime.json"), nullptr, false));
    have_runtime = true;
    auto applied = haproxy::apply_runtime(saved, cli);
    rep.check("runtime state set back (commands)", applied.commands, applied.commands - applied.problems.size(), applied.problems.empty());
    for (size_t i = 0; i < applied.problems.size() && i < 5; ++i)
      rep.fail(v1::ERROR_CODE_VERIFY_FAILED, applied.problems[i].first, applied.problems[i].second);
  } else if (rec.contains("server_state")) {
    rep.check("runtime state in the snapshot", runtime_path, "absent", false);
  }
  // Every frontend open: `show stat`'s FRONTEND rows.
  {
    std::istringstream in(cli("show stat"));
    std::string header;
    std::getline(in, header);
    std::vector<std::string> cols;
    {
      std::istringstream h(header.starts_with("# ") ? header.substr(2) : header);
      for (std::string c; std::getline(h, c, ',');) cols.push_back(c);
    }
    auto col = [&](const std::string& name) { return size_t(std::find(cols.begin(), cols.end(), name) - cols.begin()); };
    const size_t sv = col("svname"), st = col("status"), px = col("pxname");
    int64_t frontends = 0, open = 0;
    std::string closed;
    for (std::string row; std::getline(in, row);) {
      std::vector<std::string> f;
      std::istringstream r(row);
      for (std::string c; std::getline(r, c, ',');) f.push_back(c);
      if (f.size() <= std::max(sv, st) || f[sv] != "FRONTEND") continue;
      ++frontends;
      if (f[st] == "OPEN")
        ++open;
      else if (px < f.size())
        closed += (closed.empty() ? "" : ", ") + f[px] + " " + f[st];
    }
    rep.check("frontends open", frontends, closed.empty() ? nlohmann::json(open) : nlohmann::json(closed),
              frontends > 0 && open == frontends);
  }
  // The servers' forced states and weights the backup recorded.
  if (rec.contains("server_state") && rec["server_state"].is_array()) {
    auto diffs = haproxy::compare_servers(rec, haproxy::parse_servers_state(cli("show servers state")));
    rep.check("servers' forced state and weight as recorded", rec["server_state"].size(), rec["server_state"].size() - diffs.size(),
              diffs.empty());
    for (size_t i = 0; i < diffs.size() && i < 5; ++i) rep.reasons.push_back(diffs[i]);
  }
  if (have_runtime) {
    size_t want = 0, found = 0;
    std::string extra;  // a map holding entries the backup did not record
    for (const auto& [file, entries] : saved.maps) {
      auto now = haproxy::parse_map_dump(cli("show map " + haproxy::cli_escape(file)));
      auto a = entries;
      std::sort(a.begin(), a.end());
      std::sort(now.begin(), now.end());
      want += a.size();
      for (const auto& e : a)
        if (std::binary_search(now.begin(), now.end(), e)) ++found;
      if (now.size() > a.size() && extra.empty()) extra = file;
    }
    rep.check("map entries as recorded", want, found, found == want && extra.empty());
    if (!extra.empty()) rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "map '" + extra + "' holds entries the backup did not record", extra);
    size_t keys = 0, present = 0;
    for (const auto& [table, entries] : saved.tables) {
      std::set<std::string> now;
      for (const auto& e : haproxy::parse_table_dump(cli("show table " + haproxy::cli_escape(table.name)))) now.insert(e.key);
      keys += entries.size();
      for (const auto& e : entries) present += now.count(e.key);
    }
    rep.check("stick-table entries as recorded", keys, present, present == keys);
  }
  // Every certificate the configuration names, loaded.
  {
    std::set<std::string> loaded;
    std::istringstream in(cli("show ssl cert"));
    for (std::string line; std::getline(in, line);)
      if (!line.empty() && line[0] != '#') loaded.insert(line);
    std::set<std::string> want;
    for (const auto& r : parsed.refs) {
      if (r.kind != haproxy::RefKind::crt || r.path.empty()) continue;
      std::error_code ec;
      if (fs::is_directory(restored + r.path, ec)) {
        for (const auto& e : fs::directory_iterator(restored + r.path, ec)) {
          const std::string name = e.path().filename().string();
          if (!e.is_regular_file() || name.ends_with(".key") || name.ends_with(".ocsp") || name.ends_with(".issuer") ||
              name.ends_with(".sctl"))
            continue;
          want.insert(r.path + "/" + name);
        }
      } else {
        want.insert(r.path);
      }
    }
    std::string missing;
    size_t found = 0;
    for (const auto& w : want) {
      if (loaded.count(w))
        ++found;
      else if (missing.size() < 300)
        missing += (missing.empty() ? "" : ", ") + w;
    }
    rep.check("certificates loaded", want.size(), found, found == want.size());
    if (!missing.empty()) rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "haproxy did not load the certificate(s) " + missing);
  }
  rep.checks.push_back(
      {{"name", "haproxy version"}, {"expected", rec.value("haproxy_version", std::string())}, {"found", version}, {"ok", true}});
  rep.phases["check"] = seconds_since(t);
}

}  // namespace drill_internal

namespace haproxy {

namespace {

// HAProxy runs with the restored tree as its whole filesystem: a link there
// resolves inside it.
class HaproxyDrill : public DriverDrill {
 public:
  drill_internal::HaproxyDrillKeys keys_;
  nlohmann::json keys() const override { return {{"haproxy", keys_.haproxy}}; }
  std::string tools_missing(const DrillDecl&) const override {
    if (!platform::find_program(keys_.haproxy)) return "'" + keys_.haproxy + "' ([drill] haproxy) is not found";
    return {};
  }
  bool runs_on_host_files() const override { return false; }
  void run(DrillRun& r) const override {
    drill_internal::drill_haproxy(r.decl, keys_, r.box, r.snaps.front(), r.roots.front(), r.rep, r.cancel, r.phase);
  }
};

}  // namespace

std::shared_ptr<const DriverDrill> make_drill(TableReader* dr) {
  auto d = std::make_shared<HaproxyDrill>();
  if (dr) d->keys_.haproxy = dr->string_or("haproxy", d->keys_.haproxy);
  return d;
}

}  // namespace haproxy

}  // namespace cairn::agent
