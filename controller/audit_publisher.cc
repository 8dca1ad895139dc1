#include "controller/audit_publisher.h"

#include <librdkafka/rdkafka.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <vector>

#include "common/audit/kafka_conf.h"
#include "common/audit/topic.h"
#include "common/plan/signing_key.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "controller/catalog/catalog.h"
#include "controller/keyfiles.h"

namespace cairn::controller {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kMaxInflight = 10000;  // events produced and not yet acknowledged
constexpr auto kPoll = std::chrono::milliseconds(50);
constexpr auto kSizeCheckEvery = std::chrono::seconds(10);  // how often the outbox is counted
constexpr auto kWarnEvery = std::chrono::minutes(10);       // and, while it is too large, said so

// The delivery state the producer's callback updates (on the publisher's
// thread, inside rd_kafka_poll).
struct Delivery {
  int64_t acked = 0;          // newest event acknowledged
  int64_t acked_offset = -1;  // its offset on the topic
  int64_t checkpoints = 0;    // checkpoints acknowledged
  std::string error;          // set when a record failed: the producer is rebuilt
  std::string transport;      // librdkafka's latest connection trouble (it retries by itself)
};

void error_cb(rd_kafka_t*, int err, const char* reason, void* opaque) {
  static_cast<Delivery*>(opaque)->transport = std::string(rd_kafka_err2name(rd_kafka_resp_err_t(err))) + ": " + reason;
}

// Record opaques: an event's seq, or -1 for a checkpoint.
void dr_cb(rd_kafka_t*, const rd_kafka_message_t* m, void* opaque) {
  auto* d = static_cast<Delivery*>(opaque);
  auto tag = reinterpret_cast<intptr_t>(m->_private);
  if (m->err) {
    if (d->error.empty()) d->error = rd_kafka_err2str(m->err);
    return;
  }
  if (tag < 0)
    ++d->checkpoints;
  else if (tag > d->acked)
    d->acked = tag, d->acked_offset = m->offset;
}

audit::KafkaClientSettings client_settings(const ControllerConfig::AuditKafka& k, const std::string& password) {
  audit::KafkaClientSettings s;
  s.brokers = k.brokers;
  s.security_protocol = k.security_protocol;
  s.ssl_ca_file = k.ssl_ca_file;
  s.ssl_cert_file = k.ssl_cert_file;
  s.ssl_key_file = k.ssl_key_file;
  s.sasl_mechanism = k.sasl_mechanism;
  s.sasl_username = k.sasl_username;
  s.sasl_password = password;
  return s;
}

// One record of the topic's partition 0 as the publisher judges it.
struct TopicRecord {
  int64_t offset = -1;
  bool decoded = false;  // a well-formed audit record with the key cairn-audit
  bool is_event = false;
  int64_t seq = 0;
  std::string hash;
  bool intact = false;  // an event's hash covers its content; a checkpoint's signature verifies
  std::string why;      // what is wrong with it, when not decoded or not intact
};

struct TopicRead {
  int64_t lo = 0, hi = 0;  // the partition's watermarks
  std::vector<TopicRecord> records;
};

TopicRecord judge(const rd_kafka_message_t* m) {
  TopicRecord r;
  r.offset = m->offset;
  std::string_view key(static_cast<const char*>(m->key), m->key ? m->key_len : 0);
  if (key != audit::kRecordKey) {
    r.why = "its key is not '" + std::string(audit::kRecordKey) + "'";
    return r;
  }
  auto rec = audit::decode_record(std::string_view(static_cast<const char*>(m->payload), m->len), r.why);
  if (!rec) return r;
  r.decoded = true;
  if (rec->kind == audit::Record::Kind::event) {
    r.is_event = true;
    r.seq = rec->event.seq;
    r.hash = rec->event.hash;
    r.intact = audit::audit_hash(rec->event) == rec->event.hash;
    if (!r.intact) r.why = "event " + std::to_string(r.seq) + "'s hash does not match its content";
  } else {
    const audit::Checkpoint& c = rec->checkpoint;
    r.seq = c.seq;
    r.hash = c.hash;
    plan::PublicKey pub{};
    Bytes sig;
    r.intact = plan::parse_public_key(c.public_key, pub) && from_base64(c.signature, sig) &&
               plan::verify_signature(pub, audit::checkpoint_signing_bytes(c.seq, c.hash, c.time), sig);
    if (!r.intact) r.why = "the checkpoint for event " + std::to_string(r.seq) + " has a signature that does not verify";
  }
  return r;
}

// Reads partition 0 from the offset pick(lo, hi) gives up to at most `count`
// records or its end. False (and why) when Kafka does not answer; a missing
// topic reads as empty.
bool read_topic(const ControllerConfig& cfg, const std::string& password, const std::function<int64_t(int64_t, int64_t)>& pick,
                int64_t count, TopicRead& out, std::string& why) {
  const auto& k = cfg.audit_kafka;
  const audit::KafkaClientSettings settings = client_settings(k, password);
  audit::KafkaConf conf(settings, "cairn-controller-" + cfg.controller_id + "-tail");
  conf.set("group.id", "cairn-controller-tail");  // never joined or committed: partitions are assigned
  conf.set("enable.auto.commit", "false");
  conf.set("enable.partition.eof", "true");
  audit::ErrorTrail trail;  // outlives rk
  conf.record_errors(&trail);
  audit::Rk rk = conf.make(RD_KAFKA_CONSUMER);
  out = {};
  rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(rk.get(), k.topic.c_str(), 0, &out.lo, &out.hi, 5000);
  if (e == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART || e == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION || e == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
    out.lo = out.hi = 0;
    return true;  // created by the first record (or by the operator)
  }
  if (e) {
    why =
        std::string("cannot read the end of topic '") + k.topic + "' at " + k.brokers + ": " + audit::explain(rk.get(), trail, settings, e);
    return false;
  }
  const int64_t start = std::clamp(pick(out.lo, out.hi), out.lo, out.hi);
  const int64_t end = std::min(out.hi, start + count);
  if (start >= end) return true;
  rd_kafka_topic_partition_list_t* parts = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(parts, k.topic.c_str(), 0)->offset = start;
  rd_kafka_assign(rk.get(), parts);
  rd_kafka_topic_partition_list_destroy(parts);
  auto deadline = Clock::now() + std::chrono::seconds(15);
  int64_t next = start;
  while (next < end) {
    if (Clock::now() > deadline) {
      why = "reading topic '" + k.topic + "' timed out at offset " + std::to_string(next);
      rd_kafka_assign(rk.get(), nullptr);
      return false;
    }
    rd_kafka_message_t* m = rd_kafka_consumer_poll(rk.get(), 200);
    if (!m) continue;
    std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> hold(m, rd_kafka_message_destroy);
    if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) break;
    if (m->err) {
      why = std::string("reading topic '") + k.topic + "': " + rd_kafka_message_errstr(m);
      rd_kafka_assign(rk.get(), nullptr);
      return false;
    }
    next = m->offset + 1;
    out.records.push_back(judge(m));
  }
  rd_kafka_assign(rk.get(), nullptr);
  return true;
}

