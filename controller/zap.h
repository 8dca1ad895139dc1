#pragma once
// The ZAP handler (RFC 27): who gets past the CURVE handshake. The fleet
// socket admits approved agents (and, with enrolment open, unknown and
// pending keys, which may only Register); the operator socket admits active
// operators. Everything else is refused before the application sees a byte.
#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <zmq.hpp>

#include "controller/catalog/catalog.h"
#include "controller/keyfiles.h"

namespace cairn::controller {

inline constexpr const char* kFleetZapDomain = "cairn-fleet";
inline constexpr const char* kOperatorZapDomain = "cairn-operator";

struct ZapDecision {
  bool allow = false;
  std::string user_id;    // reaches message metadata as "User-Id": "agent:<z85>" or "operator:<name>"
  std::string reason;     // why refused, lowercase
  bool enrolled = false;  // an unknown agent key was recorded as pending
};

// What an unknown key may add to the catalog (docs/configuration.md).
struct EnrolLimits {
  size_t max_pending = 100;  // fleet.max_pending_agents: oldest pending dropped beyond it
  bool may_record = true;    // false once this minute's audit budget is spent: not recorded now
};

// The decision alone, against the catalog: unit-tested without sockets.
// With enrolment closed an unknown fleet key is recorded as a `pending` agent
// (placeholder name "pending-<hex>") and refused, so an operator can see and
// approve it; nothing from that key reaches the controller until then. The
// pending list keeps the newest limits.max_pending agents; without
// limits.may_record the key is refused and not recorded (its next attempt is).
ZapDecision decide_zap(catalog::Tx& tx, std::string_view domain, const CurveKey& key, bool enrolment_open, const EnrolLimits& limits = {});

// The audit budget of refused keys (docs/configuration.md,
// audit.refusals_per_minute): at most `per_minute` audit events a minute for
// refusals and enrolments at the handshake; the rest are counted and written
// as one `login.refuse_suppressed` event when the minute ends.
class RefusalBudget {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RefusalBudget(uint32_t per_minute) : per_minute_(per_minute) {}
  // Starts a new window when the current one is over; returns how many
  // events the ending window suppressed (to summarise), else 0.
  uint64_t roll(Clock::time_point now);
  bool available() const { return used_ < per_minute_; }
  void spend() { ++used_; }
  void suppress() { ++suppressed_; }

 private:
  uint32_t per_minute_;
  uint32_t used_ = 0;
  uint64_t suppressed_ = 0;
  Clock::time_point window_{};
};

// Serves ZAP requests on inproc://zeromq.zap.01 of the given context. Bind it
// before any CURVE socket binds, or libzmq handshakes without a handler.
class ZapServer {
 public:
  ZapServer(zmq::context_t& ctx, catalog::Catalog& catalog, bool enrolment_open, size_t max_pending_agents, uint32_t refusals_per_minute);
  zmq::socket_t& socket() { return socket_; }
  // Answers one waiting request; never throws on a bad request.
  void handle_one();
  // Writes the summary of refusals the ended minute did not audit; call often.
  void tick();

 private:
  bool should_audit(const std::string& key_hex);

  zmq::socket_t socket_;
  catalog::Catalog& catalog_;
  bool enrolment_open_;
  size_t max_pending_;
  RefusalBudget budget_;
  // A refused key retries with backoff; one audit event a minute per key is enough.
  std::map<std::string, std::chrono::steady_clock::time_point> last_audit_;
};

}  // namespace cairn::controller
