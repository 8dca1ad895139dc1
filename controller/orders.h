#pragma once
// Turning an operator's request into catalog rows and signed plans: a backup
// set (or restore) with one task per (approved agent, declared component), one
// plan per agent with the next sequence, all in one transaction with its
// audit events. Delivery is the fleet's job (Fleet::deliver).
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/plan/signing_key.h"
#include "controller/catalog/catalog.h"
#include "controller/config.h"
#include "proto/cairn.pb.h"

namespace cairn::controller {

// A request refused with a wire code (NOT_FOUND, NOTHING_SELECTED, CONFLICT...).
class OpError : public std::runtime_error {
 public:
  OpError(cairn::v1::ErrorCode code, std::string detail) : std::runtime_error(std::move(detail)), code_(code) {}
  cairn::v1::ErrorCode code() const { return code_; }

 private:
  cairn::v1::ErrorCode code_;
};

struct Ordered {
  std::string id;                      // backup set or restore id
  std::vector<std::string> agent_ids;  // agents with a new plan
};

// What a policy's run adds to a backup order.
struct BackupExtras {
  std::string trigger = "manual";  // "schedule" for a policy's run
  std::string policy;
  std::string repository;  // a declared repository name; empty = each component's default
};

// The selector as the catalog keeps it (backup_sets.selector, policies.selector), and back.
nlohmann::json selector_json(const cairn::v1::Selector& s);
cairn::v1::Selector selector_from_json(const nlohmann::json& j);

// What a backup with this selector (a policy's, with its repository; ""
// each component's default) would be counted as now: the agent's name, the
// component and the repository of each task it would make. /metrics starts
// the backup counters of each at 0.
struct BackupTarget {
  std::string agent, component, repository;
};
std::vector<BackupTarget> backup_targets(const catalog::Tx& tx, const cairn::v1::Selector& selector, const std::string& repository);

class Orders {
 public:
  Orders(catalog::Catalog& catalog, const ControllerConfig& config, const plan::SigningKey& key)
      : catalog_(catalog), config_(config), key_(key) {}

  // mode: set on the tasks of components that declare it (none must be refused).
  Ordered create_backup(const std::string& actor, const cairn::v1::Selector& selector, const std::string& mode = {},
                        const BackupExtras& extras = {});
  Ordered create_restore(const std::string& actor, const cairn::v1::RestoreRequest& request);
  // A restore drill (docs/drills.md): the set's (or the newest set's)
  // selected snapshots restored and checked in a sandbox on a drill agent.
  Ordered create_drill(const std::string& actor, const cairn::v1::DrillRequest& request);

  // Whether an agent is connected now: a cluster-scoped component is backed
  // up from a connected member. Unset: every member counts as connected.
  void set_connected(std::function<bool(const std::string&)> connected) { connected_ = std::move(connected); }
  // Whether a connected agent announced a feature (Register.features).
  void set_supports(std::function<bool(const std::string&, const std::string&)> supports) { supports_ = std::move(supports); }

  // The catalog's TaskEndedHook: when every member ended a step of a cluster
  // restore, the next step's tasks and plans are made in the same
  // transaction (docs/protocol.md § Cluster restore).
  void on_task_ended(catalog::Tx& tx, const catalog::Task& task);
  // When an agent registers: the rollbacks ended restores still owe its
  // members (an operator cancelled them while it was away) are made again,
  // their plans signed, for the fleet to deliver now. How many.
  size_t issue_owed_rollbacks(catalog::Tx& tx, const std::string& agent_id);
  // Agents with plans made by on_task_ended since the last call (the fleet
  // delivers them).
  std::vector<std::string> take_agents_to_deliver();

 private:
  void next_cluster_step(catalog::Tx& tx, const catalog::Task& ended);
  void release_deferred(catalog::Tx& tx, const catalog::Task& ended);
  std::function<bool(const std::string&)> connected_;
  std::function<bool(const std::string&, const std::string&)> supports_;
  std::vector<std::string> to_deliver_;
  catalog::Catalog& catalog_;
  const ControllerConfig& config_;
  const plan::SigningKey& key_;
};

}  // namespace cairn::controller