// The topic's cleanup.policy, read with a short-lived client ("" when Kafka does not say).
std::string cleanup_policy(const ControllerConfig& cfg, const std::string& password, std::string& why) {
  audit::KafkaConf conf(client_settings(cfg.audit_kafka, password), "cairn-controller-" + cfg.controller_id + "-admin");
  audit::Rk rk = conf.make(RD_KAFKA_PRODUCER);
  return audit::topic_cleanup_policy(rk.get(), cfg.audit_kafka.topic, 5000, why);
}

// What the end of the topic says about this controller's chain, judged
// against the catalog (the outbox is the source of truth): only an event
// whose seq and hash are the catalog's, and a checkpoint whose signature
// verifies over the catalog's hash for its seq, are this controller's.
struct TailVerdict {
  bool found = false;          // a record of this controller's chain was read
  int64_t resume = 0;          // the newest event the topic holds, without a hole before it in what was read
  int64_t resume_offset = -1;  // that event's offset (-1: known from a checkpoint only)
  int64_t foreign = 0;         // records this controller did not write
  int64_t foreign_first = -1, foreign_last = -1;
  std::string example;  // what is wrong with the first of them
};

TailVerdict judge_tail(const TopicRead& t, const catalog::Tx& tx) {
  TailVerdict v;
  const int64_t published = tx.audit_published_head();
  auto catalog_hash = [&](int64_t seq) -> std::optional<std::string> {
    if (auto e = tx.audit_event(seq)) return e->hash;
    return std::nullopt;
  };
  int64_t run = 0;  // the newest event of the contiguous run read so far
  int64_t max_checkpoint = 0;
  bool hole = false;
  for (const auto& r : t.records) {
    std::optional<std::string> h = r.decoded && r.seq > 0 ? catalog_hash(r.seq) : std::nullopt;
    // A checkpoint over an event the outbox no longer holds (retention) below
    // what is marked published is taken as this controller's when it verifies.
    bool ours = r.decoded && r.intact && (h ? *h == r.hash : (!r.is_event && r.seq <= published));
    if (!ours) {
      ++v.foreign;
      if (v.foreign_first < 0) {
        v.foreign_first = r.offset;
        v.example =
            "offset " + std::to_string(r.offset) + ": " +
            (!r.why.empty() ? r.why
                            : (r.is_event ? "event " : "checkpoint for event ") + std::to_string(r.seq) +
                                  (h ? " differs from this controller's event with that seq" : " names a seq this controller never wrote"));
      }
      v.foreign_last = r.offset;
      continue;
    }
    v.found = true;
    if (!r.is_event) {
      max_checkpoint = std::max(max_checkpoint, r.seq);
      continue;
    }
    if (hole || r.seq <= run) continue;  // after a hole, or a replay
    if (run != 0 && r.seq > run + 1 && (tx.audit_event(run + 1) || tx.audit_event(r.seq - 1))) {
      hole = true;  // events between are still in the outbox: they never reached this topic
      continue;
    }
    run = r.seq;
    v.resume = run;
    v.resume_offset = r.offset;
  }
  // Only checkpoints read (an idle controller signs its head again and
  // again): the newest one names the newest event the topic took. With events
  // read, a checkpoint is no evidence of events the window does not show.
  if (run == 0) v.resume = max_checkpoint;
  return v;
}

