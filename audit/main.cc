// cairn-audit: reads the audit topic the controller publishes, verifies the
// hash chain and the signed checkpoints, writes verified events as JSON lines.
// See docs/audit.md (options, exit codes, the systemd unit).
//
//   cairn-audit --brokers H:P --trusted-keys /etc/cairn/keys/controller-signing.pub
//               --from-beginning --until-end --output audit.jsonl      # a one-shot check
//   cairn-audit --config /etc/cairn/audit.toml                        # the service: follows the topic
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "cairn/version.h"
#include "common/audit/kafka_conf.h"
#include "common/audit/verifier.h"
#include "common/plan/trust_store.h"
#include "common/util/control_chars.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/toml_guard.h"

namespace {

using namespace cairn;
using nlohmann::json;

// Exit codes (docs/audit.md).
constexpr int kExitOk = 0;        // everything read verified
constexpr int kExitProblems = 1;  // a gap, reordering, duplicate, altered event or bad checkpoint
constexpr int kExitUsage = 2;     // bad options or configuration
constexpr int kExitKafka = 3;     // the topic could not be read

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct Options {
  audit::KafkaClientSettings kafka;
  std::string topic = audit::kDefaultTopic;
  std::string sasl_password_file;
  std::vector<std::string> trusted_key_files;
  std::string state_file;
  std::string output = "-";
  bool from_beginning = false;
  bool until_end = false;
  int timeout_s = 30;
  int64_t from_seq = 0;                // the trail starts here on purpose (0: at event 1)
  int64_t checkpoint_interval_s = 60;  // the controller's [audit.kafka] checkpoint_interval_s
  int64_t grace_s = 60;                // clock skew and delivery delays on top of it
};

[[noreturn]] void config_fail(const std::string& where, const std::string& why) { throw Error(Errc::invalid_input, where + ": " + why); }

// [kafka] brokers, topic, security_protocol, ssl_*, sasl_*; [verify]
// trusted_keys (a list of files), state, output. Unknown keys are refused.
void load_config(const std::string& path, Options& o) {
  std::string text;
  {
    Bytes b = read_file(path);
    text.assign(b.begin(), b.end());
  }
  if (find_control_char(text) != std::string::npos) config_fail(path, "a control character is not allowed in the file");
  if (auto bad = find_toml_assertion_trigger(text))
    config_fail(path + ":" + std::to_string(bad->line) + ":" + std::to_string(bad->column), bad->reason);
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    config_fail(path + ":" + std::to_string(e.source().begin.line), std::string(e.description()));
  }
  auto str = [&](const toml::table& t, const std::string& table, const char* key, std::string& out) {
    if (auto* n = t.get(key)) {
      if (!n->is_string()) config_fail(path, "'" + table + "." + key + "' must be a string");
      out = *n->value<std::string>();
    }
  };
  for (const auto& [k, v] : root) {
    std::string key(k.str());
    if (key != "kafka" && key != "verify") config_fail(path, "unknown table '" + key + "'");
    if (!v.is_table()) config_fail(path, "'" + key + "' must be a table");
  }
  if (auto* t = root["kafka"].as_table()) {
    static const std::set<std::string> known = {"brokers",      "topic",          "security_protocol", "ssl_ca_file",       "ssl_cert_file",
                                                "ssl_key_file", "sasl_mechanism", "sasl_username",     "sasl_password_file"};
    for (const auto& [k, v] : *t)
      if (!known.count(std::string(k.str()))) config_fail(path, "unknown key 'kafka." + std::string(k.str()) + "'");
    str(*t, "kafka", "brokers", o.kafka.brokers);
    str(*t, "kafka", "topic", o.topic);
    str(*t, "kafka", "security_protocol", o.kafka.security_protocol);
    str(*t, "kafka", "ssl_ca_file", o.kafka.ssl_ca_file);
    str(*t, "kafka", "ssl_cert_file", o.kafka.ssl_cert_file);
    str(*t, "kafka", "ssl_key_file", o.kafka.ssl_key_file);
    str(*t, "kafka", "sasl_mechanism", o.kafka.sasl_mechanism);
    str(*t, "kafka", "sasl_username", o.kafka.sasl_username);
    str(*t, "kafka", "sasl_password_file", o.sasl_password_file);
  }
  if (auto* t = root["verify"].as_table()) {
    static const std::set<std::string> known = {"trusted_keys", "state", "output", "checkpoint_interval_s", "grace_s"};
    for (const auto& [k, v] : *t)
      if (!known.count(std::string(k.str()))) config_fail(path, "unknown key 'verify." + std::string(k.str()) + "'");
    if (auto* n = t->get("trusted_keys")) {
      auto* a = n->as_array();
      if (!a) config_fail(path, "'verify.trusted_keys' must be a list of public key files");
      for (const auto& e : *a) {
        if (!e.is_string()) config_fail(path, "'verify.trusted_keys' must be a list of public key files");
        o.trusted_key_files.push_back(*e.value<std::string>());
      }
    }
    str(*t, "verify", "state", o.state_file);
    str(*t, "verify", "output", o.output);
    auto seconds = [&](const char* key, int64_t& out) {
      if (auto* n = t->get(key)) {
        auto v = n->value<int64_t>();
        if (!n->is_integer() || !v || *v < 1 || *v > 86400)
          config_fail(path, std::string("'verify.") + key + "' must be a number of seconds from 1 to 86400");
        out = *v;
      }
    };
    seconds("checkpoint_interval_s", o.checkpoint_interval_s);
    seconds("grace_s", o.grace_s);
  }
}

