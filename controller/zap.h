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
  std::string user_id;  // reaches message metadata as "User-Id": "agent:<z85>" or "operator:<name>"
  std::string reason;   // why refused, lowercase
  bool enrolled = false;  // an unknown agent key was recorded as pending
};

// The decision alone, against the catalog: unit-tested without sockets.
// With enrolment closed an unknown fleet key is recorded as a `pending` agent
// (placeholder name "pending-<hex>") and refused, so an operator can see and
// approve it; nothing from that key reaches the controller until then.
ZapDecision decide_zap(catalog::Tx& tx, std::string_view domain, const CurveKey& key, bool enrolment_open);

// Serves ZAP requests on inproc://zeromq.zap.01 of the given context. Bind it
// before any CURVE socket binds, or libzmq handshakes without a handler.
class ZapServer {
 public:
  ZapServer(zmq::context_t& ctx, catalog::Catalog& catalog, bool enrolment_open);
  zmq::socket_t& socket() { return socket_; }
  // Answers one waiting request; never throws on a bad request.
  void handle_one();

 private:
  bool should_audit(const std::string& key_hex);

  zmq::socket_t socket_;
  catalog::Catalog& catalog_;
  bool enrolment_open_;
  // A refused key retries with backoff; one audit event a minute per key is enough.
  std::map<std::string, std::chrono::steady_clock::time_point> last_audit_;
};

}  // namespace cairn::controller
