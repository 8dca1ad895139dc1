#include "agent/restore_verify.h"

#include <cmath>

#include "agent/drivers/repo_progress.h"

namespace cairn::agent {

namespace v1 = cairn::v1;

nlohmann::json read_back_json(const repo::VerifyResult& r) {
  return {{"bytes", r.bytes}, {"blobs", r.blobs},           {"trees", r.trees},
          {"packs", r.packs}, {"bytes_read", r.bytes_read}, {"seconds", std::round(r.seconds * 1000) / 1000}};
}

std::vector<v1::Reason> verify_restore_snapshot(TaskContext& ctx, const std::string& snapshot_id, repo::VerifyResult* stats) {
  const std::string sid = snapshot_id.substr(0, 8);
  const std::string where = "repository '" + ctx.repo->backend().location() + "'";
  repo::VerifyOptions vo;
  vo.memory_budget = ctx.memory_budget;
  vo.cancel = ctx.cancel;
  vo.progress = repo_progress(ctx, v1::PHASE_VERIFY);
  repo::VerifyResult res;
  try {
    res = repo::verify_snapshot(*ctx.repo, snapshot_id, vo);
  } catch (const Error& e) {
    const v1::ErrorCode code = e.code() == Errc::corrupt     ? v1::ERROR_CODE_REPOSITORY_CORRUPT
                               : e.code() == Errc::not_found ? v1::ERROR_CODE_SNAPSHOT_NOT_FOUND
                                                             : repository_read_code(e);
    return {make_reason(code, "snapshot '" + sid + "' could not be read back from " + where + " before the restore: " + e.what() +
                                  "; nothing was stopped or changed")};
  }
  if (stats) *stats = res;
  if (res.ok()) return {};
  const uint64_t damaged = res.failures.size() + res.failures_omitted;
  std::vector<v1::Reason> out;
  out.push_back(make_reason(v1::ERROR_CODE_REPOSITORY_CORRUPT,
                            "snapshot '" + sid + "' cannot be read back whole from " + where + ": " +
                                repo::verify_failure_line(res.failures.front()) +
                                (damaged > 1 ? " (and " + std::to_string(damaged - 1) + " more damaged blob(s))" : std::string()) +
                                "; the restore is refused before anything was stopped or changed: run 'cairnctl repo check --read-data' on "
                                "that repository to list all the damage, put the damaged packs back from a copy of the repository, or "
                                "restore another backup set",
                            res.failures.front().path));
  for (size_t i = 1; i < res.failures.size() && i <= kMaxDamageReasons; ++i)
    out.push_back(make_reason(v1::ERROR_CODE_REPOSITORY_CORRUPT, repo::verify_failure_line(res.failures[i]), res.failures[i].path));
  return out;
}

}  // namespace cairn::agent