// Reads the record at `offset`: `there` says whether it is this
// controller's event `seq` with `hash`, intact (where Kafka acknowledged it).
// False (and why) when Kafka does not answer; `at` gets what was read.
bool event_at(const ControllerConfig& cfg, const std::string& password, int64_t offset, int64_t seq, const std::string& hash, bool& there,
              TopicRead& at, std::string& why) {
  if (!read_topic(
          cfg, password, [&](int64_t, int64_t) { return offset; }, 1, at, why))
    return false;
  const TopicRecord* r = at.records.empty() ? nullptr : &at.records[0];
  there = r && r->offset == offset && r->is_event && r->intact && r->seq == seq && r->hash == hash;
  return true;
}

// A tail of checkpoints only (an idle controller signs its head again and
// again) is believed only where the topic still holds the newest event Kafka
// acknowledged, at the offset it acknowledged it, or its retention has
// removed that offset: a genuine checkpoint copied into a recreated topic
// covers events the topic does not hold. False (and why) when Kafka does not
// answer; else `held` says whether the mark is there, `problem` what is not.
bool mark_held(const ControllerConfig& cfg, const std::string& password, const catalog::Tx::AuditTopicMark& mark, bool& held,
               std::string& problem, std::string& why) {
  TopicRead at;
  bool there = false;
  if (!event_at(cfg, password, mark.offset, mark.seq, mark.hash, there, at, why)) return false;
  held = there || at.lo > mark.offset;  // or the topic's retention removed it
  if (!held)
    problem = "the end of topic '" + cfg.audit_kafka.topic + "' holds checkpoints only, and not event " + std::to_string(mark.seq) +
              " at offset " + std::to_string(mark.offset) + " where Kafka acknowledged it (the topic holds offsets " +
              std::to_string(at.lo) + ".." + std::to_string(at.hi) + "): its checkpoints vouch for no event on this topic";
  return true;
}

}  // namespace

AuditPublisher::AuditPublisher(const ControllerConfig& config) : config_(config) {
  status_.enabled = config.audit_kafka.enabled();
  const auto& k = config.audit_kafka;
  if (!k.sasl_password_file.empty()) {
    sasl_password_ = read_secret_file(k.sasl_password_file);
  }
}

