#pragma once
// The operator API: one OperatorRequest in, one OperatorResponse out
// (docs/protocol.md § Operator API). The actor of every change is the
// operator the ZAP handler authenticated.
#include <string>
#include <vector>

#include "common/plan/signing_key.h"
#include "controller/audit_publisher.h"
#include "controller/catalog/catalog.h"
#include "controller/config.h"
#include "controller/fleet.h"
#include "controller/orders.h"
#include "controller/scheduler.h"
#include "controller/verification.h"
#include "proto/cairn.pb.h"

namespace cairn::controller {

// Catalog states as the wire names them (the wire's enums start at 1, after UNSPECIFIED).
inline cairn::v1::TaskState wire_state(catalog::TaskState s) { return cairn::v1::TaskState(int(s) + 1); }
inline cairn::v1::SetState wire_state(catalog::SetState s) { return cairn::v1::SetState(int(s) + 1); }
inline cairn::v1::AgentState wire_state(catalog::AgentState s) { return cairn::v1::AgentState(int(s) + 1); }

class OperatorApi {
 public:
  // signing_key is the controller's active key; a key rotation replaces it
  // (Orders signs with the same object). key_dir holds its file.
  // publisher (may be null) reports the audit trail's state in `status`.
  OperatorApi(catalog::Catalog& catalog, Fleet& fleet, Orders& orders, plan::SigningKey& signing_key, std::string key_dir,
              const AuditPublisher* publisher = nullptr)
      : catalog_(catalog), fleet_(fleet), orders_(orders), signing_key_(signing_key), key_dir_(std::move(key_dir)), publisher_(publisher) {}

  // Policies and retention (operator_policies.cc) need the scheduler.
  // default_tz: of policies added without one ([scheduler] time_zone).
  void set_scheduler(Scheduler* scheduler, std::string default_tz) {
    scheduler_ = scheduler;
    scheduler_tz_ = std::move(default_tz);
  }

  // The configuration (outlives this object): the repositories the
  // controller opens itself ([[repository]]), for imports, and the cluster's
  // name, for exports.
  void set_config(const ControllerConfig& config) { config_ = &config; }

  // What the periodic verification found, for `status` (may stay null).
  void set_verifier(const Verifier* verifier) { verifier_ = verifier; }

  // actor is "operator:<name>". Never throws.
  cairn::v1::OperatorResponse handle(const std::string& actor, const cairn::v1::OperatorRequest& request);

 private:
  void dispatch(const std::string& actor, const cairn::v1::OperatorRequest& q, cairn::v1::OperatorResponse& r);
  void fill_set(const catalog::Tx& tx, const std::string& id, cairn::v1::BackupSetInfo& out) const;
  void fill_restore(const catalog::Tx& tx, const std::string& id, cairn::v1::RestoreInfo& out) const;
  void fill_agent(const catalog::Tx& tx, const catalog::Agent& a, cairn::v1::AgentInfo& out) const;
  void fill_task(const catalog::Tx& tx, const catalog::Task& t, cairn::v1::TaskInfo& out) const;
  // Approved agents picked by the selector that are not connected now (names),
  // read before the order's transaction (the fleet is never asked inside one).
  std::vector<std::string> offline_selected(const cairn::v1::Selector& selector) const;
  void policy(const std::string& actor, const cairn::v1::PolicyRequest& q, cairn::v1::OperatorResponse& r);
  void forget(const std::string& actor, const cairn::v1::ForgetRequest& q, cairn::v1::OperatorResponse& r);
  void import_set(const std::string& actor, const cairn::v1::ImportRequest& q, cairn::v1::OperatorResponse& r);
  void attest_export(const std::string& actor, const cairn::v1::ExportAttestRequest& q, cairn::v1::OperatorResponse& r);
  // Ends the open tasks of a backup set or restore (backup cancel).
  void cancel(const std::string& actor, const std::string& id, cairn::v1::OperatorResponse& r);

  catalog::Catalog& catalog_;
  Fleet& fleet_;
  Orders& orders_;
  plan::SigningKey& signing_key_;
  std::string key_dir_;
  const AuditPublisher* publisher_;
  Scheduler* scheduler_ = nullptr;
  std::string scheduler_tz_ = "UTC";
  const ControllerConfig* config_ = nullptr;
  const Verifier* verifier_ = nullptr;
};

}  // namespace cairn::controller
