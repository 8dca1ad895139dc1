#pragma once
// What the order files share (orders.cc, orders_backup.cc, orders_drill.cc,
// orders_restore.cc, orders_cluster.cc): the selection of components, the
// checks a restore makes, the locks, and the signing of a batch of plans.
// Internal to the controller: nothing outside controller/orders*.cc includes it.
#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/plan/signer.h"
#include "common/util/cpus.h"
#include "controller/orders.h"

namespace cairn::controller::orders_detail {

using catalog::Tx;

struct Pick {
  catalog::Agent agent;
  std::string component;
  std::vector<std::string> restore_targets;  // declared by the agent for this component
  std::string driver;
  std::string cluster_id;          // set for a cluster-scoped component
  std::vector<std::string> modes;  // the driver's modes, the default first
  // A member-scoped component (a Kafka broker): its own data, one member of
  // cluster member_of; several members restored at once go in steps.
  std::string member_of;
  std::string repository;  // the component's default repository, as its agent declares it
};

bool clustered(const Pick& p);
// The operation lock of a pick: its component's on the agent, or its cluster's.
std::string lock_target(const Pick& p);
// A member's task's cluster lock; "" when the agent no longer declares the component.
std::string cluster_lock_of(const Tx& tx, const std::string& agent_id, const std::string& component, const std::string& cluster_id);
// The token of the new cluster a restore makes.
std::string cluster_token(const std::string& restore_id, const std::string& cluster_id);
// Whether a selector's list (empty: everything) names a or b.
bool listed(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& a, const std::string& b = {});
// Node names the selector gives that match no agent are refused (NOT_FOUND).
void check_names(const Tx& tx, const cairn::v1::Selector& sel);
bool has_labels(const catalog::Agent& a, const cairn::v1::Selector& sel);
// The approved agents' components a selector picks (select: names checked first).
std::vector<Pick> select_known(const Tx& tx, const cairn::v1::Selector& sel, bool restore);
std::vector<Pick> select(const Tx& tx, const cairn::v1::Selector& sel, bool restore);
std::string quoted_list(const std::vector<std::string>& names);
void check_restore_target(const std::vector<Pick>& picks, const std::string& target);
std::string restore_repository(const Tx& tx, const std::string& agent_id, const std::string& component, const std::string& snapshot);
std::string restore_task_repository(const Tx& tx, const catalog::NewTask& nt);
// One restore task as the agent gets it.
cairn::v1::Task restore_wire(const Tx& tx, const catalog::Task& t, const std::string& set_id, const std::string& restore_id);
void check_whole_clusters(const Tx& tx, const std::vector<Pick>& picks, const std::string& target);
void check_members_present(const Tx& tx, const std::vector<Pick>& picks, const std::function<const catalog::Task*(const Pick&)>& source_of);
void check_members_connected(const std::vector<Pick>& picks, const std::function<bool(const std::string&)>& connected,
                             const std::function<bool(const std::string&, const std::string&)>& supports);
std::string write_mode_name(cairn::v1::RestoreWriteMode m);
std::string new_plan_id();
// Takes the operation lock of every pick, or refuses the order (CONFLICT) naming the holder.
void lock_targets(Tx& tx, const std::vector<Pick>& picks, catalog::TaskKind kind, const std::string& holder, int64_t ttl);
// An unattested set is restored or drilled only with the audited override.
void check_attested(Tx& tx, const catalog::BackupSet& set, bool accepted, const std::string& what);

// The plans of one order. Each plan's row is written as it is added (its
// sequence number goes into the payload) and its payload handed to signing
// threads, which sign while the next plans' rows are written; the envelopes
// are stored at the end. An Ed25519 signature (15-30 µs) is a sizeable
// share of a plan's cost, and needs nothing from the catalog. An order of
// a few plans signs them on this thread.
class PlanBatch {
 public:
  PlanBatch(Tx& tx, const ControllerConfig& config, const plan::SigningKey& key) : tx_(tx), config_(config), key_(key) {}
  PlanBatch(const PlanBatch&) = delete;
  PlanBatch& operator=(const PlanBatch&) = delete;
  ~PlanBatch() {  // an order that failed half way: the threads end, the transaction rolls back
    {
      std::lock_guard lock(mu_);
      abandoned_ = true;
    }
    stop();
  }

