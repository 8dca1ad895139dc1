#include "agent/drivers/haproxy/haproxy_driver.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "agent/platform/socket_client.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::haproxy {

namespace v1 = cairn::v1;

namespace {

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

// The files haproxy 2.6 loads beside a certificate (ssl-load-extra-files all):
// its key, OCSP response, issuer and SCTL, and the bundle members
// <crt>.rsa/.ecdsa/.dsa when <crt> itself does not exist.
std::vector<std::string> certificate_files(const std::string& root, const std::string& crt) {
  std::vector<std::string> out;
  auto with_extras = [&](const std::string& c) {
    out.push_back(c);
    for (const char* ext : {".key", ".ocsp", ".issuer", ".sctl"})
      if (exists(root + c + ext)) out.push_back(c + ext);
  };
  if (exists(root + crt)) {
    with_extras(crt);
    return out;
  }
  for (const char* b : {".rsa", ".ecdsa", ".dsa"})
    if (exists(root + crt + b)) with_extras(crt + b);
  return out;
}

const size_t kMaxRecordedServers = 2000;  // metadata stays well under 64 KiB

long long number_or_zero(const std::map<std::string, std::string>& info, const std::string& key) {
  auto it = info.find(key);
  if (it == info.end()) return 0;
  try {
    return std::stoll(it->second);
  } catch (const std::exception&) {
    return 0;
  }
}

}  // namespace

HaproxyDriver::HaproxyDriver(std::string component, Settings settings) : component_(std::move(component)), settings_(std::move(settings)) {}

DriverCaps HaproxyDriver::capabilities() const {
  DriverCaps c;
  c.backup = true;
  c.restore = true;
  c.safety_backup = true;
  c.needs_service_stop = false;
  c.restore_stops_service = false;  // a reload: the service keeps serving
  c.scope = "node";
  return c;
}

