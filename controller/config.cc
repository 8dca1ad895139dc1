// Reads the controller's TOML file strictly: unknown tables and keys, wrong
// types and values out of range are all refused with the place they occur.
#include "controller/config.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include "common/repo/storage/backend.h"
#include "common/repo/storage/redact.h"
#include "common/util/control_chars.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/toml_guard.h"
#include "controller/http_server.h"
#include "controller/schedule.h"

namespace cairn::controller {
namespace {

std::string where(const std::string& source, const toml::source_region& r) {
  if (r.begin.line == 0) return source;
  return source + ":" + std::to_string(r.begin.line) + ":" + std::to_string(r.begin.column);
}

[[noreturn]] void fail(const std::string& source, const toml::node& n, const std::string& reason) {
  throw ConfigError(where(source, n.source()) + ": " + reason);
}

[[noreturn]] void fail(const std::string& source, const toml::key& k, const std::string& reason) {
  throw ConfigError(where(source, k.source()) + ": " + reason);
}

// One table's keys: each handler consumes the value or throws.
class TableReader {
 public:
  TableReader(const std::string& source, const std::string& name, const toml::table& t) : source_(source), name_(name), table_(t) {}

  std::string full(const std::string& key) const { return name_ + "." + key; }

  void string(const std::string& key, std::string& out, bool allow_empty = false) {
    if (auto n = find(key)) {
      auto v = n->value<std::string>();
      if (!n->is_string()) fail(source_, *n, "'" + full(key) + "' must be a string");
      if (!allow_empty && v->empty()) fail(source_, *n, "'" + full(key) + "' must not be empty");
      out = *v;
    }
  }
  void integer(const std::string& key, int64_t lo, int64_t hi, int64_t& out) {
    if (auto n = find(key)) {
      if (!n->is_integer()) fail(source_, *n, "'" + full(key) + "' must be an integer");
      int64_t v = *n->value<int64_t>();
      if (v < lo || v > hi)
        fail(source_, *n,
             "'" + full(key) + "' is " + std::to_string(v) + ", must be between " + std::to_string(lo) + " and " + std::to_string(hi));
      out = v;
    }
  }
  template <class T>
  void integer(const std::string& key, int64_t lo, int64_t hi, T& out) {
    int64_t v = int64_t(out);
    integer(key, lo, hi, v);
    out = T(v);
  }
  const toml::node* find(const std::string& key) {
    seen_.insert(key);
    return table_.get(key);
  }
  // Anything not consumed is a key this build does not know.
  void refuse_unknown() const {
    for (const auto& [k, v] : table_) {
      std::string key(k.str());
      if (!seen_.count(key)) fail(source_, k, "unknown key '" + full(key) + "'");
    }
  }

 private:
  const std::string& source_;
  std::string name_;
  const toml::table& table_;
  std::set<std::string> seen_;
};

void check_endpoint(const std::string& source, const toml::node* n, const std::string& key, const std::string& v) {
  if (!n) return;
  if (v.rfind("tcp://", 0) != 0 && v.rfind("ipc://", 0) != 0)
    fail(source, *n, "'" + key + "' must be a 'tcp://host:port' or 'ipc://path' endpoint, not '" + v + "'");
}

}  // namespace

ControllerConfig parse_config(const std::string& text, const std::string& source) {
  toml::table root;
  // toml++ asserts on some of them (e.g. "[\x01'"): refused before it parses.
  if (size_t at = find_control_char(text); at != std::string::npos) {
    size_t nl = at == 0 ? std::string::npos : text.rfind('\n', at - 1);
    size_t column = nl == std::string::npos ? at + 1 : at - nl;
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", unsigned(static_cast<unsigned char>(text[at])));
    throw ConfigError(source + ":" + std::to_string(1 + std::count(text.begin(), text.begin() + long(at), '\n')) + ":" +
                      std::to_string(column) + ": control character " + hex + " is not allowed (only tab, line feed and carriage return)");
  }
  // ... and so does it on some malformed table headers and arrays (see toml_guard.h).
  if (auto bad = find_toml_assertion_trigger(text))
    throw ConfigError(source + ":" + std::to_string(bad->line) + ":" + std::to_string(bad->column) + ": " + bad->reason);
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    throw ConfigError(where(source, e.source()) + ": " + std::string(e.description()));
  }
  ControllerConfig c;
  c.source = source;
  c.controller_id = hostname();

