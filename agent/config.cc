#include "agent/config.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "agent/drivers/registry.h"
#include "common/repo/memory.h"
#include "common/repo/storage/backend.h"
#include "common/repo/storage/redact.h"
#include "common/util/control_chars.h"
#include "common/util/fs.h"
#include "common/util/toml_guard.h"

namespace cairn::agent {

namespace {

bool valid_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.')) return false;
  return true;
}

void read_controller(TableReader& r, AgentConfig& c) {
  c.controller_endpoint = r.required_string("endpoint");
  if (c.controller_endpoint.rfind("tcp://", 0) != 0 && c.controller_endpoint.rfind("ipc://", 0) != 0)
    r.fail("endpoint", "'" + c.controller_endpoint + "' must start with 'tcp://' or 'ipc://'");
  c.controller_public_key = r.required_string("public_key");
  uint8_t raw[32];
  if (c.controller_public_key.size() != 40 || !zmq_z85_decode(raw, c.controller_public_key.c_str()))
    r.fail("public_key", "must be the controller's CURVE public key in Z85 (40 characters)");
  c.signing_keys_file = r.required_string("signing_keys_file");
  require_absolute(r, "signing_keys_file", c.signing_keys_file);
  if (auto v = r.integer("heartbeat_interval_ms", 100, 60000)) c.heartbeat_interval_ms = uint32_t(*v);
  if (auto v = r.integer("liveness", 2, 100)) c.liveness = uint32_t(*v);
  r.finish();
}

RepositoryDecl read_repository(TableReader& r) {
  RepositoryDecl d;
  d.name = r.required_string("name");
  if (!valid_name(d.name)) r.fail("name", "'" + d.name + "' must be 1-64 letters, digits, '-', '_' or '.'");
  d.path = r.required_string("path");
  // Named redacted, never whole: the refusal goes to the log.
  if (repo::location_carries_secret(d.path))
    r.fail("path", "repository '" + d.name + "': '" + repo::redact_location(d.path) +
                       "' carries credentials or a query; they are never taken from a URL: put them in credentials_file "
                       "(mode 0600)");
  if (!repo::is_remote_location(d.path)) require_absolute(r, "path", d.path);
  if (auto v = r.string("credentials_file")) {
    d.credentials_file = *v;
    require_absolute(r, "credentials_file", d.credentials_file);
    std::string cwhy = check_secret_file_mode(d.credentials_file);
    if (!cwhy.empty()) r.fail("credentials_file", cwhy);
  }
  if (auto v = r.boolean("accept_unprotected_store")) d.accept_unprotected_store = *v;
  d.password_file = r.required_string("password_file");
  require_absolute(r, "password_file", d.password_file);
  std::string why = check_secret_file_mode(d.password_file);
  if (!why.empty()) r.fail("password_file", why);
  r.finish();
  return d;
}

}  // namespace

std::string check_secret_file_mode(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return "cannot read '" + path + "': " + std::strerror(errno);
  if (!S_ISREG(st.st_mode)) return "'" + path + "' is not a regular file";
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", unsigned(st.st_mode & 07777));
    return "'" + path + "' has mode " + mode + "; a secret file must be readable by its owner only (chmod 600)";
  }
  return {};
}

std::vector<std::string> config_warnings(const AgentConfig& c) {
  std::vector<std::string> out;
  for (const auto& r : c.repositories) {
    if (repo::is_remote_location(r.path)) continue;  // an object store: the first task opens it and says what is wrong
    struct stat st {};
    if (::stat(r.path.c_str(), &st) != 0)
      out.push_back("repository '" + r.name + "': '" + r.path + "' does not exist (" + std::strerror(errno) +
                    "); create it with 'cairnctl repo init --repo " + r.path + "'");
    else if (::stat((r.path + "/config").c_str(), &st) != 0)
      out.push_back("repository '" + r.name + "': '" + r.path +
                    "' holds no cairn repository (no 'config' file); create it with 'cairnctl repo init --repo " + r.path + "'");
  }
  for (const auto& comp : c.components)
    if (comp.driver)
      for (auto& w : comp.driver->config_warnings()) out.push_back(std::move(w));
  return out;
}

const DriverDrill* DrillDecl::drill(std::string_view driver) const {
  for (const auto& [name, d] : drills)
    if (name == driver) return d.get();
  return nullptr;
}

std::vector<std::pair<std::string, std::shared_ptr<const DriverDrill>>> default_drills() {
  std::vector<std::pair<std::string, std::shared_ptr<const DriverDrill>>> out;
  for (const auto& f : drivers())
    if (f.drill) out.emplace_back(std::string(f.name), f.drill(nullptr));
  return out;
}

namespace {

// Each drillable driver's drill, its own keys read from the [drill] table.
void read_drills(DrillDecl& dd, TableReader& dr) {
  dd.drills.clear();
  for (const auto& f : drivers())
    if (f.drill) dd.drills.emplace_back(std::string(f.name), f.drill(&dr));
}

}  // namespace

