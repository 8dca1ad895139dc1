// ZAP decisions and the inproc handler socket.
#include "controller/zap.h"

#include <spdlog/spdlog.h>

#include <cstring>
#include <zmq_addon.hpp>

#include "common/util/encoding.h"
#include "common/util/error.h"

namespace cairn::controller {

ZapDecision decide_zap(catalog::Tx& tx, std::string_view domain, const CurveKey& key, bool enrolment_open, const EnrolLimits& limits) {
  ZapDecision d;
  if (domain == kOperatorZapDomain) {
    if (auto name = tx.active_operator_name(key)) {
      d.allow = true;
      d.user_id = "operator:" + *name;
    } else {
      d.reason = "key is not an active operator key";
    }
    return d;
  }
  if (domain != kFleetZapDomain) {
    d.reason = "unknown zap domain '" + std::string(domain) + "'";
    return d;
  }
  auto agent = tx.agent_by_key(key);
  if (!agent) {
    if (enrolment_open) {
      // May only Register, which records it as pending (docs/protocol.md).
      d.allow = true;
      d.user_id = "agent:" + key_to_z85(key);
      return d;
    }
    if (!limits.may_record) {
      d.reason = "unknown agent key; not recorded now (too many unknown keys this minute), a later attempt will be";
      return d;
    }
    tx.enrol_agent("pending-" + to_hex(key).substr(0, 12), key, "", "");
    tx.drop_oldest_pending_agents(limits.max_pending);
    d.enrolled = true;
    d.reason = "unknown agent key; recorded as pending, an operator must approve it";
    return d;
  }
  switch (agent->state) {
    case catalog::AgentState::approved:
      d.allow = true;
      break;
    case catalog::AgentState::pending:
      // A known key knocking: the identity is not lost (a rebuilt one that
      // never knocks may be, and its name passes to an approved agent).
      if (!agent->last_seen_at) tx.touch_agent(agent->id);
      d.allow = enrolment_open;
      if (!d.allow) d.reason = "agent '" + agent->name + "' is pending approval";
      break;
    case catalog::AgentState::revoked:
      d.reason = "agent '" + agent->name + "' is revoked";
      break;
  }
  if (d.allow) d.user_id = "agent:" + key_to_z85(key);
  return d;
}

uint64_t RefusalBudget::roll(Clock::time_point now) {
  if (window_ != Clock::time_point{} && now - window_ < std::chrono::minutes(1)) return 0;
  uint64_t ended = suppressed_;
  window_ = now;
  used_ = 0;
  suppressed_ = 0;
  return ended;
}

ZapServer::ZapServer(zmq::context_t& ctx, catalog::Catalog& catalog, bool enrolment_open, size_t max_pending_agents,
                     uint32_t refusals_per_minute)
    : socket_(ctx, zmq::socket_type::rep),
      catalog_(catalog),
      enrolment_open_(enrolment_open),
      max_pending_(max_pending_agents),
      budget_(refusals_per_minute) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.bind("inproc://zeromq.zap.01");
}

bool ZapServer::should_audit(const std::string& key_hex) {
  auto now = std::chrono::steady_clock::now();
  auto it = last_audit_.find(key_hex);
  if (it != last_audit_.end() && now - it->second < std::chrono::minutes(1)) return false;
  if (last_audit_.size() > 10000) last_audit_.clear();  // bounded whatever the number of strangers
  last_audit_[key_hex] = now;
  return true;
}

void ZapServer::tick() {
  uint64_t suppressed = budget_.roll(std::chrono::steady_clock::now());
  if (suppressed == 0) return;
  spdlog::warn("zap: {} more refusals of unknown or refused keys in the last minute were not audited", suppressed);
  try {
    catalog_.transaction("controller", [&](catalog::Tx& tx) {
      tx.audit({"login.refuse_suppressed", "fleet", "refused", "audit budget spent", {{"count", suppressed}, {"window_seconds", 60}}});
    });
  } catch (const std::exception& e) {
    spdlog::error("zap: cannot audit suppressed refusals: {}", e.what());
  }
}

void ZapServer::handle_one() {
  std::vector<zmq::message_t> frames;
  try {
    if (!zmq::recv_multipart(socket_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
  } catch (const zmq::error_t& e) {
    spdlog::warn("zap: receive failed: {}", e.what());
    return;
  }
  // RFC 27: version, request id, domain, address, identity, mechanism, credentials...
  std::string request_id = frames.size() > 1 ? frames[1].to_string() : "";
  std::string status = "400", text = "refused", user_id;
  if (frames.size() >= 7 && frames[0].to_string_view() == "1.0" && frames[5].to_string_view() == "CURVE" && frames[6].size() == 32) {
    CurveKey key{};
    std::memcpy(key.data(), frames[6].data(), key.size());
    std::string domain = frames[2].to_string();
    std::string address = frames[3].to_string();
    try {
      // A refused agent retries every few seconds: the refusal is logged and
      // audited once a minute per key, not at every attempt, and all refused
      // keys together add at most the budget's events a minute.
      tick();
      bool noted = false;
      auto d = catalog_.transaction("controller", [&](catalog::Tx& tx) {
        auto d = decide_zap(tx, domain, key, enrolment_open_, {max_pending_, budget_.available()});
        if (d.allow) return d;
        noted = should_audit(to_hex(key));
        if (d.enrolled) {
          budget_.spend();
        } else if (noted && budget_.available()) {
          tx.audit({"login.refuse",
                    "key:" + to_hex(key),
                    "refused",
                    "unauthenticated",
                    {{"domain", domain}, {"address", address}, {"why", d.reason}}});
          budget_.spend();
        } else if (noted) {
          budget_.suppress();
          noted = false;
        }
        return d;
      });
      if (d.allow) {
        status = "200";
        text = "OK";
        user_id = d.user_id;
      } else {
        text = d.reason;
        if (noted) spdlog::info("zap: refused {} key {} from {}: {}", domain, key_to_z85(key), address, d.reason);
      }
    } catch (const std::exception& e) {
      // Fail closed: a catalog error admits nobody.
      status = "500";
      text = "internal error";
      spdlog::error("zap: cannot decide for {}: {}", address, e.what());
    }
  } else {
    text = "only CURVE is accepted";
  }
  std::array<zmq::const_buffer, 6> reply = {zmq::str_buffer("1.0"), zmq::buffer(request_id), zmq::buffer(status),
                                            zmq::buffer(text),      zmq::buffer(user_id),    zmq::const_buffer()};
  try {
    zmq::send_multipart(socket_, reply);
  } catch (const zmq::error_t& e) {
    spdlog::warn("zap: reply failed: {}", e.what());
  }
}

}  // namespace cairn::controller