  static const std::set<std::string> kTables = {"controller", "fleet", "operator", "plans", "audit", "scheduler", "http", "verify"};
  static const std::set<std::string> kArrays = {"policy", "repository"};
  for (const auto& [k, v] : root) {
    std::string key(k.str());
    if (kArrays.count(key)) {
      if (!v.is_array_of_tables()) fail(source, v, "'" + key + "' must be tables ([[" + key + "]])");
      continue;
    }
    if (!kTables.count(key)) fail(source, k, "unknown key '" + key + "'");
    if (!v.is_table()) fail(source, v, "'" + key + "' must be a table ([" + key + "])");
  }
  if (auto* t = root["http"].as_table()) {
    TableReader r(source, "http", *t);
    r.string("listen", c.http_listen, /*allow_empty=*/true);
    c.http_listen_given = r.find("listen") != nullptr;
    r.string("token_file", c.http_token_file);
    if (!c.http_listen.empty()) {
      try {
        auto [host, port] = split_host_port(c.http_listen);
        if (!is_loopback(host) && c.http_token_file.empty())
          fail(source, *r.find("listen"),
               "'http.listen' " + c.http_listen +
                   " is not a loopback address: the status page and /metrics then need a bearer token (http.token_file, "
                   "a 0600 file)");
      } catch (const Error& e) {
        fail(source, *r.find("listen"), std::string("'http.listen': ") + e.what());
      }
    }
    if (!c.http_token_file.empty() && c.http_token_file[0] != '/')
      fail(source, *r.find("token_file"), "'http.token_file' must be an absolute path");
    r.refuse_unknown();
  }
  if (auto* t = root["scheduler"].as_table()) {
    TableReader r(source, "scheduler", *t);
    r.string("time_zone", c.time_zone);
    if (auto* n = r.find("time_zone")) {
      try {
        load_time_zone(c.time_zone);
      } catch (const Error& e) {
        fail(source, *n, e.what());
      }
    }
    r.refuse_unknown();
  }
  if (auto* t = root["verify"].as_table()) {
    TableReader r(source, "verify", *t);
    std::string interval;
    r.string("interval", interval);
    if (auto* n = r.find("interval")) {
      int64_t s = cairn::parse_duration(interval);
      // A listing of a large bucket is not free: at most once a minute.
      if (s < 60 || s > 30 * 86400)
        fail(source, *n, "'verify.interval' is '" + interval + "', must be a duration from 1min to 30d (e.g. 6h, 30min, 1d)");
      c.verify_interval_seconds = s;
    }
    r.refuse_unknown();
  }
  if (auto* arr = root["repository"].as_array()) {
    for (auto& node : *arr) {
      TableReader r(source, "repository", *node.as_table());
      ControllerConfig::Repository repo;
      r.string("name", repo.name);
      r.string("path", repo.path);
      r.string("password_file", repo.password_file);
      r.string("credentials_file", repo.credentials_file);
      if (repo.name.empty() || repo.path.empty() || repo.password_file.empty())
        fail(source, node, "a [[repository]] needs name, path and password_file");
      // Named redacted, never whole: the refusal goes to the log.
      if (repo::location_carries_secret(repo.path))
        fail(source, *node.as_table()->get("path"),
             "repository '" + repo.name + "': path '" + repo::redact_location(repo.path) +
                 "' carries credentials or a query; they are never taken from a URL: put them in credentials_file (mode 0600)");
      if ((repo.path[0] != '/' && !repo::is_remote_location(repo.path)) || repo.password_file[0] != '/')
        fail(source, node,
             "repository '" + repo.name +
                 "': path must be absolute or a repository URL (s3:https://host/bucket/prefix, "
                 "s3://bucket/prefix, azure://account/container/prefix), password_file absolute");
      if (!repo.credentials_file.empty() && repo.credentials_file[0] != '/')
        fail(source, node, "repository '" + repo.name + "': credentials_file must be absolute");
      if (c.repository(repo.name)) fail(source, node, "repository '" + repo.name + "' is declared twice");
      r.refuse_unknown();
      c.repositories.push_back(std::move(repo));
    }
  }
  if (auto* arr = root["policy"].as_array()) {
    for (auto& node : *arr) {
      TableReader r(source, "policy", *node.as_table());
      catalog::Policy p;
      p.source = "config";
      p.time_zone = c.time_zone;
      r.string("name", p.name);
      r.string("schedule", p.schedule);
      r.string("time_zone", p.time_zone);
      r.string("repository", p.repository);
      r.string("mode", p.mode);
      r.string("drill", p.drill_schedule);
      r.string("drill_on", p.drill_on);
      r.string("copy_to", p.copy_to);
      if (auto* n = r.find("keep_proven")) {
        if (!n->is_boolean()) fail(source, *n, "'policy.keep_proven' must be true or false");
        p.keep_proven = *n->value<bool>();
      }
      for (const char* key : {"components", "nodes"}) {
        if (auto* n = r.find(key)) {
          auto* a = n->as_array();
          if (!a) fail(source, *n, std::string("'policy.") + key + "' must be an array of strings");
          nlohmann::json list = nlohmann::json::array();
          for (auto& e : *a) {
            if (!e.is_string() || e.value<std::string>()->empty()) fail(source, e, std::string("'policy.") + key + "' must hold names");
            list.push_back(*e.value<std::string>());
          }
          p.selector[key] = list;
        }
      }
      if (auto* n = r.find("labels")) {
        auto* lt = n->as_table();
        if (!lt) fail(source, *n, "'policy.labels' must be a table of name = \"value\"");
        for (const auto& [lk, lv] : *lt) {
          if (!lv.is_string()) fail(source, lv, "'policy.labels." + std::string(lk.str()) + "' must be a string");
          p.selector["labels"][std::string(lk.str())] = *lv.value<std::string>();
        }
      }
      auto& rt = p.retention;
      r.integer("keep_last", 0, 1000000, rt.last);
      r.integer("keep_hourly", 0, 1000000, rt.hourly);
      r.integer("keep_daily", 0, 1000000, rt.daily);
      r.integer("keep_weekly", 0, 1000000, rt.weekly);
      r.integer("keep_monthly", 0, 1000000, rt.monthly);
      r.integer("keep_yearly", 0, 1000000, rt.yearly);
      r.integer("keep_min", 0, 1000000, rt.min);
      std::string within;
      r.string("keep_within", within);
      r.refuse_unknown();
      try {
        if (!within.empty()) {
          rt.within = cairn::parse_duration(within);
          if (rt.within < 0) throw Error(Errc::invalid_input, "keep_within '" + within + "' is not a duration (e.g. 7d, 36h, 2w, 1y2m)");
        }
        check_policy(p);
      } catch (const Error& e) {
        fail(source, node, std::string("policy '") + p.name + "': " + e.what());
      }
      for (const auto& other : c.policies)
        if (other.name == p.name) fail(source, node, "policy '" + p.name + "' is declared twice");
      c.policies.push_back(std::move(p));
    }
  }