AuditPublisher::~AuditPublisher() { stop(); }

void AuditPublisher::start() {
  if (!status_.enabled || thread_.joinable()) return;
  thread_ = std::thread([this] {
    try {
      run();
    } catch (const std::exception& e) {
      spdlog::error("audit publisher stopped: {}; events stay in the outbox until the controller restarts", e.what());
      std::lock_guard lk(mu_);
      status_.connected = false;
      status_.last_error = e.what();
    }
  });
}

void AuditPublisher::stop() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void AuditPublisher::notify() {
  {
    std::lock_guard lk(mu_);
    poke_ = true;
  }
  cv_.notify_all();
}

PublisherStatus AuditPublisher::status() const {
  std::lock_guard lk(mu_);
  return status_;
}

void AuditPublisher::run() {
  const auto& k = config_.audit_kafka;
  auto cat = catalog::Catalog::open(config_.catalog_path());
  Delivery d;
  audit::Rk producer;
  bool synced = false;
  int64_t produced = 0;  // newest event handed to this producer
  std::string produced_hash;
  int64_t marked = 0;  // newest event marked published in the catalog
  int64_t since_checkpoint = 0;
  Clock::time_point last_checkpoint = Clock::now();
  auto backoff = std::chrono::seconds(1);
  Clock::time_point next_size_check{};
  Clock::time_point waiting_since{};
  std::string last_logged_error;
  int64_t reported_checkpoints = 0;
  // How often the topic is checked for what Kafka acknowledged.
  const auto topic_check_every = std::clamp<std::chrono::seconds>(std::chrono::seconds(2 * k.checkpoint_interval_s),
                                                                  std::chrono::seconds(5), std::chrono::seconds(60));
  Clock::time_point next_topic_check{};

  auto wait = [&](std::chrono::milliseconds dur) {
    std::unique_lock lk(mu_);
    cv_.wait_for(lk, dur, [&] { return stop_ || poke_; });
    poke_ = false;
    return !stop_;
  };
  // Events wait: the status says why; the log says it once per reason
  // (log_as names the reason when `why` changes by the second).
  auto failed = [&](const std::string& why, const std::string& log_as = {}) {
    {
      std::lock_guard lk(mu_);
      status_.connected = false;
      status_.last_error = why;
    }
    const std::string& reason = log_as.empty() ? why : log_as;
    if (reason != last_logged_error) {
      spdlog::warn("audit publisher: {}; events wait in the outbox (retrying)", why);
      last_logged_error = reason;
    }
  };
  auto produce = [&](const std::string& value, intptr_t tag) {
    rd_kafka_resp_err_t e =
        rd_kafka_producev(producer.get(), RD_KAFKA_V_TOPIC(k.topic.c_str()), RD_KAFKA_V_PARTITION(0),
                          RD_KAFKA_V_KEY(audit::kRecordKey, std::char_traits<char>::length(audit::kRecordKey)),
                          RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                          RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(tag)), RD_KAFKA_V_END);
    if (e) throw Error(Errc::io, std::string("producing to '") + k.topic + "': " + rd_kafka_err2str(e));
  };
  // The signing key, loaded again only when its file changes (a rotation
  // renames a new file over it), with the announcements that introduced it.
  const std::string key_path = config_.key_dir + "/" + kSigningKeyFile;
  std::optional<plan::SigningKey> loaded_key;
  struct stat key_stat {};
  std::vector<std::string> announcements;
  auto signing_key = [&]() -> const plan::SigningKey& {
    struct stat st {};
    if (::stat(key_path.c_str(), &st) != 0) throw Error(Errc::io, "cannot read the signing key '" + key_path + "'");
    if (!loaded_key || st.st_ino != key_stat.st_ino || st.st_mtim.tv_sec != key_stat.st_mtim.tv_sec ||
        st.st_mtim.tv_nsec != key_stat.st_mtim.tv_nsec || st.st_size != key_stat.st_size) {
      loaded_key = plan::SigningKey::load(key_path);
      key_stat = st;
      announcements.clear();
      for (const auto& a : cat.read([&](const catalog::Tx& tx) { return tx.key_announcements(); }))
        if (a.new_key_id == loaded_key->key_id()) announcements.push_back(to_base64(a.envelope));
    }
    return *loaded_key;
  };
  // Events up to the newest Kafka acknowledged marked published, with where
  // it acknowledged that one.
  auto mark_published = [&] {
    const int64_t seq = d.acked, offset = d.acked_offset;
    cat.transaction("controller", [&](catalog::Tx& tx) {
      tx.mark_audit_published(seq);
      if (offset >= 0)
        if (auto e = tx.audit_event(seq)) tx.set_audit_topic_mark({k.topic, seq, e->hash, offset});
    });
  };
  auto checkpoint = [&] {
    const plan::SigningKey& key = signing_key();
    audit::Checkpoint c;
    c.seq = produced;
    c.hash = produced_hash;
    c.time = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    c.key_id = key.key_id();
    c.public_key = plan::format_public_key(key.public_key());
    auto sig = key.sign(audit::checkpoint_signing_bytes(c.seq, c.hash, c.time));
    c.signature = to_base64(sig);
    c.announcements = announcements;
    produce(audit::encode_checkpoint(c), -1);
    since_checkpoint = 0;
    last_checkpoint = Clock::now();
  };

  for (;;) {
    {
      std::lock_guard lk(mu_);
      if (stop_) break;
    }
    try {
      if (!synced) {
        // Where the topic stands, judged against the outbox: only records of
        // this controller's own chain count (docs/audit.md § Exactly once).
        TopicRead t;
        TailVerdict v;
        std::string why;
        bool ok = true;
        for (int64_t window = 64;; window *= 8) {
          if (!(ok = read_topic(
                    config_, sasl_password_, [&](int64_t lo, int64_t hi) { return std::max(lo, hi - window); }, window, t, why)))
            break;
          v = cat.read([&](const catalog::Tx& tx) { return judge_tail(t, tx); });
          if (v.found || t.hi - window <= t.lo) break;  // another writer's records at the end: look further back
        }
        // A tail of checkpoints only, checked against where Kafka
        // acknowledged the newest published event (migration 0020).
        std::string unheld;
        if (ok && v.found && v.resume > 0 && v.resume_offset < 0) {
          auto mark = cat.read([](const catalog::Tx& tx) { return tx.audit_topic_mark(); });
          bool held = true;
          if (mark && mark->topic == k.topic && mark->offset >= 0 && (ok = mark_held(config_, sasl_password_, *mark, held, unheld, why))) {
            if (!held)
              v.resume = 0;
            else if (mark->seq == v.resume && mark->offset >= t.lo)
              v.resume_offset = mark->offset;
          }
        }
        if (!ok) {
          failed(why);
          if (!wait(std::chrono::duration_cast<std::chrono::milliseconds>(backoff))) break;
          backoff = std::min(backoff * 2, std::chrono::seconds(30));
          continue;
        }
        std::vector<std::string> problems;
        if (!unheld.empty()) problems.push_back(unheld);
        std::string policy_why;
        if (std::string policy = cleanup_policy(config_, sasl_password_, policy_why); policy.find("compact") != std::string::npos)
          problems.push_back("topic '" + k.topic + "' has cleanup.policy=" + policy +
                             ": every audit record has one key, so compaction keeps only the newest; set cleanup.policy=delete");
        const int64_t published = cat.read([](const catalog::Tx& tx) { return tx.audit_published_head(); });
        int64_t tail = v.resume;
        if (!v.found && t.hi > 0 && t.hi == t.lo) tail = published;  // the topic's retention removed every record
        if (v.foreign > 0) {
          problems.push_back("topic '" + k.topic + "' holds " + std::to_string(v.foreign) +
                             " record(s) this controller did not write (offsets " + std::to_string(v.foreign_first) + ".." +
                             std::to_string(v.foreign_last) + " of those read; " + v.example +
                             "); they are ignored and publishing goes on after event " + std::to_string(tail) +
                             " (one controller per topic; cairn-audit reports them)");
          std::lock_guard lk(mu_);
          status_.foreign_records += v.foreign;
        }
        if (tail < published) {
          int64_t first = 0, resent = 0;
          cat.transaction("controller", [&](catalog::Tx& tx) {
            first = tx.audit_first_after(tail);
            resent = tx.mark_audit_unpublished_after(tail);
            nlohmann::json details = {
                {"topic", k.topic}, {"topic_holds_through", tail}, {"acknowledged_through", published}, {"resent", resent}};
            if (first == 0 || first > tail + 1)
              details["lost"] = {{"first_seq", tail + 1}, {"last_seq", first == 0 ? published : first - 1}};
            tx.audit({"audit.topic_rewound", "topic:" + k.topic, "failed", "topic_rewound", details});
          });
          std::string lost = first == 0 || first > tail + 1
                                 ? "; events " + std::to_string(tail + 1) + ".." + std::to_string(first == 0 ? published : first - 1) +
                                       " are no longer in the outbox (retention) and cannot be sent again"
                                 : "";
          problems.push_back("topic '" + k.topic + "' holds this controller's events only up to " + std::to_string(tail) +
                             ", but Kafka had acknowledged them up to " + std::to_string(published) +
                             ": the topic was cut back or recreated; sending " + std::to_string(resent) +
                             " event(s) again from the outbox" + lost);
          std::lock_guard lk(mu_);
          ++status_.rewinds;
        }
        if (tail > published) cat.transaction("controller", [&](catalog::Tx& tx) { tx.mark_audit_published(tail); });
        if (v.foreign > 0)
          cat.transaction("controller", [&](catalog::Tx& tx) {
            tx.audit({"audit.topic_foreign",
                      "topic:" + k.topic,
                      "failed",
                      "foreign_records",
                      {{"topic", k.topic},
                       {"count", v.foreign},
                       {"first_offset", v.foreign_first},
                       {"last_offset", v.foreign_last},
                       {"example", v.example}}});
          });
        for (const auto& p : problems) spdlog::error("audit publisher: {}", p);
        {
          std::string joined;
          for (const auto& p : problems) joined += (joined.empty() ? "" : "; ") + p;
          std::lock_guard lk(mu_);
          status_.topic_problem = joined;
        }
        produced = marked = d.acked = tail;
        d.acked_offset = v.resume == tail ? v.resume_offset : -1;
        produced_hash.clear();
        if (tail > 0)
          if (auto e = cat.read([&](const catalog::Tx& tx) { return tx.audit_event(tail); })) produced_hash = e->hash;
        audit::KafkaConf conf(client_settings(k, sasl_password_), "cairn-controller-" + config_.controller_id);
        conf.set("enable.idempotence", "true");  // acks=all, ordered retries, no duplicates within a session
        conf.set("acks", "all");
        conf.set("message.timeout.ms", "0");  // never give up on a record: Kafka may be down for hours
        conf.set("linger.ms", "5");
        rd_kafka_conf_set_dr_msg_cb(conf.raw(), dr_cb);
        rd_kafka_conf_set_error_cb(conf.raw(), error_cb);
        rd_kafka_conf_set_opaque(conf.raw(), &d);
        producer = conf.make(RD_KAFKA_PRODUCER);
        d.error.clear();
        synced = true;
        backoff = std::chrono::seconds(1);
        next_topic_check = Clock::now() + topic_check_every;
        {
          std::lock_guard lk(mu_);
          status_.connected = true;
          status_.published_seq = tail;
          status_.last_error.clear();
          last_logged_error.clear();
        }
        spdlog::info("audit publisher: topic '{}' at {} holds events up to seq {}; publishing from there", k.topic, k.brokers, tail);
      }
      // Produce what is waiting, at most kMaxInflight unacknowledged.
      bool more = false;  // a full batch was read: more may be waiting
      if (produced - d.acked < kMaxInflight) {
        const int64_t want = std::min<int64_t>(1000, kMaxInflight - (produced - d.acked));
        auto events = cat.read([&](const catalog::Tx& tx) { return tx.unpublished_audit_events(produced, want); });
        more = int64_t(events.size()) == want;
        if (!events.empty()) spdlog::debug("audit publisher: producing events {}..{}", events.front().seq, events.back().seq);
        for (const auto& e : events) {
          produce(audit::encode_event(e), intptr_t(e.seq));
          produced = e.seq;
          produced_hash = e.hash;
          if (++since_checkpoint >= k.checkpoint_every) checkpoint();
        }
      }
      // Every checkpoint_interval_s a checkpoint, idle or not (the head signed
      // again): a reader tells a tail cut after the last one by its age.
      if ((since_checkpoint > 0 || d.acked == produced) && produced > 0 && !produced_hash.empty() &&
          Clock::now() - last_checkpoint >= std::chrono::seconds(k.checkpoint_interval_s))
        checkpoint();
      // The topic still holds the newest event Kafka acknowledged, where it
      // acknowledged it: else it was cut back or recreated while we ran.
      if (Clock::now() >= next_topic_check && d.acked == produced && d.acked > 0 && d.acked_offset >= 0) {
        next_topic_check = Clock::now() + topic_check_every;
        TopicRead t;
        std::string why;
        const int64_t at = d.acked_offset;
        bool there = true;
        if (event_at(config_, sasl_password_, at, d.acked, produced_hash, there, t, why)) {
          if (!there) {
            spdlog::error(
                "audit publisher: topic '{}' no longer holds event {} at offset {}, where Kafka acknowledged it "
                "(it holds offsets {}..{}): the topic was cut back or recreated; re-reading its end",
                k.topic, d.acked, at, t.lo, t.hi);
            producer.reset();
            synced = false;
            continue;
          }
        }
      }
      rd_kafka_poll(producer.get(), 0);
      char fatal[256];
      if (rd_kafka_fatal_error(producer.get(), fatal, sizeof fatal)) d.error = fatal;
      if (!d.error.empty()) {
        failed("a record was not delivered (" + d.error + "); rebuilding the producer and re-reading the topic's end");
        producer.reset();
        synced = false;
        continue;
      }
      // Records waiting without an acknowledgement: Kafka is away (librdkafka
      // keeps them and retries; the status says why they wait).
      if (produced > d.acked && d.acked == marked) {
        if (waiting_since == Clock::time_point{}) waiting_since = Clock::now();
        auto secs = std::chrono::duration_cast<std::chrono::seconds>(Clock::now() - waiting_since).count();
        if (secs >= 5)
          failed("Kafka at " + k.brokers + " has acknowledged nothing for " + std::to_string(secs) + " s (" +
                     std::to_string(produced - d.acked) + " records in flight" +
                     (d.transport.empty() ? "" : "; last error " + d.transport) + ")",
                 "no acknowledgement");
      } else {
        waiting_since = {};
      }
      if (d.acked > marked) {
        spdlog::debug("audit publisher: Kafka acknowledged events up to {}", d.acked);
        mark_published();
        marked = d.acked;
        std::lock_guard lk(mu_);
        status_.connected = true;
        status_.published_seq = marked;
        status_.last_error.clear();
        last_logged_error.clear();
      }
      if (d.checkpoints != reported_checkpoints) {
        reported_checkpoints = d.checkpoints;
        std::lock_guard lk(mu_);
        status_.checkpoints = d.checkpoints;
        status_.last_checkpoint_unix = std::time(nullptr);
      }
      if (Clock::now() >= next_size_check) {
        int64_t waiting = cat.read([](const catalog::Tx& tx) { return tx.audit_outbox_pending(); });
        next_size_check = Clock::now() + kSizeCheckEvery;
        if (waiting > k.outbox_warn_events) {
          spdlog::warn("audit outbox holds {} unpublished events (audit.kafka.outbox_warn_events = {}); Kafka at {}: {}", waiting,
                       k.outbox_warn_events, k.brokers, status().last_error.empty() ? "slow" : status().last_error);
          next_size_check = Clock::now() + kWarnEvery;
        }
      }
      if (more || produced > d.acked) {
        // A backlog, or acknowledgements to wait for: serve the producer, do not sleep.
        rd_kafka_poll(producer.get(), more ? 0 : 5);
        std::lock_guard lk(mu_);
        if (stop_) break;
      } else if (!wait(kPoll)) {
        break;
      }
    } catch (const Error& e) {
      failed(e.what());
      producer.reset();
      synced = false;
      if (!wait(std::chrono::duration_cast<std::chrono::milliseconds>(backoff))) break;
      backoff = std::min(backoff * 2, std::chrono::seconds(30));
    }
  }
  // Leaving: give what is in flight a moment, so the next start re-sends less.
  if (producer) {
    rd_kafka_flush(producer.get(), 2000);
    rd_kafka_poll(producer.get(), 0);
    if (d.acked > marked) mark_published();
  }
}

}  // namespace cairn::controller