  // Issues one plan for the agent over the given task ids (its row, its tasks bound to it).
  void add(const catalog::Agent& agent, const std::vector<std::string>& catalog_task_ids, const std::vector<cairn::v1::Task>& tasks) {
    catalog::NewPlan np;
    np.plan_id = new_plan_id();
    np.agent_id = agent.id;
    np.key_id = key_.key_id();
    np.issued_at = tx_.now();
    np.not_before = tx_.now();
    np.expires_at = tx_.now() + config_.plan_validity_seconds;
    np.task_ids = catalog_task_ids;
    uint64_t seq = tx_.issue_plan(agent, np);

    cairn::v1::PlanPayload p;
    p.set_plan_id(np.plan_id);
    p.set_target_agent_key(std::string(agent.curve_public_key.begin(), agent.curve_public_key.end()));
    p.set_issued_at(np.issued_at);
    p.set_not_before(np.not_before);
    p.set_expires_at(np.expires_at);
    p.set_sequence(seq);
    p.set_controller_id(config_.controller_id);
    plan::set_random_nonce(p);
    for (const auto& t : tasks) *p.add_tasks() = t;
    {
      std::lock_guard lock(mu_);
      items_.push_back({std::move(p), {}});
      if (workers_.empty() && items_.size() >= kThreadedFrom) start();
    }
    ready_.notify_one();
  }

  // Signs what is left and stores every envelope, in the order added. Once,
  // after the last add().
  void sign_and_store() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    ready_.notify_all();
    sign_queued();  // this thread helps
    stop();
    if (error_) std::rethrow_exception(error_);
    for (auto& it : items_) tx_.set_plan_envelope(it.payload.plan_id(), it.envelope);
  }

 private:
  static constexpr size_t kThreadedFrom = 32;
  struct Item {
    cairn::v1::PlanPayload payload;
    Bytes envelope;
  };

  void start() {
    size_t n = std::min<size_t>(usable_cpus(), 8);
    // This thread writes the rows meanwhile and joins in at the end: one
    // helper on 2 CPUs, up to 7 on more, none on one.
    for (size_t i = 1; i < n; ++i) workers_.emplace_back([this] { sign_queued(); });
  }

  // Signs queued items until the batch is closed and none is left. A deque
  // keeps references to its elements across push_back; each is reached under the lock.
  void sign_queued() {
    for (;;) {
      Item* it = nullptr;
      {
        std::unique_lock lock(mu_);
        ready_.wait(lock, [&] { return next_ < items_.size() || closed_ || error_ || abandoned_; });
        if (error_ || abandoned_ || next_ >= items_.size()) return;
        it = &items_[next_++];
      }
      try {
        it->envelope = plan::sign_plan(key_, it->payload);
      } catch (...) {
        std::lock_guard lock(mu_);
        if (!error_) error_ = std::current_exception();
        closed_ = true;
        ready_.notify_all();
        return;
      }
    }
  }

  void stop() {
    {
      std::lock_guard lock(mu_);
      closed_ = true;
    }
    ready_.notify_all();
    for (auto& w : workers_) w.join();
    workers_.clear();
  }

  Tx& tx_;
  const ControllerConfig& config_;
  const plan::SigningKey& key_;
  std::mutex mu_;
  std::condition_variable ready_;
  std::deque<Item> items_;
  size_t next_ = 0;         // the next item to sign
  bool closed_ = false;     // no more items: the threads end when the queue is empty
  bool abandoned_ = false;  // the order failed: the threads end now
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
};

}  // namespace cairn::controller::orders_detail