// A public key file holds "ed25519:<base64>" lines (controller-signing.pub).
void load_trusted_keys(const std::vector<std::string>& files, plan::TrustStore& trust) {
  for (const auto& f : files)
    for (const auto& pub : plan::read_public_key_file(f)) trust.add(pub, ::time(nullptr), "config '" + f + "'");
}

audit::VerifierState load_state(const std::string& path, const std::string& topic) {
  audit::VerifierState st;
  if (path.empty() || ::access(path.c_str(), F_OK) != 0) return st;
  Bytes b = read_file(path);
  json j = json::parse(b.begin(), b.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("next_offset") || !j["next_offset"].is_number_integer())
    throw Error(Errc::corrupt, "state file '" + path + "' does not parse; move it aside to start over with --from-beginning");
  if (j.value("topic", "") != topic)
    throw Error(Errc::invalid_input, "state file '" + path + "' belongs to topic '" + j.value("topic", "") + "', not '" + topic + "'");
  st.next_offset = j["next_offset"].get<int64_t>();
  st.expected_seq = j.value("expected_seq", int64_t(0));
  st.last_hash = j.value("last_hash", "");
  st.checkpoint_seq = j.value("checkpoint_seq", int64_t(0));
  st.checkpoint_time = j.value("checkpoint_time", int64_t(0));
  if (j.contains("pending")) {
    if (!j["pending"].is_array())
      throw Error(Errc::corrupt, "state file '" + path + "': 'pending' is not a list; move it aside to start over");
    for (const auto& p : j["pending"]) {
      std::string why;
      auto r = audit::decode_record(p.value("record", ""), why);
      if (!r || r->kind != audit::Record::Kind::event)
        throw Error(Errc::corrupt, "state file '" + path + "': a pending event does not parse (" + why +
                                       "); move it aside to start over with --from-beginning");
      st.pending.push_back({r->event, p.value("offset", int64_t(-1))});
    }
  }
  return st;
}

void save_state(const std::string& path, const std::string& topic, const audit::VerifierState& st) {
  if (path.empty()) return;
  json pending = json::array();
  for (const auto& p : st.pending) pending.push_back({{"offset", p.offset}, {"record", audit::encode_event(p.event)}});
  json j = {{"topic", topic},
            {"next_offset", st.next_offset},
            {"expected_seq", st.expected_seq},
            {"last_hash", st.last_hash},
            {"checkpoint_seq", st.checkpoint_seq},
            {"checkpoint_time", st.checkpoint_time},
            {"pending", pending}};
  std::string s = j.dump() + "\n";
  write_file_atomic(path, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()), 0600);
}