std::string HaproxyDriver::runtime_snapshot_path() const {
  std::string safe;
  for (char c : component_) safe += (std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.') ? c : '_';
  return settings_.staging_dir + "/cairn-haproxy-" + safe + ".runtime";
}

std::string HaproxyDriver::cli(const std::string& command, std::chrono::milliseconds timeout) const {
  platform::SocketAddress a;
  a.unix_path = settings_.stats_socket;
  return platform::socket_exchange(a, command + "\n", timeout);
}

FileSet HaproxyDriver::files(const std::string& read_root) const {
  FileSet fs;
  ParseOptions o;
  o.read_root = read_root;
  o.working_dir = settings_.working_dir;
  fs.parsed = parse_config(settings_.config, o);
  fs.warnings = fs.parsed.warnings;
  for (const auto& e : fs.parsed.errors) fs.missing.push_back(make_reason(v1::ERROR_CODE_ITEM_SKIPPED, e));

  std::vector<std::string> want;
  for (const auto& c : settings_.config) want.push_back(c);
  for (const auto& x : settings_.extra_files) want.push_back(x);
  std::set<std::string> seen_missing;
  for (const auto& r : fs.parsed.refs) {
    std::vector<std::string> paths = r.kind == RefKind::crt ? certificate_files(read_root, r.path) : std::vector<std::string>{r.path};
    if (paths.empty() || !exists(read_root + paths[0])) {
      if (!r.optional && seen_missing.insert(r.path).second)
        fs.missing.push_back(make_reason(v1::ERROR_CODE_ITEM_SKIPPED,
                                         std::string(ref_kind_name(r.kind)) + " '" + r.path + "' (" + r.keyword + " at " + r.file + ":" +
                                             std::to_string(r.line) + ") does not exist",
                                         r.path));
      continue;
    }
    for (const auto& p : paths) want.push_back(p);
  }
  // A symbolic link is stored as a link: what it points to is stored too
  // (haproxy reads through it).
  if (read_root.empty()) {
    size_t n = want.size();
    for (size_t i = 0; i < n; ++i) {
      struct stat st {};
      if (::lstat(want[i].c_str(), &st) != 0 || !S_ISLNK(st.st_mode)) continue;
      if (char* rp = ::realpath(want[i].c_str(), nullptr)) {
        want.push_back(rp);
        std::free(rp);
      }
    }
  }
  // Declared entries that are missing are reported once (parse errors name
  // the config ones); a path below another one is already in it.
  std::sort(want.begin(), want.end());
  want.erase(std::unique(want.begin(), want.end()), want.end());
  for (const auto& p : want) {
    if (!exists(read_root + p)) {
      bool declared_extra = std::find(settings_.extra_files.begin(), settings_.extra_files.end(), p) != settings_.extra_files.end();
      if (declared_extra) fs.missing.push_back(make_reason(v1::ERROR_CODE_ITEM_SKIPPED, "extra file '" + p + "' does not exist", p));
      continue;
    }
    if (!fs.present.empty() && path_within(p, fs.present.back())) continue;  // sorted: a parent comes first
    bool covered = false;
    for (const auto& q : fs.present) covered = covered || path_within(p, q);
    if (!covered) fs.present.push_back(p);
  }
  return fs;
}

std::vector<std::string> HaproxyDriver::config_warnings() const {
  std::vector<std::string> out;
  std::string who = "component '" + component_ + "': ";
  if (::access(settings_.haproxy.c_str(), X_OK) != 0)
    out.push_back(who + "'" + settings_.haproxy + "' is not an executable (set 'haproxy'); restores cannot check a configuration");
  if (settings_.service.empty() && settings_.service.reload_command.empty())
    out.push_back(who + "no 'service' declared: restores are refused (nothing can reload haproxy)");
  FileSet fs = files();
  for (const auto& w : fs.warnings) out.push_back(who + w);
  for (const auto& m : fs.missing) out.push_back(who + m.detail());
  struct stat st {};
  if (::stat(settings_.stats_socket.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode))
    out.push_back(who + "stats socket '" + settings_.stats_socket + "' does not exist now");
  if (::access(settings_.staging_dir.c_str(), W_OK | X_OK) != 0)
    out.push_back(who + "staging_dir '" + settings_.staging_dir + "' is not a writable directory (" + std::strerror(errno) + ")");
  return out;
}

std::vector<v1::Reason> HaproxyDriver::preflight(const v1::Task& task) const {
  std::vector<v1::Reason> out;
  auto refuse = [&](const std::string& why) { out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, why)); };
  if (task.kind() == v1::TASK_KIND_RESTORE && !task.options().restore_target().empty()) {
    out.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + component_ + "' (haproxy) declares no restore target '" +
                                                                   task.options().restore_target() + "'"));
    return out;
  }
  // The configuration must be readable: without it nothing can be backed up.
  ParseOptions o;
  o.working_dir = settings_.working_dir;
  ParseResult p = parse_config(settings_.config, o);
  if (task.kind() == v1::TASK_KIND_BACKUP && p.files.empty())
    refuse("the configuration of component '" + component_ + "' cannot be read: " + (p.errors.empty() ? "no file" : p.errors[0]));
  try {
    std::string level = cli("show cli level", std::chrono::seconds(5));
    while (!level.empty() && (level.back() == '\n' || level.back() == ' ')) level.pop_back();
    if (level != "admin")
      refuse("the stats socket '" + settings_.stats_socket + "' answers at level '" + level + "'; declare it with 'stats socket " +
             settings_.stats_socket + " level admin' in haproxy's global section");
  } catch (const Error& e) {
    refuse("haproxy's stats socket is not reachable: " + std::string(e.what()) + "; is haproxy running, with 'stats socket " +
           settings_.stats_socket + " level admin' in its global section?");
  }
  if (::access(settings_.staging_dir.c_str(), W_OK | X_OK) != 0)
    refuse("staging_dir '" + settings_.staging_dir + "' is not a writable directory (" + std::strerror(errno) +
           "): the runtime state and restores are staged there");
  if (task.kind() == v1::TASK_KIND_RESTORE) {
    if (::access(settings_.haproxy.c_str(), X_OK) != 0)
      refuse("'" + settings_.haproxy + "' cannot be run (" + std::strerror(errno) +
             "); a restored configuration is checked with 'haproxy -c' first: set 'haproxy' to its path");
    if (settings_.service.unit.empty() && settings_.service.reload_command.empty() && settings_.service.start_command.empty())
      refuse("component '" + component_ + "' declares no 'service': a restore must reload haproxy");
    else if (auto p = platform::Service(settings_.service).problem(platform::ServiceUse::reload); !p.empty())
      refuse("a restore reloads haproxy, but " + p);
  }
  return out;
}

RuntimeState HaproxyDriver::read_runtime() const {
  RuntimeState r;
  r.servers_state = cli("show servers state");
  (void)parse_servers_state(r.servers_state);  // refuses a version this agent cannot set back
  for (const auto& t : parse_table_list(cli("show table")))
    r.tables.emplace_back(t, parse_table_dump(cli("show table " + cli_escape(t.name))));
  for (const auto& m : parse_map_list(cli("show map"))) r.maps.emplace_back(m, parse_map_dump(cli("show map " + cli_escape(m))));
  return r;
}

