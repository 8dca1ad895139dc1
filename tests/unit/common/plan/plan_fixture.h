#pragma once
// Shared pieces of the plan tests: a temp dir that cleans up, and a plan
// signed the way the controller signs it.
#include <array>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/plan/signer.h"
#include "common/plan/signing_key.h"
#include "common/plan/trust_store.h"
#include "proto/cairn.pb.h"

namespace cairn::plan::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "cairn-plan-XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  std::filesystem::path path_;
};

inline constexpr int64_t kNow = 1'700'000'000;

inline std::array<uint8_t, 32> agent_key(uint8_t fill) {
  std::array<uint8_t, 32> k{};
  k.fill(fill);
  return k;
}

// A valid plan for agent_key(1), sequence `seq`, valid [kNow-10, kNow+600).
inline cairn::v1::PlanPayload make_plan(const std::string& plan_id, uint64_t seq) {
  cairn::v1::PlanPayload p;
  p.set_plan_id(plan_id);
  auto key = agent_key(1);
  p.set_target_agent_key(key.data(), key.size());
  p.set_issued_at(kNow - 10);
  p.set_not_before(kNow - 10);
  p.set_expires_at(kNow + 600);
  p.set_sequence(seq);
  p.set_controller_id("ctl-test");
  set_random_nonce(p);
  auto* t = p.add_tasks();
  t->set_task_id(plan_id + "-t1");
  t->set_component("etc-files");
  t->set_kind(cairn::v1::TASK_KIND_BACKUP);
  return p;
}

inline TrustStore trust_of(const SigningKey& key) {
  TrustStore t;
  t.add(key.public_key(), kNow, "config");
  return t;
}

}  // namespace cairn::plan::test
