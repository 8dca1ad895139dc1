#include "common/plan/verify_plan.h"

#include <algorithm>
#include <set>

#include "common/plan/envelope.h"
#include "common/util/error.h"
#include "proto/protocol.h"

namespace cairn::plan {
namespace {

using cairn::v1::ErrorCode;
using V = Verdict<VerifiedPlan>;

// Shape rules of a parsed payload; an empty string means it keeps them all.
std::string shape_error(const cairn::v1::PlanPayload& p, const VerifyOptions& o) {
  if (p.plan_id().empty()) return "plan has no id";
  if (p.target_agent_key().size() != 32) return "plan target key is not 32 bytes";
  if (p.nonce().size() < o.min_nonce_bytes) return "plan nonce is shorter than " + std::to_string(o.min_nonce_bytes) + " bytes";
  if (p.sequence() == 0) return "plan sequence is 0";
  // Negative times are never issued; refusing them also keeps the window
  // arithmetic below free of overflow.
  if (p.issued_at() < 0 || p.not_before() < 0) return "plan times are negative";
  if (p.expires_at() <= p.not_before()) return "plan expires_at is not after not_before";
  if (p.expires_at() - p.not_before() > o.max_validity_seconds)
    return "plan is valid for longer than " + std::to_string(o.max_validity_seconds) + " seconds";
  if (p.tasks().empty()) return "plan has no tasks";
  std::set<std::string> ids;
  for (const auto& t : p.tasks()) {
    if (t.task_id().empty()) return "a task has no id";
    if (!ids.insert(t.task_id()).second) return "task id '" + t.task_id() + "' appears twice";
    if (t.component().empty()) return "task '" + t.task_id() + "' names no component";
    if (t.kind() != cairn::v1::TASK_KIND_BACKUP && t.kind() != cairn::v1::TASK_KIND_RESTORE && t.kind() != cairn::v1::TASK_KIND_DRILL)
      return "task '" + t.task_id() + "' has no known kind";
    if (t.kind() != cairn::v1::TASK_KIND_BACKUP && t.snapshot().snapshot_id().empty())
      return (t.kind() == cairn::v1::TASK_KIND_DRILL ? "drill task '" : "restore task '") + t.task_id() + "' names no snapshot";
  }
  return {};
}

}  // namespace

Verdict<VerifiedPlan> verify_plan(std::span<const uint8_t> envelope, const TrustStore& trust, std::span<const uint8_t> agent_key,
                                  int64_t now, const ReplayJournal& journal, const VerifyOptions& options) {
  auto opened = open_envelope(envelope, trust, proto::kPlanPayloadType);
  if (!opened) return V::reject(opened);

  VerifiedPlan out;
  out.key_id = opened->key_id;
  auto& p = out.plan;
  if (!p.ParseFromArray(opened->payload.data(), int(opened->payload.size())))
    return V::reject(ErrorCode::ERROR_CODE_MALFORMED_PAYLOAD, "plan payload does not parse");
  if (std::string why = shape_error(p, options); !why.empty()) return V::reject(ErrorCode::ERROR_CODE_MALFORMED_PAYLOAD, why);

  const auto& target = p.target_agent_key();
  if (!std::equal(target.begin(), target.end(), agent_key.begin(), agent_key.end(), [](char a, uint8_t b) { return uint8_t(a) == b; }))
    return V::reject(ErrorCode::ERROR_CODE_WRONG_TARGET, "plan '" + p.plan_id() + "' is for another agent");

  if (now < p.not_before() - options.clock_skew_seconds)
    return V::reject(ErrorCode::ERROR_CODE_NOT_YET_VALID, "plan '" + p.plan_id() + "' is not valid before " +
                                                              std::to_string(p.not_before()) + " (now " + std::to_string(now) + ")");
  if (now >= p.expires_at())
    return V::reject(ErrorCode::ERROR_CODE_EXPIRED,
                     "plan '" + p.plan_id() + "' expired at " + std::to_string(p.expires_at()) + " (now " + std::to_string(now) + ")");

  if (journal.seen_plan_id(p.plan_id()))
    return V::reject(ErrorCode::ERROR_CODE_REPLAYED, "plan '" + p.plan_id() + "' was already accepted");
  if (journal.seen_nonce(p.nonce()))
    return V::reject(ErrorCode::ERROR_CODE_REPLAYED, "plan '" + p.plan_id() + "' reuses the nonce of an accepted plan");
  uint64_t highest = journal.highest_sequence(p.controller_id());
  if (p.sequence() <= highest)
    return V::reject(ErrorCode::ERROR_CODE_OLDER_SEQUENCE, "plan '" + p.plan_id() + "' has sequence " + std::to_string(p.sequence()) +
                                                               ", not above the accepted " + std::to_string(highest));
  return V::accept(std::move(out));
}

Verdict<VerifiedPlan> accept_plan(std::span<const uint8_t> envelope, const TrustStore& trust, std::span<const uint8_t> agent_key,
                                  int64_t now, ReplayJournal& journal, const VerifyOptions& options) {
  auto verdict = verify_plan(envelope, trust, agent_key, now, journal, options);
  if (!verdict) return verdict;
  try {
    journal.record(verdict->plan, now);
  } catch (const Error& e) {
    return V::reject(ErrorCode::ERROR_CODE_INTERNAL, std::string("cannot record the plan in the replay journal: ") + e.what());
  }
  return verdict;
}

}  // namespace cairn::plan