std::string event_line(const audit::AuditEvent& e, int64_t offset) {
  json details = json::parse(e.details, nullptr, false);
  json j = {{"seq", e.seq},
            {"event_id", e.event_id},
            {"time", e.time},
            {"actor", e.actor},
            {"action", e.action},
            {"target", e.target},
            {"outcome", e.outcome},
            {"reason", e.reason},
            {"details", details.is_discarded() ? json(e.details) : details},
            {"prev_hash", e.prev_hash},
            {"hash", e.hash},
            {"offset", offset}};
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

int run(const Options& o) {
  plan::TrustStore trust = o.state_file.empty() ? plan::TrustStore() : plan::TrustStore::open(o.state_file + ".keys");
  load_trusted_keys(o.trusted_key_files, trust);
  audit::VerifierState st = o.from_beginning ? audit::VerifierState{} : load_state(o.state_file, o.topic);
  audit::VerifierOptions vo;
  vo.from_seq = st.expected_seq > 0 ? 0 : o.from_seq;
  vo.max_unsigned_ms = (o.checkpoint_interval_s + o.grace_s) * 1000;
  audit::Verifier v(trust, st, vo);
  auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  };

  FILE* out = stdout;
  std::unique_ptr<FILE, int (*)(FILE*)> file(nullptr, fclose);
  if (o.output != "-") {
    file.reset(std::fopen(o.output.c_str(), "a"));
    if (!file) throw Error(Errc::io, "cannot open output '" + o.output + "': " + std::strerror(errno));
    out = file.get();
  }

  audit::KafkaConf conf(o.kafka, "cairn-audit");
  conf.set("group.id", "cairn-audit");  // partitions are assigned; nothing is committed (the state file is the position)
  conf.set("enable.auto.commit", "false");
  conf.set("enable.partition.eof", "true");
  conf.set("fetch.wait.max.ms", "100");  // a follower prints an event within ~0.1 s of Kafka having it
  audit::Rk rk = conf.make(RD_KAFKA_CONSUMER);

  int64_t lo = 0, hi = 0;
  rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk.get(), o.topic.c_str(), 0, &lo, &hi, o.timeout_s * 1000);
  if (e) {
    spdlog::error("cannot read topic '{}' at {}: {}", o.topic, o.kafka.brokers, rd_kafka_err2str(e));
    return kExitKafka;
  }
  // Every record has one key: a compacted topic keeps only the newest one.
  {
    std::string why;
    std::string policy = audit::topic_cleanup_policy(rk.get(), o.topic, o.timeout_s * 1000, why);
    if (policy.find("compact") != std::string::npos) {
      spdlog::error(
          "topic '{}' has cleanup.policy={}: every audit record has the key 'cairn-audit', so compaction keeps "
          "only the newest one and removes the trail; set cleanup.policy=delete on the topic (docs/audit.md)",
          o.topic, policy);
      return kExitUsage;
    }
    if (policy.empty()) spdlog::warn("cannot read topic '{}''s cleanup.policy ({}); it must not be compacted", o.topic, why);
  }
  int64_t start = o.from_beginning || st.next_offset == 0 ? lo : st.next_offset;
  if (start < lo) {
    spdlog::warn(
        "the stored position (offset {}) is gone from the topic (it starts at {}): the records between were "
        "removed by the topic's retention before this reader saw them",
        start, lo);
    start = lo;
  }
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(parts, o.topic.c_str(), 0)->offset = start;
  rd_kafka_assign(rk.get(), parts);
  rd_kafka_topic_partition_list_destroy(parts);

  int64_t problems = 0;
  auto report = [&] {
    for (const auto& p : v.take_problems()) {
      ++problems;
      std::fprintf(stderr, "cairn-audit: %s: %s\n", p.kind.c_str(), p.message.c_str());
    }
  };
  auto on_event = [&](const audit::AuditEvent& ev, int64_t offset) {
    std::string line = event_line(ev, offset);
    std::fprintf(out, "%s\n", line.c_str());
  };
  auto checkpoint_state = [&] {
    std::fflush(out);
    if (file) ::fsync(fileno(out));
    save_state(o.state_file, o.topic, v.state());
    trust.save();
  };

  int64_t next = start;
  auto last_progress = std::chrono::steady_clock::now();
  // Under systemd (Type=notify, WatchdogSec): ready once the topic is read,
  // alive while this loop turns (a wedged consumer is restarted).
  sd_notify(0, "READY=1");
  while (!g_stop) {
    sd_notify(0, "WATCHDOG=1");
    if (o.until_end && next >= hi) break;
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 500);
    if (!m) {
      if (o.until_end && std::chrono::steady_clock::now() - last_progress > std::chrono::seconds(o.timeout_s)) {
        spdlog::error("reading topic '{}' stalled at offset {} of {} for {} s", o.topic, next, hi, o.timeout_s);
        checkpoint_state();
        return kExitKafka;
      }
      continue;
    }
    std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> hold(m, rd_kafka_message_destroy);
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      if (!o.until_end) {  // following: what waited too long for a checkpoint is a problem now
        (void)v.expire(now_ms());
        report();
      }
      checkpoint_state();
      continue;
    }
    if (m->err) {
      spdlog::warn("reading topic '{}': {}", o.topic, rd_kafka_message_errstr(m));
      continue;
    }
    last_progress = std::chrono::steady_clock::now();
    next = m->offset + 1;
    std::string_view key(static_cast<const char*>(m->key), m->key ? m->key_len : 0);
    v.feed(m->offset, key, std::string_view(static_cast<const char*>(m->payload), m->len), on_event);
    report();
    if (next % 1000 == 0) checkpoint_state();
  }
  std::string held = v.expire(now_ms());
  report();
  checkpoint_state();
  if (!held.empty()) std::fprintf(stderr, "cairn-audit: note: %s\n", held.c_str());
  std::fprintf(stderr, "cairn-audit: %lld events and %lld checkpoints verified, %lld problems, %lld held back; next offset %lld\n",
               (long long)v.events_verified(), (long long)v.checkpoints_verified(), (long long)problems,
               (long long)v.state().pending.size(), (long long)v.state().next_offset);
  return problems ? kExitProblems : kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  auto log = spdlog::stderr_color_mt("cairn-audit");
  spdlog::set_default_logger(log);
  spdlog::set_pattern("cairn-audit: %l: %v");
  Options o;
  std::string config;
  CLI::App app{"cairn-audit - verify cairn's audit trail on Kafka and write it as JSON lines"};
  app.set_version_flag("--version", std::string(CAIRN_VERSION));
  app.add_option("--config", config, "TOML file: [kafka] and [verify] (docs/audit.md); options below override it");
  std::string brokers, topic, protocol, output, state;
  std::vector<std::string> keys;
  app.add_option("--brokers", brokers, "bootstrap brokers, host:port[,host:port]");
  app.add_option("--topic", topic, "the audit topic (default cairn.audit)");
  app.add_option("--security-protocol", protocol, "plaintext, ssl, sasl_plaintext or sasl_ssl");
  app.add_option("--trusted-keys", keys, "file of the controller's public signing key(s), 'ed25519:<base64>' lines; repeatable");
  app.add_option("--state", state, "file holding the position and chain head between runs (and FILE.keys: keys learned from rotations)");
  app.add_option("--output", output, "where verified events go as JSON lines, appended (default: stdout)");
  app.add_flag("--from-beginning", o.from_beginning, "read from the topic's first record, ignoring the stored position");
  app.add_flag("--until-end", o.until_end, "stop at the end of the topic as it was at start (a one-shot check)");
  app.add_option("--from-seq", o.from_seq,
                 "the trail starts at this event on purpose (the ones before it were removed, e.g. by the topic's "
                 "retention); without it a trail that does not start at event 1 is a problem")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 62));
  int64_t interval = 0, grace = 0;
  app.add_option("--checkpoint-interval", interval,
                 "seconds: the controller's [audit.kafka] checkpoint_interval_s (default 60); events not covered by a "
                 "checkpoint this long (plus --grace) after they were written are a problem, as is an older newest checkpoint")
      ->check(CLI::Range(1, 86400));
  app.add_option("--grace", grace, "seconds added to --checkpoint-interval for clock skew and delays (default 60)")
      ->check(CLI::Range(1, 86400));
  app.add_option("--timeout", o.timeout_s, "seconds to wait for Kafka before giving up (exit 3)")->check(CLI::Range(1, 3600));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitUsage;
  }
  try {
    if (!config.empty()) load_config(config, o);
    if (!brokers.empty()) o.kafka.brokers = brokers;
    if (!topic.empty()) o.topic = topic;
    if (!protocol.empty()) o.kafka.security_protocol = protocol;
    if (!output.empty()) o.output = output;
    if (!state.empty()) o.state_file = state;
    for (const auto& k : keys) o.trusted_key_files.push_back(k);
    if (interval) o.checkpoint_interval_s = interval;
    if (grace) o.grace_s = grace;
    if (o.kafka.brokers.empty()) throw Error(Errc::invalid_input, "no brokers: give --brokers or [kafka] brokers");
    if (o.trusted_key_files.empty())
      throw Error(Errc::invalid_input,
                  "no trusted keys: give --trusted-keys with the controller's controller-signing.pub (checkpoints are "
                  "verified against it)");
    if (!o.sasl_password_file.empty()) o.kafka.sasl_password = read_secret_file(o.sasl_password_file);
    if (o.kafka.security_protocol.rfind("sasl_", 0) == 0 && (o.kafka.sasl_username.empty() || o.kafka.sasl_password.empty()))
      throw Error(Errc::invalid_input,
                  "security protocol " + o.kafka.security_protocol + " needs [kafka] sasl_username and sasl_password_file (a 0600 file)");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairn-audit: %s\n", e.what());
    return kExitUsage;
  }
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  try {
    return run(o);
  } catch (const Error& e) {
    std::fprintf(stderr, "cairn-audit: %s\n", e.what());
    return e.code() == Errc::invalid_input || e.code() == Errc::corrupt ? kExitUsage : kExitKafka;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairn-audit: %s\n", e.what());
    return kExitKafka;
  }
}