void HaproxyDriver::snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) {
  (void)purpose;  // the safety copy of a restore is the same set of files and state
  if (ctx.progress) {
    WorkProgress w;
    w.phase = purpose.safety ? v1::PHASE_SAFETY_BACKUP : v1::PHASE_SNAPSHOT;
    w.current = "reading the configuration";
    ctx.progress(w);
  }
  FileSet fs = files();
  if (fs.parsed.files.empty())
    throw Error(Errc::not_found, "the configuration of component '" + component_ +
                                     "' cannot be read: " + (fs.parsed.errors.empty() ? std::string("no file") : fs.parsed.errors[0]));
  for (const auto& p : fs.present) sink.add_path(p);
  for (const auto& m : fs.missing) sink.add_reason(m);
  for (const auto& w : fs.warnings)
    if (ctx.note) ctx.note(w);

  nlohmann::json meta;
  meta["files"] = fs.present.size();  // the paths are the snapshot's own
  meta["stats_socket"] = settings_.stats_socket;
  // What a restore drill starts (docs/drills.md): the configuration as
  // `haproxy -f` reads it, and where the runtime state lies in the snapshot.
  meta["config"] = settings_.config;
  meta["runtime_path"] = runtime_snapshot_path();
  try {
    auto info = parse_info(cli("show info"));
    meta["haproxy_version"] = info["Version"];
    meta["pid"] = number_or_zero(info, "Pid");
    meta["uptime_sec"] = number_or_zero(info, "Uptime_sec");
    RuntimeState rt = read_runtime();
    auto servers = parse_servers_state(rt.servers_state);
    size_t entries = 0, map_entries = 0;
    for (const auto& t : rt.tables) entries += t.second.size();
    for (const auto& m : rt.maps) map_entries += m.second.size();
    meta["servers"] = servers.size();
    meta["tables"] = rt.tables.size();
    meta["table_entries"] = entries;
    meta["maps"] = rt.maps.size();
    meta["map_entries"] = map_entries;
    nlohmann::json ss = nlohmann::json::array();
    for (size_t i = 0; i < servers.size() && i < kMaxRecordedServers; ++i)
      ss.push_back({servers[i].backend, servers[i].server, servers[i].forced(), servers[i].weight});
    meta["server_state"] = ss;
    if (servers.size() > kMaxRecordedServers) meta["server_state_truncated"] = true;

    // Stored at a fixed path from a per-run directory, removed once stored.
    std::string tmpl = settings_.staging_dir + "/cairn-haproxy-run.XXXXXX";
    if (!::mkdtemp(tmpl.data())) throw_errno("create a staging directory in", settings_.staging_dir, errno);
    std::string stage = tmpl;
    sink.on_done([stage] {
      std::error_code ec;
      std::filesystem::remove_all(stage, ec);
    });
    std::string js = runtime_to_json(rt).dump(1);
    write_file_atomic(stage + "/runtime.json", std::span(reinterpret_cast<const uint8_t*>(js.data()), js.size()), 0600);
    write_file_atomic(stage + "/servers-state",
                      std::span(reinterpret_cast<const uint8_t*>(rt.servers_state.data()), rt.servers_state.size()), 0600);
    sink.add_path(stage, runtime_snapshot_path());
  } catch (const Error& e) {
    sink.add_reason(make_reason(v1::ERROR_CODE_ITEM_SKIPPED,
                                std::string("haproxy's runtime state (servers, stick tables, maps) is not in the snapshot: ") + e.what()));
  }
  sink.set_metadata(meta);
}

std::vector<v1::Reason> compare_servers(const nlohmann::json& recorded, const std::vector<ServerState>& now) {
  std::vector<v1::Reason> out;
  if (!recorded.is_object() || !recorded.contains("server_state") || !recorded["server_state"].is_array()) return out;
  std::map<std::string, const ServerState*> by;
  for (const auto& s : now) by[s.backend + "/" + s.server] = &s;
  for (const auto& r : recorded["server_state"]) {
    if (!r.is_array() || r.size() != 4 || !r[0].is_string() || !r[1].is_string() || !r[2].is_string() || !r[3].is_number_integer())
      continue;
    std::string name = r[0].get<std::string>() + "/" + r[1].get<std::string>();
    auto it = by.find(name);
    if (it == by.end()) {
      out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, "server '" + name + "' was recorded but haproxy does not have it", name));
      continue;
    }
    const ServerState& s = *it->second;
    if (s.forced() != r[2].get<std::string>() || s.weight != r[3].get<int>())
      out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED,
                                "server '" + name + "' is " + s.forced() + " with weight " + std::to_string(s.weight) + ", recorded " +
                                    r[2].get<std::string>() + " with weight " + std::to_string(r[3].get<int>()),
                                name));
  }
  return out;
}

std::vector<v1::Reason> HaproxyDriver::verify(TaskContext& ctx, const nlohmann::json& recorded) {
  (void)ctx;
  try {
    return compare_servers(recorded, parse_servers_state(cli("show servers state")));
  } catch (const Error& e) {
    return {make_reason(v1::ERROR_CODE_VERIFY_FAILED, std::string("haproxy's servers state cannot be read: ") + e.what())};
  }
}

}  // namespace cairn::agent::haproxy