void read_drill_keys(DrillDecl& d, std::string_view keys, const std::string& source) {
  toml::table doc;
  try {
    doc = toml::parse(keys, source);
  } catch (const toml::parse_error& e) {
    throw ConfigError(source, e.source().begin.line, std::string(e.description()));
  }
  TableReader dr(doc, source, "[drill]");
  read_drills(d, dr);
  dr.finish();
}

const ComponentDecl* AgentConfig::component(std::string_view n) const {
  for (const auto& c : components)
    if (c.name == n) return &c;
  return nullptr;
}

const RepositoryDecl* AgentConfig::repository(std::string_view n) const {
  for (const auto& r : repositories)
    if (r.name == n) return &r;
  return nullptr;
}

AgentConfig parse_config(std::string_view text, const std::string& source) {
  toml::table doc;
  // toml++ asserts on some of them (e.g. "[\x01'"): refused before it parses.
  if (size_t at = find_control_char(text); at != std::string_view::npos) {
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", unsigned(static_cast<unsigned char>(text[at])));
    throw ConfigError(source, uint32_t(1 + std::count(text.begin(), text.begin() + long(at), '\n')),
                      std::string("control character ") + hex + " is not allowed (only tab, line feed and carriage return)");
  }
  // ... and so does it on some malformed table headers and arrays (see toml_guard.h).
  if (auto bad = find_toml_assertion_trigger(text)) throw ConfigError(source, bad->line, bad->reason);
  try {
    doc = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw ConfigError(source, e.source().begin.line, std::string(e.description()));
  }
  AgentConfig c;
  c.source = source;
  TableReader top(doc, source, "the top level");
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  c.name = top.string_or("name", host);
  if (!valid_name(c.name)) top.fail("name", "'" + c.name + "' must be 1-64 letters, digits, '-', '_' or '.'");
  c.state_dir = top.string_or("state_dir", c.state_dir);
  require_absolute(top, "state_dir", c.state_dir);
  c.key_dir = top.string_or("key_dir", c.state_dir + "/keys");
  require_absolute(top, "key_dir", c.key_dir);
  c.replay_journal = top.string_or("replay_journal", c.state_dir + "/replay-journal.json");
  require_absolute(top, "replay_journal", c.replay_journal);
  c.trust_store = top.string_or("trust_store", c.state_dir + "/trusted-keys.json");
  require_absolute(top, "trust_store", c.trust_store);
  c.log_level = top.string_or("log_level", c.log_level);
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error"};
  if (!levels.count(c.log_level)) top.fail("log_level", "'" + c.log_level + "' is not one of trace, debug, info, warn, error");
  if (auto v = top.string("memory_budget")) {
    auto bytes = repo::parse_byte_size(*v);
    if (!bytes) top.fail("memory_budget", "'" + *v + "' is not a size such as \"256M\" or \"1G\"");
    if (*bytes < repo::kMinMemoryBudget)
      top.fail("memory_budget", "'" + *v + "' is below the least a backup can run in, " + repo::byte_size_text(repo::kMinMemoryBudget));
    c.memory_budget = *bytes;
  }

  if (const toml::table* labels = top.table("labels")) {
    TableReader lr(*labels, source, "[labels]");
    for (const auto& [k, v] : *labels) {
      std::string key(k.str());
      auto value = lr.string(key);
      if (!valid_name(key)) lr.fail(key, "label name '" + key + "' must be 1-64 letters, digits, '-', '_' or '.'");
      if (!value || value->empty() || value->size() > 128) lr.fail(key, "label '" + key + "' must be a string of 1-128 characters");
      c.labels[key] = *value;
    }
    lr.finish();
  }

  if (const toml::table* sa = top.table("set_aside")) {
    TableReader sr(*sa, source, "[set_aside]");
    if (auto v = sr.integer("keep_last", 0, 1000)) c.set_aside.keep_last = uint32_t(*v);
    if (auto v = sr.integer("keep_days", 0, 3650)) c.set_aside.keep_seconds = *v * 86400;
    sr.finish();
  }

  uint32_t drill_line = 0;
  if (const toml::table* d = top.table("drill")) {
    TableReader dr(*d, source, "[drill]");
    DrillDecl dd;
    dd.root = dr.required_string("root");
    require_absolute(dr, "root", dd.root);
    while (dd.root.size() > 1 && dd.root.back() == '/') dd.root.pop_back();
    if (dd.root == "/") dr.fail("root", "must be a directory of its own, not '/'");
    if (auto v = dr.string("disk_budget")) {
      auto bytes = repo::parse_byte_size(*v);
      if (!bytes) dr.fail("disk_budget", "'" + *v + "' is not a size such as \"20G\"");
      dd.disk_budget = *bytes;
    }
    dd.memory_max = 2ull << 30;
    if (auto v = dr.string("memory_max")) {
      if (*v == "none") {
        dd.memory_max.reset();
      } else {
        auto bytes = repo::parse_byte_size(*v);
        if (!bytes || *bytes < (64ull << 20))
          dr.fail("memory_max", "'" + *v + "' is not a size of at least 64M (or \"none\": an unbounded sandbox)");
        dd.memory_max = *bytes;
      }
    }
    if (auto v = dr.integer("cpus", 1, 1024)) dd.cpus = uint32_t(*v);
    if (auto v = dr.integer("deadline_seconds", 10, 7 * 86400)) dd.deadline_seconds = *v;
    if (auto v = dr.integer("start_timeout_seconds", 5, 3600)) dd.start_timeout_seconds = *v;
    dd.java = dr.string_or("java", dd.java);
    dd.user = dr.string_or("user", dd.user);
    if (dd.user.empty() || dd.user == "root") dr.fail("user", "must name the unprivileged user a drill's servers run as, not root");
    if (auto v = dr.integer("java_heap_mb", 64, 1 << 20)) dd.java_heap_mb = uint32_t(*v);
    // Each driver's drill reads its own keys (registry.cc).
    read_drills(dd, dr);
    drill_line = dr.line();
    dr.finish();
    c.drill = std::move(dd);
  }

  const toml::table* ctl = top.table("controller");
  if (!ctl) throw ConfigError(source, 1, "a [controller] table is required (endpoint, public_key, signing_keys_file)");
  TableReader cr(*ctl, source, "[controller]");
  read_controller(cr, c);

  // Arrays of tables: [[repository]] and [[component]].
  auto tables_of = [&](const std::string& key) {
    std::vector<const toml::table*> out;
    const toml::node* n = top.take(key);
    if (!n) return out;
    const toml::array* a = n->as_array();
    if (!a || !a->is_array_of_tables()) top.fail(key, "must be written as [[" + key + "]] tables");
    for (const auto& e : *a) out.push_back(e.as_table());
    return out;
  };
  std::set<std::string> seen;
  for (const toml::table* t : tables_of("repository")) {
    TableReader r(*t, source, "[[repository]]");
    RepositoryDecl d = read_repository(r);
    if (!seen.insert(d.name).second) r.fail("name", "repository '" + d.name + "' is declared twice");
    c.repositories.push_back(std::move(d));
  }
  seen.clear();
  for (const toml::table* t : tables_of("component")) {
    TableReader r(*t, source, "[[component]]");
    ComponentDecl d;
    d.name = r.required_string("name");
    if (!valid_name(d.name)) r.fail("name", "'" + d.name + "' must be 1-64 letters, digits, '-', '_' or '.'");
    if (!seen.insert(d.name).second) r.fail("name", "component '" + d.name + "' is declared twice");
    d.driver_name = r.required_string("driver");
    const DriverFactory* f = find_driver(d.driver_name);
    if (!f) r.fail("driver", "unknown driver '" + d.driver_name + "' (this build has " + driver_names() + ")");
    auto repo = r.string("repository");
    if (repo) {
      if (!c.repository(*repo)) r.fail("repository", "no [[repository]] is named '" + *repo + "'");
      d.repository = *repo;
    } else if (c.repositories.size() == 1) {
      d.repository = c.repositories.front().name;
    } else {
      throw ConfigError(
          source, r.line(),
          "component '" + d.name + "' needs 'repository' (" + std::to_string(c.repositories.size()) + " repositories are declared)");
    }
    TableReader settings(*t, source, "[[component]] '" + d.name + "'");
    settings.string("name");
    settings.string("driver");
    settings.string("repository");
    if (const toml::table* m = settings.table("maintenance")) {
      TableReader mr(*m, source, "[[component]] '" + d.name + "' maintenance");
      MaintenanceDecl md;
      md.stats_socket = mr.required_string("stats_socket");
      require_absolute(mr, "stats_socket", md.stats_socket);
      md.backend = mr.required_string("backend");
      auto servers = mr.string_list("servers");
      if (!servers || servers->empty()) mr.fail("servers", "name the backend's servers in front of this component");
      md.servers = *servers;
      mr.finish();
      d.maintenance = std::move(md);
    }
    d.driver = f->make(settings, d.name);
    settings.finish();
    c.components.push_back(std::move(d));
  }
  // A drill root shares no directory with live data: its sandboxes are made
  // and removed there (docs/drills.md § Safety).
  if (c.drill)
    for (const auto& comp : c.components)
      for (std::string p : comp.driver->data_paths()) {
        while (p.size() > 1 && p.back() == '/') p.pop_back();
        if (p.empty()) continue;
        const std::string& root = c.drill->root;
        if (path_within(root, p) || path_within(p, root))
          throw ConfigError(source, drill_line,
                            "[drill] root '" + root + "' overlaps '" + p + "' of component '" + comp.name +
                                "': drills make and remove their sandboxes under the root, which must share no "
                                "directory with a component's data; give it a directory of its own");
      }
  top.finish();
  return c;
}

AgentConfig load_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ConfigError(path, 0, std::string("cannot read the configuration: ") + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace cairn::agent