  if (auto* t = root["controller"].as_table()) {
    TableReader r(source, "controller", *t);
    r.string("id", c.controller_id);
    r.string("cluster", c.cluster);
    r.string("data_dir", c.data_dir);
    r.string("key_dir", c.key_dir);
    r.string("log_level", c.log_level);
    static const std::set<std::string> kLevels = {"trace", "debug", "info", "warn", "error", "critical", "off"};
    if (!kLevels.count(c.log_level))
      fail(source, *r.find("log_level"),
           "'controller.log_level' is '" + c.log_level + "', must be one of trace, debug, info, warn, error, critical, off");
    r.refuse_unknown();
  }
  if (auto* t = root["fleet"].as_table()) {
    TableReader r(source, "fleet", *t);
    r.string("listen", c.fleet_listen);
    check_endpoint(source, r.find("listen"), "fleet.listen", c.fleet_listen);
    std::string enrolment = c.enrolment_open ? "open" : "closed";
    r.string("enrolment", enrolment);
    if (enrolment != "open" && enrolment != "closed")
      fail(source, *r.find("enrolment"), "'fleet.enrolment' is '" + enrolment + "', must be 'closed' or 'open'");
    c.enrolment_open = enrolment == "open";
    r.integer("heartbeat_interval_ms", 100, 60000, c.heartbeat_interval_ms);
    r.integer("liveness", 2, 100, c.liveness);
    r.integer("backlog", 1, 65535, c.backlog);
    r.integer("io_threads", 0, 64, c.io_threads);
    r.integer("max_pending_agents", 1, 100000, c.max_pending_agents);
    r.refuse_unknown();
  }
  if (auto* t = root["operator"].as_table()) {
    TableReader r(source, "operator", *t);
    r.string("listen", c.operator_listen);
    check_endpoint(source, r.find("listen"), "operator.listen", c.operator_listen);
    if (auto* n = r.find("authorized_keys")) {
      auto* keys = n->as_table();
      if (!keys) fail(source, *n, "'operator.authorized_keys' must be a table of name = \"key file\"");
      for (const auto& [name, file] : *keys) {
        if (!file.is_string() || file.value<std::string>()->empty())
          fail(source, file, "'operator.authorized_keys." + std::string(name.str()) + "' must be a key file path");
        c.operator_key_files[std::string(name.str())] = *file.value<std::string>();
      }
    }
    r.refuse_unknown();
  }
  if (auto* t = root["plans"].as_table()) {
    TableReader r(source, "plans", *t);
    // The agent refuses windows over 7 days (docs/protocol.md).
    r.integer("validity_seconds", 60, 7 * 24 * 3600, c.plan_validity_seconds);
    r.integer("lock_ttl_seconds", 60, 30 * 24 * 3600, c.lock_ttl_seconds);
    r.refuse_unknown();
  }
  if (auto* t = root["audit"].as_table()) {
    TableReader r(source, "audit", *t);
    r.integer("retention_events", 1000, int64_t(1) << 40, c.audit_retention_events);
    r.integer("retention_days", 1, 36500, c.audit_retention_days);
    r.integer("refusals_per_minute", 1, 100000, c.audit_refusals_per_minute);
    if (auto* n = r.find("kafka")) {
      auto* kt = n->as_table();
      if (!kt) fail(source, *n, "'audit.kafka' must be a table ([audit.kafka])");
      auto& k = c.audit_kafka;
      TableReader kr(source, "audit.kafka", *kt);
      kr.string("brokers", k.brokers);
      kr.string("topic", k.topic);
      kr.string("security_protocol", k.security_protocol);
      static const std::set<std::string> kProtocols = {"plaintext", "ssl", "sasl_plaintext", "sasl_ssl"};
      if (!kProtocols.count(k.security_protocol))
        fail(source, *kr.find("security_protocol"),
             "'audit.kafka.security_protocol' is '" + k.security_protocol + "', must be plaintext, ssl, sasl_plaintext or sasl_ssl");
      kr.string("ssl_ca_file", k.ssl_ca_file);
      kr.string("ssl_cert_file", k.ssl_cert_file);
      kr.string("ssl_key_file", k.ssl_key_file);
      kr.string("sasl_mechanism", k.sasl_mechanism);
      static const std::set<std::string> kMechanisms = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"};
      if (!kMechanisms.count(k.sasl_mechanism))
        fail(source, *kr.find("sasl_mechanism"),
             "'audit.kafka.sasl_mechanism' is '" + k.sasl_mechanism + "', must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512");
      kr.string("sasl_username", k.sasl_username);
      kr.string("sasl_password_file", k.sasl_password_file);
      kr.integer("checkpoint_every", 1, 1000000, k.checkpoint_every);
      kr.integer("checkpoint_interval_s", 1, 3600, k.checkpoint_interval_s);
      kr.integer("outbox_warn_events", 1, int64_t(1) << 40, k.outbox_warn_events);
      kr.integer("outbox_max_events", 1000, int64_t(1) << 40, k.outbox_max_events);
      kr.refuse_unknown();
      bool sasl = k.security_protocol.rfind("sasl_", 0) == 0;
      if (sasl && (k.sasl_username.empty() || k.sasl_password_file.empty()))
        fail(source, *n,
             "'audit.kafka.security_protocol' " + k.security_protocol +
                 " needs sasl_username and sasl_password_file (a 0600 file holding the password)");
      if (!sasl && (!k.sasl_username.empty() || !k.sasl_password_file.empty()))
        fail(source, *n,
             "'audit.kafka' sets SASL credentials but security_protocol is " + k.security_protocol + "; they would not be used");
      if ((!k.ssl_cert_file.empty()) != (!k.ssl_key_file.empty()))
        fail(source, *n, "'audit.kafka' needs both ssl_cert_file and ssl_key_file for a client certificate, or neither");
      if (k.brokers.empty()) fail(source, *n, "'audit.kafka.brokers' must name the bootstrap brokers (host:port,...)");
    }
    r.refuse_unknown();
  }
  for (const auto& p : c.policies)
    if (!p.copy_to.empty() && !c.repository(p.copy_to))
      throw ConfigError(source + ": policy '" + p.name + "': copy_to '" + p.copy_to +
                        "' is not a [[repository]] declared in this file (the controller copies the sets there itself)");
  return c;
}

ControllerConfig load_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path + ": cannot read the configuration file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path);
}

}  // namespace cairn::controller
