#pragma once
// The audit publisher (docs/audit.md): ships the catalog's audit outbox to a
// Kafka topic, in seq order, exactly once, with signed checkpoints.
//
// One thread with its own catalog connection (SQLite WAL: it reads while the
// server writes). It produces with librdkafka's idempotent producer
// (acks=all, no message timeout) to partition 0 of the topic, key
// "cairn-audit", so Kafka keeps the order and a broker that comes back gets
// the queued records once. An event is marked published only when Kafka has
// acknowledged it. Across restarts (the controller's, or a producer that had
// to be rebuilt) it first reads the topic's tail: every event up to the
// newest seq found there is marked published, and publishing resumes after
// it, so a record acknowledged before a crash is not sent twice. While Kafka
// is down or unreachable events wait in the outbox; the controller keeps
// working.
//
// After every `checkpoint_every` events, and at least every
// `checkpoint_interval_s` while events are published, it publishes a
// checkpoint: the chain head signed with the controller's plan-signing key
// (read from key_dir each time, so a rotation is followed), with the key
// announcements that introduced that key.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "controller/config.h"

namespace cairn::controller {

struct PublisherStatus {
  bool enabled = false;
  bool connected = false;            // the topic's position is known and the last produce succeeded
  int64_t published_seq = 0;         // newest event Kafka acknowledged
  int64_t checkpoints = 0;           // checkpoints acknowledged since start
  std::string last_error;            // empty when none since the last success
  std::string topic_problem;         // what the topic holds that it should not, or lacks (empty: nothing)
  int64_t foreign_records = 0;       // records read on the topic this controller did not write
  int64_t rewinds = 0;               // times the topic had lost acknowledged events (re-sent)
  int64_t last_checkpoint_unix = 0;  // when the newest checkpoint was acknowledged
};

class AuditPublisher {
 public:
  // Reads the SASL password file (0600) now: a bad file fails the start.
  AuditPublisher(const ControllerConfig& config);
  ~AuditPublisher();
  AuditPublisher(const AuditPublisher&) = delete;
  AuditPublisher& operator=(const AuditPublisher&) = delete;

  void start();
  void stop();
  // New events were committed: publish soon (it also polls every 200 ms).
  void notify();
  PublisherStatus status() const;

 private:
  void run();

  const ControllerConfig& config_;
  std::string sasl_password_;
  std::thread thread_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  bool poke_ = false;
  PublisherStatus status_;
};

}  // namespace cairn::controller
