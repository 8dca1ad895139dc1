// Backup and restore orders: selection, locks, plans, signatures.
#include "controller/orders.h"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/crypto/crypto.h"
#include "common/plan/drill_drivers.h"
#include "common/plan/recovery_target.h"
#include "common/plan/signer.h"
#include "common/util/cpus.h"
#include "common/util/encoding.h"
#include "common/util/error.h"

namespace cairn::controller {
namespace {

using catalog::Tx;

struct Pick {
  catalog::Agent agent;
  std::string component;
  std::vector<std::string> restore_targets;  // declared by the agent for this component
  std::string driver;
  std::string cluster_id;  // set for a cluster-scoped component
  std::vector<std::string> modes;  // the driver's modes, the default first
  // A member-scoped component (a Kafka broker): its own data, one member of
  // cluster member_of; several members restored at once go in steps.
  std::string member_of;
  std::string repository;  // the component's default repository, as its agent declares it
};

bool clustered(const Pick& p) { return !p.cluster_id.empty(); }

// The operation lock: a node-scoped component's on the agent, a cluster's on
// the cluster (every member's backup and restore take the same one).
std::string lock_target(const Pick& p) {
  return clustered(p) ? "cluster:" + p.driver + "/" + p.cluster_id : p.agent.id + "/" + p.component;
}

// The same for a member's task in the catalog: its cluster's lock, or "" when
// the agent no longer declares the component.
std::string cluster_lock_of(const Tx& tx, const std::string& agent_id, const std::string& component,
                            const std::string& cluster_id) {
  for (const auto& c : tx.agent_components(agent_id))
    if (c.name == component) return "cluster:" + c.driver + "/" + cluster_id;
  return {};
}

// The token of the new cluster a restore makes (etcd's --initial-cluster-token):
// new for every restore, the same on every member.
std::string cluster_token(const std::string& restore_id, const std::string& cluster_id) {
  return "cairn-" + restore_id + "-" + to_hex(crypto::sha256(as_bytes(cluster_id))).substr(0, 8);
}

bool listed(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& a, const std::string& b = {}) {
  if (list.empty()) return true;
  for (const auto& x : list)
    if (x == a || (!b.empty() && x == b)) return true;
  return false;
}

// Names the operator gave that match nothing are an error, not a silent no-op.
void check_names(const Tx& tx, const cairn::v1::Selector& sel) {
  auto agents = tx.agents();
  for (const auto& n : sel.nodes()) {
    bool found = false;
    for (const auto& a : agents) found |= a.name == n || a.id == n;
    if (!found) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no agent '" + n + "'");
  }
}

bool has_labels(const catalog::Agent& a, const cairn::v1::Selector& sel) {
  for (const auto& [k, v] : sel.labels()) {
    auto it = a.labels.find(k);
    if (it == a.labels.end() || it->second != v) return false;
  }
  return true;
}

// The approved agents' components a selector picks; names it lists that
// the catalog does not know match nothing.
std::vector<Pick> select_known(const Tx& tx, const cairn::v1::Selector& sel, bool restore) {
  std::vector<Pick> out;
  for (const auto& a : tx.agents()) {
    if (a.state != catalog::AgentState::approved || !listed(sel.nodes(), a.name, a.id) || !has_labels(a, sel)) continue;
    for (const auto& c : tx.agent_components(a.id)) {
      if (!listed(sel.components(), c.name)) continue;
      if (restore && !c.can_restore) continue;
      // A membership no operator approved takes part in nothing of its cluster.
      // Nor does a member that cannot name its cluster and that no backup names.
      if (c.scope == "cluster" && (c.member_pending || c.cluster_id.empty())) continue;
      out.push_back({a, c.name, c.restore_targets, c.driver, c.scope == "cluster" ? c.cluster_id : std::string(), c.modes,
                     c.scope == "member" ? c.cluster_id : std::string(), c.repository});
    }
  }
  return out;
}

std::vector<Pick> select(const Tx& tx, const cairn::v1::Selector& sel, bool restore) {
  check_names(tx, sel);
  return select_known(tx, sel, restore);
}

std::string quoted_list(const std::vector<std::string>& names) {
  if (names.empty()) return "none";
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "'" : ", '") + n + "'";
  return out;
}

// A restore to an alternative target is refused before any plan goes out when
// a selected component does not declare that target; the error lists what
// each one declares.
void check_restore_target(const std::vector<Pick>& picks, const std::string& target) {
  if (target.empty()) return;
  std::string missing, declared;
  for (const auto& p : picks) {
    bool has = std::find(p.restore_targets.begin(), p.restore_targets.end(), target) != p.restore_targets.end();
    if (!has) missing += (missing.empty() ? "'" : ", '") + p.component + "' on '" + p.agent.name + "'";
    declared += (declared.empty() ? "" : "; ") + p.component + " on " + p.agent.name + ": " +
                quoted_list(p.restore_targets);
  }
  if (!missing.empty())
    throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                  "no restore target '" + target + "' declared by component " + missing + " (declared targets: " +
                      declared + "); pick a declared target, or narrow the selection with --component/--node");
}

// The repository, by the restoring agent's name for it, that a restore of
// `snapshot` on (agent, component) reads from and writes its safety backup
// to; "" leaves it to the agent's default. Repository names are each agent's
// own (its configuration's [[repository]] tables):
// - the agent that wrote the snapshot gets the name it wrote to (a policy's
//   --repository, or a default it has since changed);
// - another agent (a member of the cluster the snapshot was taken from) gets
//   its own default when the snapshot went to the writer's default, and the
//   name itself when a policy named the repository;
// - a snapshot whose repository the catalog does not know (older rows) is
//   read from the restoring agent's default, as before it was recorded.
std::string restore_repository(const Tx& tx, const std::string& agent_id, const std::string& component,
                               const std::string& snapshot) {
  auto default_of = [&](const std::string& agent) {
    for (const auto& c : tx.agent_components(agent))
      if (c.name == component) return c.repository;
    return std::string();
  };
  auto origin = tx.snapshot_origin(snapshot);
  if (!origin || origin->repository.empty()) return default_of(agent_id);
  if (origin->agent_id == agent_id || origin->named) return origin->repository;
  return default_of(agent_id);
}

// The repository a new restore task reads: its safety backup's (written beside
// the snapshot), else its source snapshot's. Recorded on the task, so that
// what the task reports (its store's requests, /metrics) is counted under that
// name and never under "", and every step of a cluster restore names the same.
std::string restore_task_repository(const Tx& tx, const catalog::NewTask& nt) {
  if (nt.safety_task_id)
    if (auto s = tx.task(*nt.safety_task_id); s && !s->repository.empty()) return s->repository;
  return restore_repository(tx, nt.agent_id, nt.component, nt.source_snapshot.value_or(""));
}

// One restore task as the agent gets it; a cluster step names its step and
// what every member must agree on.
cairn::v1::Task restore_wire(const Tx& tx, const catalog::Task& t, const std::string& set_id, const std::string& restore_id) {
  cairn::v1::Task w;
  w.set_task_id(t.id);
  w.set_component(t.component);
  w.set_kind(cairn::v1::TASK_KIND_RESTORE);
  // The snapshot is read from the repository its backup wrote to, and the
  // safety backup is written beside it, where create_restore recorded it
  // (every step of a cluster restore says the same).
  std::optional<catalog::Task> safety;
  if (t.safety_task_id) safety = tx.task(*t.safety_task_id);
  std::string repository = !t.repository.empty() ? t.repository  // recorded when the task was made
                           : safety              ? safety->repository
                                                 : restore_repository(tx, t.agent_id, t.component, t.source_snapshot.value_or(""));
  std::optional<std::string> in;
  if (!repository.empty()) in = repository;
  if (auto parent = tx.backup_parent(t.agent_id, t.component, in)) w.set_parent_snapshot_id(*parent);  // of the safety backup
  w.mutable_snapshot()->set_backup_set_id(set_id);
  w.mutable_snapshot()->set_snapshot_id(t.source_snapshot.value_or(""));
  w.mutable_snapshot()->set_repository(repository);
  w.set_restore_id(restore_id);  // every record the restore leaves on a member names it
  if (!t.restore_step.empty()) {
    w.mutable_options()->set_restore_step(t.restore_step);
    (*w.mutable_options()->mutable_cluster_options())["cluster_token"] = cluster_token(restore_id, t.cluster_id);
  }
  // A rollback starts the member's service again only when its stop step
  // found it running: a member that was down before the restore (an empty
  // host, a member an operator had stopped) stays down.
  if (t.restore_step == "rollback" && t.restore_id)
    for (const auto& s : tx.tasks_of_restore(*t.restore_id))
      if (s.agent_id == t.agent_id && s.component == t.component && s.restore_step == "stop" && s.component_metadata) {
        auto j = nlohmann::json::parse(*s.component_metadata, nullptr, false);
        if (j.is_object() && j.contains("was_running") && j["was_running"] == false)
          (*w.mutable_options()->mutable_cluster_options())["was_running"] = "false";
      }
  return w;
}

// A cluster is restored whole: every approved member of a selected cluster
// must be selected, and no alternative target is possible.
void check_whole_clusters(const Tx& tx, const std::vector<Pick>& picks, const std::string& target) {
  std::map<std::string, std::set<std::string>> chosen;  // cluster -> agent names
  std::map<std::string, std::string> component_of;
  for (const auto& p : picks)
    if (clustered(p)) {
      chosen[p.cluster_id].insert(p.agent.name);
      component_of[p.cluster_id] = p.component;
    }
  for (const auto& [cluster, names] : chosen) {
    if (!target.empty())
      throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                    "component '" + component_of[cluster] + "' is cluster-scoped (cluster '" + cluster +
                        "'): it is restored in place on every member; --target is for node-scoped components");
    std::vector<std::string> missing, all;
    for (const auto& a : tx.agents()) {
      if (a.state != catalog::AgentState::approved) continue;
      for (const auto& c : tx.agent_components(a.id))
        if (c.scope == "cluster" && c.cluster_id == cluster && !c.member_pending) {
          all.push_back(a.name);
          if (!names.count(a.name)) missing.push_back(a.name);
        }
    }
    if (!missing.empty())
      throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                    "component '" + component_of[cluster] + "' is cluster-scoped: cluster '" + cluster +
                        "' is restored on all its members at once (" + quoted_list(all) + "), but " +
                        quoted_list(missing) + " are not selected; select every member (or only --component)");
  }
}

// A cluster is restored onto the members it had when it was backed up
// (their agent names, recorded with the backup task): each must be an
// approved member of the cluster now, or the restore is refused before
// anything is made. A restore onto part of a cluster would stop the members
// it has and leave the cluster without quorum, or start a cluster of fewer
// members than its data expects (docs/protocol.md § The cluster restore).
void check_members_present(const Tx& tx, const std::vector<Pick>& picks,
                           const std::function<const catalog::Task*(const Pick&)>& source_of) {
  std::set<std::string> seen;
  std::string problems;
  for (const auto& p : picks) {
    if (!clustered(p) || !seen.insert(p.cluster_id).second) continue;
    const catalog::Task* src = source_of(p);
    if (!src) continue;
    auto recorded = tx.task_cluster_members(src->id);
    if (recorded.empty()) continue;  // a backup older than this record: the approved members, as before
    std::set<std::string> have;
    for (const auto& q : picks)
      if (clustered(q) && q.cluster_id == p.cluster_id) have.insert(q.agent.name);
    std::vector<std::string> missing;
    for (const auto& name : recorded) {
      if (have.count(name)) continue;
      auto a = tx.agent(name);
      std::string why = !a && tx.name_released(name)                ? "its agent is revoked and no agent took the name"
                        : !a                                        ? "no agent has this name"
                        : a->state == catalog::AgentState::pending  ? "its agent is pending approval"
                        : a->state == catalog::AgentState::revoked  ? "its agent is revoked"
                                                                    : "its agent is not an approved member of the cluster";
      if (a && a->state == catalog::AgentState::approved)
        for (const auto& c : tx.agent_components(a->id))
          if (c.name == p.component) {
            if (c.cluster_id.empty())
              why = "its agent's '" + c.name + "' cannot name its cluster and is no member of it";
            else if (c.member_pending)
              why = "its membership waits for 'cairnctl agent approve " + a->name + "'";
            else if (c.cluster_id != p.cluster_id)
              why = "its agent's '" + c.name + "' is a member of another cluster ('" + c.cluster_id + "')";
          }
      missing.push_back("'" + name + "' (" + why + ")");
    }
    if (missing.empty()) continue;
    std::string list;
    for (const auto& m : missing) list += (list.empty() ? "" : ", ") + m;
    std::string all;
    for (const auto& n : recorded) all += (all.empty() ? "'" : ", '") + n + "'";
    problems += (problems.empty() ? "" : "; ") + std::string("component '") + p.component + "' of cluster '" + p.cluster_id +
                "' was backed up with the members " + all + ", and " + list + " cannot take part";
  }
  if (!problems.empty())
    throw OpError(cairn::v1::ERROR_CODE_UNAVAILABLE,
                  problems + ". A cluster restore runs on every member the backup names, or on none: nothing was "
                  "stopped or changed. Bring each member's agent back (a replaced host: an agent with the same name, "
                  "approved; 'cairnctl agent revoke' releases the name of one whose key is lost), then run the "
                  "restore again (docs/operations.md § Disaster recovery)");
}

// A restore in steps (a cluster's members, or several members of one
// cluster that each hold their own data) stops nothing until every member
// is ready: every member's agent must be connected when it is ordered, or
// it is refused, naming the ones that are not.
void check_members_connected(const std::vector<Pick>& picks, const std::function<bool(const std::string&)>& connected,
                             const std::function<bool(const std::string&, const std::string&)>& supports) {
  if (!connected) return;
  std::map<std::string, int> members;  // driver/cluster -> members selected
  for (const auto& p : picks)
    if (!p.member_of.empty()) members[p.driver + "/" + p.member_of]++;
  std::map<std::string, std::vector<std::string>> absent;  // cluster -> agent names
  // An agent older than the preflight and commit steps would refuse them
  // (etcd, ZooKeeper) or run a whole restore in their place (an older Kafka
  // driver): refused too, before anything is made.
  std::vector<std::string> old;
  for (const auto& p : picks) {
    bool stepped = clustered(p) || (!p.member_of.empty() && members[p.driver + "/" + p.member_of] > 1);
    if (!stepped) continue;
    if (!connected(p.agent.id))
      absent["'" + p.component + "' of cluster '" + (clustered(p) ? p.cluster_id : p.member_of) + "'"].push_back(p.agent.name);
    else if (supports && !supports(p.agent.id, "restore-steps/2"))
      old.push_back(p.agent.name);
  }
  if (absent.empty()) {
    if (!old.empty())
      throw OpError(cairn::v1::ERROR_CODE_UNAVAILABLE,
                    "the agents " + quoted_list(old) + " are older than this controller's cluster restore (they do not "
                    "announce 'restore-steps/2'): upgrade them first; nothing was stopped or changed");
    return;
  }
  std::string what;
  for (const auto& [cluster, names] : absent)
    what += (what.empty() ? "" : "; ") + cluster + ": " + quoted_list(names);
  throw OpError(cairn::v1::ERROR_CODE_UNAVAILABLE,
                "a cluster restore stops no member until every member is ready, and these members' agents are not "
                "connected: " + what + ". Nothing was stopped or changed; bring the agents back ('cairnctl agent list' "
                "shows them) and run the restore again");
}

std::string write_mode_name(cairn::v1::RestoreWriteMode m) {
  return m == cairn::v1::RESTORE_WRITE_MODE_MERGE ? "merge" : "mirror";
}

std::string new_plan_id() { return "pl-" + to_hex(crypto::random_array<8>()); }

}  // namespace

nlohmann::json selector_json(const cairn::v1::Selector& s) {
  nlohmann::json j = {{"components", std::vector<std::string>(s.components().begin(), s.components().end())},
                      {"nodes", std::vector<std::string>(s.nodes().begin(), s.nodes().end())}};
  if (!s.labels().empty()) j["labels"] = std::map<std::string, std::string>(s.labels().begin(), s.labels().end());
  return j;
}

cairn::v1::Selector selector_from_json(const nlohmann::json& j) {
  cairn::v1::Selector s;
  auto strings = [&](const char* key, auto* out) {
    if (j.contains(key) && j[key].is_array())
      for (const auto& v : j[key])
        if (v.is_string()) out->Add(v.get<std::string>());
  };
  strings("components", s.mutable_components());
  strings("nodes", s.mutable_nodes());
  if (j.contains("labels") && j["labels"].is_object())
    for (const auto& [k, v] : j["labels"].items())
      if (v.is_string()) (*s.mutable_labels())[k] = v.get<std::string>();
  return s;
}

std::vector<BackupTarget> backup_targets(const catalog::Tx& tx, const cairn::v1::Selector& selector,
                                         const std::string& repository) {
  std::vector<BackupTarget> out;
  for (const auto& p : select_known(tx, selector, false))
    out.push_back({p.agent.name, p.component, repository.empty() ? p.repository : repository});
  return out;
}

namespace {

void lock_targets(Tx& tx, const std::vector<Pick>& picks, catalog::TaskKind kind, const std::string& holder,
                  int64_t ttl) {
  std::set<std::string> taken;
  for (const auto& p : picks) {
    std::string target = lock_target(p);
    if (!taken.insert(target).second) continue;
    if (!tx.acquire_lock(target, kind, holder, ttl)) {
      // Name what holds it: the operator (or the policy's run record) sees
      // which set or restore to look at.
      std::string by = "another backup or restore";
      if (auto h = tx.lock_holder(target))
        by = (h->first == "restore" ? "restore " : "backup set ") + h->second +
             (h->first == "restore" ? " ('cairnctl restore show " : " ('cairnctl backup show ") + h->second + "')";
      throw OpError(cairn::v1::ERROR_CODE_CONFLICT,
                    (clustered(p) ? "cluster '" + p.cluster_id + "' of component '" + p.component + "'"
                                  : "component '" + p.component + "' on '" + p.agent.name + "'") +
                        " is busy: " + by + " holds its lock; try again once it ends");
    }
  }
}

// The plans of one order. Each plan's row is written as it is added (its
// sequence number goes into the payload) and its payload handed to signing
// threads, which sign while the next plans' rows are written; the envelopes
// are stored at the end. An Ed25519 signature (15-30 µs) is a sizeable
// share of a plan's cost, and needs nothing from the catalog. An order of
// a few plans signs them on this thread.
class PlanBatch {
 public:
  PlanBatch(Tx& tx, const ControllerConfig& config, const plan::SigningKey& key)
      : tx_(tx), config_(config), key_(key) {}
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
  void add(const catalog::Agent& agent, const std::vector<std::string>& catalog_task_ids,
           const std::vector<cairn::v1::Task>& tasks) {
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
  size_t next_ = 0;  // the next item to sign
  bool closed_ = false;     // no more items: the threads end when the queue is empty
  bool abandoned_ = false;  // the order failed: the threads end now
  std::exception_ptr error_;
  std::vector<std::thread> workers_;
};

}  // namespace

Ordered Orders::create_backup(const std::string& actor, const cairn::v1::Selector& selector, const std::string& mode,
                             const BackupExtras& extras) {
  return catalog_.transaction(actor, [&](Tx& tx) {
    auto selected = select(tx, selector, false);
    if (selected.empty())
      throw OpError(cairn::v1::ERROR_CODE_NOTHING_SELECTED,
                    "the selection matched no component of an approved agent (see 'cairnctl agent list')");
    // A mode goes to the components that declare it; one nobody declares is a mistake.
    std::set<std::pair<std::string, std::string>> takes_mode;
    for (const auto& p : selected)
      if (!mode.empty() && std::find(p.modes.begin(), p.modes.end(), mode) != p.modes.end())
        takes_mode.insert({p.agent.id, p.component});
    if (!mode.empty() && takes_mode.empty())
      throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                    "no selected component takes mode '" + mode + "' (see the modes in 'cairnctl agent list --json')");
    // A cluster-scoped component is one dataset: backed up from one member,
    // a connected one when there is one (members sorted by agent name).
    std::vector<Pick> picks;
    std::map<std::string, size_t> member_of;  // lock target -> index in picks
    auto up = [&](const Pick& p) { return !connected_ || connected_(p.agent.id); };
    for (const auto& p : selected) {
      if (!clustered(p)) {
        picks.push_back(p);
        continue;
      }
      auto it = member_of.find(lock_target(p));
      if (it == member_of.end()) {
        member_of[lock_target(p)] = picks.size();
        picks.push_back(p);
      } else if (!up(picks[it->second]) && up(p)) {
        picks[it->second] = p;
      }
    }
    catalog::NewBackupSet set;
    set.selector = selector_json(selector);
    set.trigger = extras.trigger;
    set.policy = extras.policy;
    for (const auto& p : picks) {
      catalog::NewTask nt{p.agent.id, p.component, std::nullopt, std::nullopt};
      nt.cluster_id = p.cluster_id;
      nt.repository = extras.repository.empty() ? p.repository : extras.repository;
      nt.repository_named = !extras.repository.empty();
      set.tasks.push_back(std::move(nt));
    }
    Ordered out;
    out.id = tx.create_backup_set(set);
    lock_targets(tx, picks, catalog::TaskKind::backup, out.id, config_.lock_ttl_seconds);
    // A cluster's members when it was backed up: what a restore of it needs
    // (check_members_present), and how an empty host finds its cluster again.
    std::map<std::string, std::string> driver_of_cluster;
    for (const auto& p : picks)
      if (clustered(p)) driver_of_cluster[p.cluster_id] = p.driver;
    std::map<std::string, std::vector<std::string>> members_of_task;
    for (const auto& t : tx.tasks_of_set(out.id))
      if (!t.cluster_id.empty()) {
        members_of_task[t.id] = tx.cluster_member_names(driver_of_cluster[t.cluster_id], t.cluster_id);
        tx.set_task_cluster_members(t.id, members_of_task[t.id]);
      }
    PlanBatch plans(tx, config_, key_);

    std::map<std::string, std::vector<catalog::Task>> by_agent;
    for (auto& t : tx.tasks_of_set(out.id)) by_agent[t.agent_id].push_back(t);
    std::map<std::string, const catalog::Agent*> agent_of;  // as select() read them, in this transaction
    for (const auto& p : picks) agent_of.emplace(p.agent.id, &p.agent);
    for (const auto& [agent_id, tasks] : by_agent) {
      const catalog::Agent* agent = agent_of.at(agent_id);
      std::vector<std::string> ids;
      std::vector<cairn::v1::Task> wire;
      for (const auto& t : tasks) {
        ids.push_back(t.id);
        cairn::v1::Task w;
        w.set_task_id(t.id);
        w.set_component(t.component);
        w.set_kind(cairn::v1::TASK_KIND_BACKUP);
        if (takes_mode.count({agent_id, t.component})) w.mutable_options()->set_mode(mode);
        if (!extras.repository.empty()) w.mutable_options()->set_repository(extras.repository);
        w.set_backup_set_id(out.id);  // tagged on the snapshot: a catalog rebuild groups by it
        w.set_set_task_count(uint32_t(picks.size()));
        w.set_cluster_id(t.cluster_id);  // the snapshot's tag cluster:<id> (catalog rebuild, import)
        for (const auto& m : members_of_task[t.id]) w.add_cluster_members(m);  // and member:<name>
        w.set_policy(extras.policy);
        // The parent comes from the catalog, never from the repository, where
        // any agent can write a snapshot in another's name.
        if (auto parent = tx.backup_parent(agent_id, t.component, t.repository)) w.set_parent_snapshot_id(*parent);
        wire.push_back(w);
      }
      plans.add(*agent, ids, wire);
      out.agent_ids.push_back(agent_id);
    }
    plans.sign_and_store();
    return out;
  });
}

namespace {

// A set no signed set record covers (rebuilt from snapshot tags, imported
// unattested) is restored or drilled only with the operator's explicit
// override, which is audited: anyone holding the repository's password could
// have written its snapshots. `what`: "restore" or "drill".
void check_attested(Tx& tx, const catalog::BackupSet& set, bool accepted, const std::string& what) {
  if (set.attested) return;
  if (!accepted)
    throw OpError(cairn::v1::ERROR_CODE_CONFLICT,
                  "backup set '" + set.id +
                      "' is unattested: it was rebuilt from snapshot tags that no set record signed by this "
                      "controller's key covers, and anyone holding the repository's password could have written "
                      "them" + (what == "drill" ? " (a drill runs servers on the drill host from them)" : "") +
                      "; check its snapshots ('cairnctl backup show'), then " + what + " with --accept-unattested");
  tx.audit({what + ".accept_unattested", "backup_set:" + set.id, "ok",
            "an operator " + std::string(what == "drill" ? "drills" : "restores from") + " a set no signed set record covers",
            {}});
}

}  // namespace

Ordered Orders::create_drill(const std::string& actor, const cairn::v1::DrillRequest& req) {
  return catalog_.transaction(actor, [&](Tx& tx) {
    check_names(tx, req.selector());
    // What a set holds that the selection picks: (task, driver), one per
    // cluster for a cluster-scoped component (the snapshot a whole-cluster
    // restore would restore), one per agent for the others.
    auto drillable_of = [&](const std::string& set_id, bool selected = true) {
      std::vector<std::pair<catalog::Task, std::string>> out;
      std::set<std::string> clusters;
      for (auto& t : tx.tasks_of_set(set_id)) {
        if (!t.snapshot_id || t.snapshot_removed_at ||
            (t.state != catalog::TaskState::succeeded && t.state != catalog::TaskState::partial))
          continue;
        if (selected && !listed(req.selector().components(), t.component)) continue;
        auto agent = tx.agent(t.agent_id);
        if (!agent || (selected && !listed(req.selector().nodes(), agent->name, agent->id))) continue;
        std::string driver;
        for (const auto& c : tx.agent_components(t.agent_id))
          if (c.name == t.component) driver = c.driver;
        if (driver.empty()) continue;
        if (!t.cluster_id.empty() && !clusters.insert(driver + "/" + t.cluster_id).second) continue;
        out.emplace_back(std::move(t), driver);
      }
      return out;
    };
    std::optional<catalog::BackupSet> set;
    std::vector<std::pair<catalog::Task, std::string>> picks;
    size_t unattested_skipped = 0;
    if (req.latest()) {
      for (auto& s : req.policy().empty() ? tx.backup_sets(10'000) : tx.policy_sets(req.policy())) {
        if (s.trigger == "safety" || s.forgotten_at || (s.state != catalog::SetState::complete && s.state != catalog::SetState::partial))
          continue;
        // A set anyone holding the repository's password could have written
        // (newer by its own say) is never "the newest": name it to drill it.
        if (!s.attested) {
          ++unattested_skipped;
          continue;
        }
        auto p = drillable_of(s.id);
        if (p.empty()) continue;
        set = std::move(s);
        picks = std::move(p);
        break;
      }
      if (!set)
        throw OpError(cairn::v1::ERROR_CODE_NOTHING_SELECTED,
                      "no complete or partial backup set holds a snapshot of the selected component(s)" +
                          (unattested_skipped ? " but " + std::to_string(unattested_skipped) +
                                                    " unattested one(s), which --latest never picks (name one, with "
                                                    "--accept-unattested)"
                                              : std::string()));
    } else {
      set = tx.backup_set(req.backup_set_id());
      if (!set) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no backup set '" + req.backup_set_id() + "'");
      if (set->forgotten_at)
        throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                      "backup set '" + set->id + "' was expired and its snapshots removed from the repository");
      picks = drillable_of(set->id);
      if (picks.empty())
        throw OpError(cairn::v1::ERROR_CODE_NOTHING_SELECTED,
                      "backup set '" + set->id + "' holds no snapshot of the selected component(s)");
      // A drill starts servers as root on the drill host from what the set's
      // snapshots say: an unattested set needs the override a restore needs.
      check_attested(tx, *set, req.accept_unattested(), "drill");
    }
    // A Kafka broker in ZooKeeper mode keeps its topics' metadata in
    // ZooKeeper: its drill starts the set's ZooKeeper snapshot beside the
    // brokers (docs/drills.md § Kafka). The ensemble's snapshot: the one
    // selected, or else the set's one, in the brokers' repository.
    std::vector<std::pair<catalog::Task, std::string>> set_zookeepers;
    {
      bool selected = false;
      for (const auto& p : picks) selected = selected || p.second == "zookeeper";
      for (auto& p : selected ? picks : drillable_of(set->id, false))
        if (p.second == "zookeeper") set_zookeepers.push_back(p);
    }
    std::map<std::string, catalog::Task> zookeeper_of;  // broker's backup task id -> the ZooKeeper backup task
    // What no drill can run: a driver without one, a Kafka broker in
    // ZooKeeper mode whose ZooKeeper the set does not hold. An operator's
    // drill is refused naming them; a policy's scheduled drill leaves them
    // out, says so in the audit trail, and drills the rest (one Kafka
    // cluster without its ZooKeeper must not leave every other component
    // unproven).
    auto undrillable = [&](const catalog::Task& t, const std::string& driver) -> std::string {
      if (!plan::is_drill_driver(driver)) return "'" + t.component + "' (driver " + driver + ": no drill exists for it)";
      if (driver != "kafka") return {};
      auto m = nlohmann::json::parse(t.component_metadata.value_or(""), nullptr, false);
      if (!m.is_object() || m.value("metadata_mode", "") != "zookeeper") return {};
      std::vector<const catalog::Task*> here;
      for (const auto& [z, zd] : set_zookeepers)
        if (z.repository == t.repository) here.push_back(&z);
      if (here.size() == 1) {
        zookeeper_of[t.id] = *here.front();
        return {};
      }
      if (here.empty())
        return "'" + t.component + "' (a Kafka broker in ZooKeeper mode: its topics' metadata lives in ZooKeeper, and the set "
               "holds no ZooKeeper snapshot in repository '" + t.repository + "' to start beside it; back up the ensemble in "
               "the same set as the brokers)";
      return "'" + t.component + "' (a Kafka broker in ZooKeeper mode: the set holds " + std::to_string(here.size()) +
             " ZooKeeper clusters; name the brokers' ensemble with --component)";
    };
    std::string refused;
    std::vector<std::pair<catalog::Task, std::string>> kept;
    for (auto& p : picks) {
      std::string why = undrillable(p.first, p.second);
      if (why.empty()) kept.push_back(std::move(p));
      else if (refused.find(why) == std::string::npos) refused += std::string(refused.empty() ? "" : "; ") + why;
    }
    const bool scheduled = !req.policy().empty();
    if (!refused.empty() && (!scheduled || kept.empty()))
      throw OpError(cairn::v1::ERROR_CODE_UNSUPPORTED_TASK,
                    "backup set '" + set->id + "' holds snapshots no drill can run: " + refused +
                        (scheduled ? "" : "; leave them out with --component"));
    picks = std::move(kept);
    if (!refused.empty())
      tx.audit({"drill.skipped", "backup_set:" + set->id, "skipped", "undrillable",
                {{"policy", req.policy()}, {"left_out", refused}}});
    // Kafka: every broker's snapshot of one cluster is drilled together, as
    // one sandbox cluster (docs/drills.md § Kafka); each broker's task
    // carries them all. Keyed by the repository and the cluster id the
    // brokers recorded.
    std::map<std::string, std::vector<const catalog::Task*>> kafka_clusters;
    std::map<std::string, std::string> kafka_cluster_of;  // backup task id -> its key
    for (const auto& [t, driver] : picks) {
      if (driver != "kafka") continue;
      auto m = nlohmann::json::parse(t.component_metadata.value_or(""), nullptr, false);
      std::string key = t.repository + "/" + (m.is_object() ? m.value("cluster_id", std::string()) : std::string());
      kafka_cluster_of[t.id] = key;
      kafka_clusters[key].push_back(&t);
    }
    // The drill agent: the one named, or the first connected agent that
    // declares a drill sandbox able to run every selected driver.
    auto can_drill = [&](const catalog::Agent& a) {
      if (a.state != catalog::AgentState::approved) return false;
      if (connected_ && !connected_(a.id)) return false;
      if (!supports_) return true;
      for (const auto& [t, driver] : picks)
        if (!supports_(a.id, "drill:" + driver)) return false;
      return zookeeper_of.empty() || supports_(a.id, "drill:zookeeper");
    };
    std::optional<catalog::Agent> on;
    if (!req.on_agent().empty()) {
      on = tx.agent(req.on_agent());
      if (!on) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no agent '" + req.on_agent() + "'");
      if (!can_drill(*on))
        throw OpError(cairn::v1::ERROR_CODE_CONFLICT,
                      "agent '" + on->name +
                          "' cannot run this drill now: it must be approved, connected, and declare a [drill] section "
                          "whose tools can run every selected component's driver (cairn-agent --check-config says which)");
    } else {
      for (const auto& a : tx.agents())
        if (can_drill(a)) {
          on = a;
          break;
        }
      if (!on)
        throw OpError(cairn::v1::ERROR_CODE_CONFLICT,
                      "no connected agent can run this drill: declare a [drill] section on one (docs/drills.md), or "
                      "name one with --on");
    }
    catalog::NewRestore r;
    r.drill = true;
    r.source_set_id = set->id;
    r.skip_safety_backup = true;  // a drill writes nothing the live service reads
    nlohmann::json sel = selector_json(req.selector());
    sel["drill_agent"] = on->id;
    r.selector = sel;
    for (const auto& [t, driver] : picks) {
      catalog::NewTask nt{on->id, t.component, t.snapshot_id, std::nullopt};
      nt.repository = t.repository;  // read by the name its writer gave it (below)
      r.tasks.push_back(std::move(nt));
    }
    Ordered out;
    out.id = tx.create_restore(r);
    std::vector<std::string> ids;
    std::vector<cairn::v1::Task> wire;
    auto tasks = tx.tasks_of_restore(out.id);
    std::map<std::string, const std::pair<catalog::Task, std::string>*> by_snapshot;
    for (const auto& p : picks) by_snapshot[*p.first.snapshot_id] = &p;
    for (const auto& t : tasks) {
      const auto& [src, driver] = *by_snapshot.at(t.source_snapshot.value_or(""));
      cairn::v1::Task w;
      if (auto k = kafka_cluster_of.find(src.id); k != kafka_cluster_of.end())
        for (const catalog::Task* member : kafka_clusters.at(k->second)) {
          auto* ref = w.add_drill_members();
          ref->set_backup_set_id(set->id);
          ref->set_snapshot_id(member->snapshot_id.value_or(""));
          ref->set_repository(member->repository);
        }
      if (auto z = zookeeper_of.find(src.id); z != zookeeper_of.end()) {
        auto* ref = w.add_drill_zookeeper();
        ref->set_backup_set_id(set->id);
        ref->set_snapshot_id(z->second.snapshot_id.value_or(""));
        ref->set_repository(z->second.repository);
      }
      w.set_task_id(t.id);
      w.set_component(t.component);
      w.set_kind(cairn::v1::TASK_KIND_DRILL);
      w.set_drill_driver(driver);
      w.set_restore_id(out.id);
      w.mutable_snapshot()->set_backup_set_id(set->id);
      w.mutable_snapshot()->set_snapshot_id(t.source_snapshot.value_or(""));
      // The repository by the name its writer gave it: a drill agent declares
      // the fleet's repositories under the same names (docs/drills.md).
      w.mutable_snapshot()->set_repository(src.repository);
      ids.push_back(t.id);
      wire.push_back(std::move(w));
    }
    PlanBatch plans(tx, config_, key_);
    plans.add(*on, ids, wire);
    out.agent_ids.push_back(on->id);
    plans.sign_and_store();
    return out;
  });
}

namespace {

// A base backup for point-in-time recovery: a succeeded backup task of the
// component whose driver recorded a physical base backup, when it became
// consistent, and on which timeline (docs/postgresql.md § Point-in-time
// recovery). Safety backups are base backups too.
struct BaseBackup {
  catalog::Task task;
  int64_t end_us = 0;
  uint64_t stop_lsn = 0;
  uint32_t timeline = 0;
};

// What the catalog knows of a component's timelines: each one's history (its
// ancestors, each with the LSN where it ended) as base backups and recoveries
// recorded it, and the newest timeline any of them was on.
struct Timelines {
  std::map<uint32_t, std::map<uint32_t, uint64_t>> history;
  uint32_t newest = 0;
  void add(uint32_t tli, const nlohmann::json& h) {
    if (tli == 0) return;
    newest = std::max(newest, tli);
    if (!h.is_array() || h.empty() || history.count(tli)) return;
    auto& m = history[tli];
    for (const auto& e : h) {
      uint64_t lsn = 0;
      if (!e.is_object() || !plan::parse_lsn(e.value("switch_lsn", ""), &lsn)) continue;
      m[e.value("timeline", 0u)] = lsn;
    }
  }
  // Whether recovery from a base backup on `tli`, consistent at `stop`, can
  // follow to `target`: its own, or an ancestor the target left after `stop`.
  // A target whose history nobody recorded is not ruled out here: the agent
  // reads the archive's history files and decides.
  bool leads_to(uint32_t tli, uint64_t stop, uint32_t target) const {
    if (target == 0 || tli == target) return true;
    auto h = history.find(target);
    if (h == history.end()) return target != 1;
    auto e = h->second.find(tli);
    return e != h->second.end() && e->second >= stop;
  }
};

std::vector<BaseBackup> base_backups(const Tx& tx, const std::string& agent_id, const std::string& component,
                                     Timelines* timelines = nullptr) {
  std::vector<BaseBackup> out;
  const catalog::TaskState ok[] = {catalog::TaskState::succeeded};
  for (auto& t : tx.agent_tasks(agent_id, ok)) {
    if (t.component != component || !t.component_metadata) continue;
    auto m = nlohmann::json::parse(*t.component_metadata, nullptr, false);
    if (!m.is_object()) continue;
    if (t.kind == catalog::TaskKind::restore) {
      // A recovery ends on a new timeline, recorded with its history.
      if (timelines && m.contains("recovery") && m["recovery"].is_object())
        timelines->add(m["recovery"].value("timeline", 0u), m["recovery"].value("history", nlohmann::json()));
      continue;
    }
    if (t.kind != catalog::TaskKind::backup || m.value("mode", "") != "physical" || !m.contains("backup_end_time_us"))
      continue;
    if (timelines) timelines->add(m.value("timeline", 0u), m.value("history", nlohmann::json()));
    if (!t.backup_set_id || !t.snapshot_id || t.snapshot_removed_at) continue;
    auto set = tx.backup_set(*t.backup_set_id);
    if (!set || set->forgotten_at || !set->attested) continue;
    BaseBackup b;
    b.end_us = m.value("backup_end_time_us", int64_t(0));
    plan::parse_lsn(m.value("stop_lsn", ""), &b.stop_lsn);
    b.timeline = m.value("timeline", 0u);
    b.task = std::move(t);
    out.push_back(std::move(b));
  }
  std::sort(out.begin(), out.end(), [](const BaseBackup& a, const BaseBackup& b) { return a.end_us < b.end_us; });
  return out;
}

// The timeline a recovery target ends on as far as the catalog knows: the
// one named, the newest known (PostgreSQL's "latest"), or 0 for each base
// backup's own (--target-timeline current, --to-immediate).
uint32_t target_timeline(const plan::ParsedTarget& t, const Timelines& tl) {
  if (t.timeline_current || t.kind == cairn::v1::RecoveryTarget::KIND_IMMEDIATE) return 0;
  return t.timeline != 0 ? t.timeline : tl.newest;
}

// The newest base backup that is consistent before the target, on the target
// timeline's history; nullptr when none is.
const BaseBackup* base_for(const std::vector<BaseBackup>& bases, const plan::ParsedTarget& t, const Timelines& tl) {
  const uint32_t want = target_timeline(t, tl);
  const BaseBackup* best = nullptr;
  for (const auto& b : bases) {
    bool before = t.kind == cairn::v1::RecoveryTarget::KIND_TIME  ? b.end_us <= t.time_us
                  : t.kind == cairn::v1::RecoveryTarget::KIND_LSN ? b.stop_lsn <= t.lsn
                                                                  : true;
    if (before && tl.leads_to(b.timeline, b.stop_lsn, want)) best = &b;
  }
  return best;
}

std::string covered_from(const std::vector<BaseBackup>& bases) {
  if (bases.empty()) return "no base backup of it is in the catalog";
  return "its oldest base backup (set '" + bases.front().task.backup_set_id.value_or("") + "') is consistent from " +
         plan::format_time_us(bases.front().end_us) + " (LSN " + plan::format_lsn(bases.front().stop_lsn) + ")";
}

}  // namespace

Ordered Orders::create_restore(const std::string& actor, const cairn::v1::RestoreRequest& request) {
  return catalog_.transaction(actor, [&](Tx& tx) {
    cairn::v1::RestoreRequest req = request;
    plan::ParsedTarget target;
    const bool has_recovery = req.has_recovery_target() &&
                              req.recovery_target().kind() != cairn::v1::RecoveryTarget::KIND_UNSPECIFIED;
    if (has_recovery)
      if (std::string why = plan::parse_recovery_target(req.recovery_target(), &target); !why.empty())
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT, why);
    // No set named: a recovery target lets the controller pick the base
    // backup, the newest one consistent before the target.
    if (req.backup_set_id().empty()) {
      if (!has_recovery)
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                      "name the backup set to restore ('cairnctl backup list'); only with a recovery target "
                      "(--to-time, --to-lsn, ...) does the controller pick one");
      std::vector<Pick> replay;
      for (auto& p : select(tx, req.selector(), true))
        if (plan::replays_to_target(p.driver)) replay.push_back(p);
      if (replay.size() != 1)
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                      "the selection holds " + std::to_string(replay.size()) +
                          " components that replay to a recovery target; select one with --component and --node, "
                          "or name the backup set");
      Timelines tl;
      auto bases = base_backups(tx, replay[0].agent.id, replay[0].component, &tl);
      const BaseBackup* b = base_for(bases, target, tl);
      if (!b) {
        const uint32_t want = target_timeline(target, tl);
        throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                      "no base backup of '" + replay[0].component + "' on " + replay[0].agent.name +
                          " is consistent before " + target.describe() +
                          (want > 1 ? " on the history of timeline " + std::to_string(want) : std::string()) + ": " +
                          covered_from(bases));
      }
      req.set_backup_set_id(*b->task.backup_set_id);
      req.mutable_selector()->clear_components();
      req.mutable_selector()->add_components(replay[0].component);
      req.mutable_selector()->clear_nodes();
      req.mutable_selector()->add_nodes(replay[0].agent.id);
    }
    auto source_set = tx.backup_set(req.backup_set_id());
    if (!source_set) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no backup set '" + req.backup_set_id() + "'");
    if (source_set->forgotten_at)
      throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                    "backup set '" + req.backup_set_id() + "' was expired by policy '" + source_set->policy.value_or("") +
                        "' and its snapshots removed from the repository; pick a newer set ('cairnctl backup list')");
    check_attested(tx, *source_set, req.accept_unattested(), "restore");
    // Every restored (agent, component) reads the snapshot that set holds for
    // it; every member of a cluster reads the one snapshot of its cluster.
    std::map<std::pair<std::string, std::string>, catalog::Task> source;
    auto source_key = [](const Pick& p) {
      return std::make_pair(clustered(p) ? "cluster:" + p.cluster_id : p.agent.id, p.component);
    };
    for (auto& t : tx.tasks_of_set(req.backup_set_id()))
      if (t.snapshot_id && (t.state == catalog::TaskState::succeeded || t.state == catalog::TaskState::partial))
        source[{t.cluster_id.empty() ? t.agent_id : "cluster:" + t.cluster_id, t.component}] = t;
    // What a revoked agent backed up restores on the agent that took its
    // name (a host rebuilt under a new key), unless that agent has its own.
    const std::vector<Pick> selected = select(tx, req.selector(), true);
    std::set<std::string> selected_agents;
    for (const auto& p : selected) selected_agents.insert(p.agent.id);
    for (const auto& id : selected_agents)
      for (const auto& old : tx.predecessors(id))
        for (const auto& [key, t] : std::map(source))
          if (key.first == old && !source.count({id, key.second})) source[{id, key.second}] = t;
    // --from-copy: every snapshot from the set's copy in that repository.
    if (!req.from_copy().empty()) {
      bool landed = false;
      for (const auto& c : tx.set_copies(req.backup_set_id()))
        if (c.repository == req.from_copy() && c.state == "copied" && !c.removed_at) landed = true;
      if (!landed)
        throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                      "backup set '" + req.backup_set_id() + "' has no copy in repository '" + req.from_copy() +
                          "' ('cairnctl backup show' lists its copies: one pending or failed cannot be read)");
      auto copies = tx.task_copies(req.backup_set_id(), req.from_copy());
      for (auto& [key, t] : source) {
        auto it = copies.find(t.id);
        if (it == copies.end()) continue;  // a snapshot the copy lacks is left out below, by name
        t.snapshot_id = it->second;
        t.repository = req.from_copy();
        t.snapshot_removed_at.reset();
      }
      std::erase_if(source, [&](const auto& e) { return !copies.count(e.second.id); });
    }
    std::vector<Pick> picks;
    for (const auto& p : selected)
      if (source.count(source_key(p))) picks.push_back(p);
    // An expired set that retention has cleared from some repositories, not
    // yet all: what is gone there cannot be restored, and leaving it out
    // silently would restore less than was asked.
    std::string removed;
    for (const auto& p : picks)
      if (const auto& t = source[source_key(p)]; t.snapshot_removed_at)
        removed += std::string(removed.empty() ? "" : ", ") + "'" + p.component + "' on " + p.agent.name + " (repository '" +
                   t.repository + "')";
    if (!removed.empty())
      throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                    "backup set '" + req.backup_set_id() + "' was expired by policy '" + source_set->policy.value_or("") +
                        "' and retention has removed the snapshots of " + removed +
                        "; pick a newer set ('cairnctl backup list'), or leave those out with --component/--node");
    check_whole_clusters(tx, picks, req.restore_target());
    check_members_present(tx, picks, [&](const Pick& p) -> const catalog::Task* {
      auto it = source.find(source_key(p));
      return it == source.end() ? nullptr : &it->second;
    });
    if (picks.empty())
      throw OpError(cairn::v1::ERROR_CODE_NOTHING_SELECTED,
                    "backup set '" + req.backup_set_id() +
                        "' holds no snapshot for a selected, restorable component of an approved agent");

    check_restore_target(picks, req.restore_target());
    // A recovery target is for drivers that replay a log to it: restoring
    // another component without it would silently ignore what was asked.
    if (has_recovery) {
      std::string others;
      for (const auto& p : picks)
        if (!plan::replays_to_target(p.driver))
          others += std::string(others.empty() ? "" : ", ") + "'" + p.component + "' (" + p.driver + ") on " + p.agent.name;
      if (!others.empty())
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                      "a recovery target (--to-time, --to-lsn, --to-xid, --to-latest) applies to postgresql components "
                      "only, and the selection also holds " + others + "; select the postgresql ones with --component");
      // The named set's base backup must be consistent before the target:
      // WAL replays forward only. The one that is, when there is one, is named.
      for (const auto& p : picks) {
        const auto& t = source[source_key(p)];
        auto m = nlohmann::json::parse(t.component_metadata.value_or("{}"), nullptr, false);
        if (!m.is_object() || m.value("mode", "") != "physical") continue;
        int64_t end_us = m.value("backup_end_time_us", int64_t(0));
        uint64_t stop = 0;
        plan::parse_lsn(m.value("stop_lsn", ""), &stop);
        bool after = (target.kind == cairn::v1::RecoveryTarget::KIND_TIME && end_us > target.time_us) ||
                     (target.kind == cairn::v1::RecoveryTarget::KIND_LSN && stop > target.lsn);
        if (!after) continue;
        Timelines tl;
        auto bases = base_backups(tx, p.agent.id, p.component, &tl);
        const BaseBackup* b = base_for(bases, target, tl);
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                      "the base backup of '" + p.component + "' on " + p.agent.name + " in set '" + req.backup_set_id() +
                          "' is consistent only from " + plan::format_time_us(end_us) + " (LSN " + plan::format_lsn(stop) +
                          "), after " + target.describe() + ": " +
                          (b ? "restore set '" + b->task.backup_set_id.value_or("") +
                                   "' instead, or leave the set out and the controller picks it"
                             : "no base backup of it is older; " + covered_from(bases)));
      }
    }
    check_members_connected(picks, connected_, supports_);
    const auto mode = req.write_mode() == cairn::v1::RESTORE_WRITE_MODE_MERGE ? cairn::v1::RESTORE_WRITE_MODE_MERGE
                                                                              : cairn::v1::RESTORE_WRITE_MODE_MIRROR;
    nlohmann::json sel = selector_json(req.selector());
    if (!req.restore_target().empty()) sel["restore_target"] = req.restore_target();
    sel["write_mode"] = write_mode_name(mode);
    if (req.force_identity()) sel["force_identity"] = true;  // every step of a cluster restore carries it
    if (has_recovery)
      sel["recovery_target"] = {{"kind", int(req.recovery_target().kind())},
                                {"value", req.recovery_target().value()},
                                {"exclusive", req.recovery_target().exclusive()}};
    std::optional<std::string> safety_set;
    if (!req.skip_safety_backup()) {
      // The current state is saved before anything is overwritten (DESIGN.md § restore).
      catalog::NewBackupSet safety;
      safety.trigger = "safety";
      safety.selector = sel;
      for (const auto& p : picks) {
        // Written where the restore reads (restore_wire), the catalog records it there.
        catalog::NewTask nt{p.agent.id, p.component, std::nullopt, std::nullopt};
        nt.repository = restore_repository(tx, p.agent.id, p.component, source[source_key(p)].snapshot_id.value_or(""));
        safety.tasks.push_back(std::move(nt));
      }
      safety_set = tx.create_backup_set(safety);
    }
    // Each restore task names its own safety task: its result ends that one
    // task and no other (Fleet::on_task_result).
    std::map<std::pair<std::string, std::string>, std::string> safety_task;
    if (safety_set)
      for (const auto& t : tx.tasks_of_set(*safety_set)) safety_task[{t.agent_id, t.component}] = t.id;
    // Members of one cluster that each hold their own data (Kafka brokers):
    // restored together, several of them go through the same steps as a
    // cluster, each from its own snapshot.
    std::map<std::string, int> members_selected;
    for (const auto& p : picks)
      if (!p.member_of.empty()) members_selected[p.driver + "/" + p.member_of]++;
    // Members (Kafka brokers) restored together with a cluster-scoped
    // component (their ZooKeeper) wait until every such cluster is restored
    // and verified: their tasks are made then (release_deferred), and not at
    // all when a cluster's restore failed.
    const bool has_cluster = std::any_of(picks.begin(), picks.end(), [](const Pick& p) { return clustered(p); });
    nlohmann::json deferred = nlohmann::json::array();
    catalog::NewRestore r;
    r.source_set_id = req.backup_set_id();
    r.skip_safety_backup = req.skip_safety_backup();
    r.safety_set_id = safety_set;
    for (const auto& p : picks) {
      catalog::NewTask nt{p.agent.id, p.component, source[source_key(p)].snapshot_id, std::nullopt};
      if (auto it = safety_task.find({p.agent.id, p.component}); it != safety_task.end()) nt.safety_task_id = it->second;
      nt.repository = restore_task_repository(tx, nt);
      if (has_cluster && !p.member_of.empty()) {
        bool steps = members_selected[p.driver + "/" + p.member_of] > 1;
        deferred.push_back({{"agent_id", p.agent.id},
                            {"component", p.component},
                            {"snapshot", nt.source_snapshot.value_or("")},
                            {"safety_task_id", nt.safety_task_id.value_or("")},
                            {"restore_step", steps ? "preflight" : ""},
                            {"cluster_id", steps ? p.member_of : ""}});
        continue;
      }
      if (clustered(p)) {
        // Step by step on every member (on_task_ended makes the next ones),
        // starting with a preflight that stops nothing.
        nt.restore_step = "preflight";
        nt.cluster_id = p.cluster_id;
      } else if (!p.member_of.empty() && members_selected[p.driver + "/" + p.member_of] > 1) {
        nt.restore_step = "preflight";
        nt.cluster_id = p.member_of;
      }
      r.tasks.push_back(std::move(nt));
    }
    if (!deferred.empty()) sel["after_clusters"] = deferred;
    r.selector = sel;
    Ordered out;
    out.id = tx.create_restore(r);
    lock_targets(tx, picks, catalog::TaskKind::restore, out.id, config_.lock_ttl_seconds);

    std::map<std::string, std::vector<catalog::Task>> by_agent;
    for (auto& t : tx.tasks_of_restore(out.id)) by_agent[t.agent_id].push_back(t);
    PlanBatch plans(tx, config_, key_);
    for (const auto& [agent_id, tasks] : by_agent) {
      auto agent = tx.agent(agent_id);
      std::vector<std::string> ids;
      std::vector<cairn::v1::Task> wire;
      for (const auto& t : tasks) {
        ids.push_back(t.id);
        cairn::v1::Task w = restore_wire(tx, t, req.backup_set_id(), out.id);
        w.mutable_options()->set_restore_target(req.restore_target());
        w.mutable_options()->set_skip_safety_backup(req.skip_safety_backup());
        w.mutable_options()->set_force_identity(req.force_identity());
        w.mutable_options()->set_write_mode(mode);
        if (has_recovery) *w.mutable_options()->mutable_recovery_target() = req.recovery_target();
        if (t.safety_task_id) {
          w.mutable_options()->set_safety_backup_task_id(*t.safety_task_id);
          ids.push_back(*t.safety_task_id);  // bound to the same plan: the agent reports it
        }
        wire.push_back(w);
      }
      plans.add(*agent, ids, wire);
      out.agent_ids.push_back(agent_id);
    }
    plans.sign_and_store();
    return out;
  });
}

namespace {

// The step after `step` when every member ended it as ok says; "" when the
// cluster restore is over (docs/protocol.md § Cluster restore). A failed
// preflight changed nothing: the restore ends. Any failure from stop to
// verify rolls every member back (the data this restore set aside put back,
// the service started): all members end on the backup's data (commit) or
// all on their own (rollback). A failure once members may run the restored
// data (start, verify) first stops every member (halt) when the component
// asks for it (its members' preflight said "rollback_halt"): no member starts
// on its previous data beside members still on the restored data.
std::string next_step(const std::string& step, bool ok, bool halt) {
  if (step == "preflight") return ok ? "stop" : "";
  if (step == "stop") return ok ? "data" : "rollback";
  if (step == "data") return ok ? "start" : "rollback";
  if (step == "start") return ok ? "verify" : (halt ? "halt" : "rollback");
  if (step == "verify") return ok ? "commit" : (halt ? "halt" : "rollback");
  if (step == "halt") return "rollback";  // however the halts ended (a failed one is stopped again by its rollback)
  return "";  // commit, rollback
}

// Steps in the order they run; commit or rollback comes last. Tasks made in
// the same millisecond have no order of their own.
int step_rank(const std::string& step) {
  static const std::map<std::string, int> rank = {{"preflight", 1}, {"stop", 2},   {"data", 3},    {"start", 4},
                                                  {"verify", 5},    {"commit", 6}, {"halt", 7},     {"rollback", 8}};
  auto it = rank.find(step);
  return it == rank.end() ? 0 : it->second;
}

// The stop wave a member's preflight reported (agent/driver.h stop_wave);
// 0 when it reported none (an older agent, a failed preflight).
int stop_wave_of(const catalog::Task& preflight) {
  if (!preflight.component_metadata) return 0;
  auto j = nlohmann::json::parse(*preflight.component_metadata, nullptr, false);
  if (!j.is_object() || !j.contains("stop_wave") || !j["stop_wave"].is_number_integer()) return 0;
  return std::clamp(j["stop_wave"].get<int>(), 0, 9);
}

// Whether a member's preflight asked for the halt before a rollback
// (agent/driver.h rollback_needs_halt).
bool rollback_halt_of(const catalog::Task& preflight) {
  if (!preflight.component_metadata) return false;
  auto j = nlohmann::json::parse(*preflight.component_metadata, nullptr, false);
  return j.is_object() && j.value("rollback_halt", false) == true;
}

}  // namespace

void Orders::on_task_ended(Tx& tx, const catalog::Task& ended) {
  if (!ended.restore_id) return;
  next_cluster_step(tx, ended);
  release_deferred(tx, ended);
  // A rollback an ended restore owed (issue_owed_rollbacks) held the
  // cluster's lock for as long as it ran.
  if (ended.restore_step == "rollback" && !ended.cluster_id.empty())
    if (auto r = tx.restore(*ended.restore_id); r && r->state != catalog::SetState::running)
      if (auto target = cluster_lock_of(tx, ended.agent_id, ended.component, ended.cluster_id); !target.empty())
        tx.release_lock(target, *ended.restore_id);
}

// docs/protocol.md § A rollback owed to a member that was away. The member's
// agent is back: what the cancelled restore set aside on it is put back and
// its service started on it, as the other members were. The rollback acts
// only on this restore's own record there (a later restore's record is left
// alone), so running it late moves nothing another restore made.
size_t Orders::issue_owed_rollbacks(Tx& tx, const std::string& agent_id) {
  auto owed = tx.owed_rollbacks(agent_id);
  if (owed.empty()) return 0;
  auto agent = tx.agent(agent_id);
  if (!agent || agent->state != catalog::AgentState::approved) return 0;
  PlanBatch plans(tx, config_, key_);
  size_t n = 0;
  for (const auto& t : owed) {
    auto restore = tx.restore(*t.restore_id);
    std::string target = cluster_lock_of(tx, agent_id, t.component, t.cluster_id);
    if (!restore || target.empty()) {
      spdlog::warn("restore {}: the rollback owed to '{}' for '{}' cannot be made: the agent no longer declares it",
                   t.restore_id.value_or(""), agent->name, t.component);
      continue;
    }
    // Under the cluster's lock when it is free: no backup or restore of the
    // cluster starts while the member's data is put back. Held by another
    // (a backup on another member), the rollback runs beside it: that
    // holder cannot include this member, which was away when it began.
    if (!t.cluster_id.empty()) {
      if (!tx.acquire_lock(target, catalog::TaskKind::restore, restore->id, config_.lock_ttl_seconds))
        if (auto h = tx.lock_holder(target))
          spdlog::warn("restore {}: the rollback owed to '{}' runs while {} {} holds the cluster's lock", restore->id,
                       agent->name, h->first, h->second);
    }
    catalog::NewTask nt{agent_id, t.component, t.source_snapshot, std::nullopt};
    nt.restore_step = "rollback";
    nt.cluster_id = t.cluster_id;
    nt.repository = !t.repository.empty() ? t.repository : restore_task_repository(tx, nt);
    std::string id = tx.add_owed_rollback(restore->id, nt);
    cairn::v1::Task w = restore_wire(tx, *tx.task(id), restore->source_set_id, restore->id);
    w.mutable_options()->set_skip_safety_backup(true);
    plans.add(*agent, {id}, {w});
    spdlog::info("restore {}: '{}' is back; the rollback its member of '{}' was owed is sent", restore->id, agent->name,
                 t.component);
    ++n;
  }
  plans.sign_and_store();
  return n;
}

// Once every task of the restore ended, the members that waited for their
// clusters (after_clusters in the restore's selector) get their tasks: the
// same as create_restore would have made, with their safety tasks bound to
// the same plans. When a cluster's restore failed, their safety tasks end
// failed with the reason and nothing of theirs runs.
void Orders::release_deferred(Tx& tx, const catalog::Task& ended) {
  auto restore = tx.restore(*ended.restore_id);
  if (!restore || restore->state != catalog::SetState::running || !restore->selector.is_object()) return;
  const auto& sel = restore->selector;
  if (!sel.contains("after_clusters") || !sel["after_clusters"].is_array() || sel["after_clusters"].empty()) return;
  bool ok = true;
  auto tasks = tx.tasks_of_restore(*ended.restore_id);
  for (const auto& t : tasks) {
    catalog::TaskState st = t.id == ended.id ? ended.state : t.state;
    if (!catalog::is_terminal(st)) return;  // a cluster's restore is still going
    ok &= st == catalog::TaskState::succeeded || st == catalog::TaskState::partial;
  }
  for (const auto& d : sel["after_clusters"])
    for (const auto& t : tasks)
      if (t.agent_id == d.value("agent_id", "") && t.component == d.value("component", "")) return;  // released already
  if (!ok) {
    for (const auto& d : sel["after_clusters"]) {
      std::string safety = d.value("safety_task_id", "");
      if (safety.empty()) continue;
      catalog::TaskUpdate u{catalog::TaskState::failed};
      u.reasons.push_back({cairn::v1::ERROR_CODE_PREFLIGHT_FAILED,
                           "not run: the restore of the cluster it depends on (restored first in the same restore) failed",
                           d.value("component", "")});
      tx.update_task(safety, u);
    }
    return;
  }
  std::vector<catalog::NewTask> add;
  for (const auto& d : sel["after_clusters"]) {
    catalog::NewTask nt{d.value("agent_id", ""), d.value("component", ""), d.value("snapshot", ""), std::nullopt};
    if (!d.value("safety_task_id", "").empty()) nt.safety_task_id = d.value("safety_task_id", "");
    nt.restore_step = d.value("restore_step", "");
    nt.cluster_id = d.value("cluster_id", "");
    nt.repository = restore_task_repository(tx, nt);
    add.push_back(std::move(nt));
  }
  auto ids = tx.add_restore_tasks(*ended.restore_id, add);
  std::map<std::string, std::vector<std::string>> ids_of;  // agent -> task ids of its plan
  std::map<std::string, std::vector<cairn::v1::Task>> wire_of;
  for (const auto& id : ids) {
    auto t = tx.task(id);
    cairn::v1::Task w = restore_wire(tx, *t, restore->source_set_id, *ended.restore_id);
    w.mutable_options()->set_restore_target(sel.value("restore_target", ""));
    w.mutable_options()->set_skip_safety_backup(restore->skip_safety_backup);
    w.mutable_options()->set_force_identity(sel.value("force_identity", false));
    w.mutable_options()->set_write_mode(sel.value("write_mode", "") == "merge" ? cairn::v1::RESTORE_WRITE_MODE_MERGE
                                                                               : cairn::v1::RESTORE_WRITE_MODE_MIRROR);
    ids_of[t->agent_id].push_back(t->id);
    if (t->safety_task_id) {
      w.mutable_options()->set_safety_backup_task_id(*t->safety_task_id);
      ids_of[t->agent_id].push_back(*t->safety_task_id);
    }
    wire_of[t->agent_id].push_back(w);
  }
  PlanBatch plans(tx, config_, key_);
  for (const auto& [agent_id, wire] : wire_of) {
    plans.add(*tx.agent(agent_id), ids_of[agent_id], wire);
    to_deliver_.push_back(agent_id);
  }
  plans.sign_and_store();
}

void Orders::next_cluster_step(Tx& tx, const catalog::Task& ended) {
  if (ended.restore_step.empty() || ended.cluster_id.empty()) return;
  std::vector<catalog::Task> same;  // this cluster's tasks of this restore
  for (auto& t : tx.tasks_of_restore(*ended.restore_id))
    if (t.cluster_id == ended.cluster_id && t.component == ended.component) same.push_back(std::move(t));
  if (same.empty()) return;
  // The step in progress is the latest one; only its end moves the restore on.
  std::string step;
  for (const auto& t : same)
    if (step_rank(t.restore_step) > step_rank(step)) step = t.restore_step;
  if (step != ended.restore_step) return;
  bool ok = true;
  // The step's task of each member: the latest one (a rollback may have been
  // tried again on a member, below).
  auto ok_state = [](catalog::TaskState st) {
    return st == catalog::TaskState::succeeded || st == catalog::TaskState::partial;
  };
  std::map<std::string, catalog::Task> latest;  // agent -> its latest task of the step
  std::map<std::string, int> tries;
  for (const auto& t : same) {
    if (t.restore_step != step) continue;
    // tasks_of_restore lists them by the second they were made, so two tries
    // of one second come in any order: a try still open stands for the
    // member, else one that succeeded (a rollback done once is done), else
    // the last listed.
    auto it = latest.find(t.agent_id);
    if (it == latest.end() || !catalog::is_terminal(t.state) ||
        (catalog::is_terminal(it->second.state) && (ok_state(t.state) || !ok_state(it->second.state))))
      latest[t.agent_id] = t;
    ++tries[t.agent_id];
  }
  std::vector<catalog::Task> members;
  for (auto& [agent, t] : latest) {
    catalog::TaskState st = t.id == ended.id ? ended.state : t.state;
    if (!catalog::is_terminal(st)) return;  // a barrier: every member ends the step first
    ok &= ok_state(st);
    members.push_back(t);
  }
  bool halt = false;
  for (const auto& t : same)
    if (t.restore_step == "preflight" && rollback_halt_of(t)) halt = true;
  std::string next = next_step(step, ok, halt);
  // The stop step runs in waves (docs/protocol.md § The cluster restore):
  // each member's preflight said its wave ("stop_wave"); wave 0 stops first,
  // and only when all of it stopped does the next wave get its stop tasks.
  // Once every member stopped, the restore goes on to data.
  std::vector<std::string> later_waves;  // agents of the waves after the one about to stop
  if ((step == "preflight" && next == "stop") || (step == "stop" && ok)) {
    std::map<std::string, std::pair<int, catalog::Task>> unstopped;  // agent -> its wave, its preflight task
    for (const auto& t : same)
      if (t.restore_step == "preflight") unstopped.insert_or_assign(t.agent_id, std::pair{stop_wave_of(t), t});
    for (const auto& t : same)
      if (t.restore_step == "stop") unstopped.erase(t.agent_id);
    if (!unstopped.empty()) {
      int wave = std::min_element(unstopped.begin(), unstopped.end(), [](const auto& a, const auto& b) {
                   return a.second.first < b.second.first;
                 })->second.first;
      members.clear();
      for (const auto& [agent, wt] : unstopped)
        if (wt.first == wave)
          members.push_back(wt.second);
        else
          later_waves.push_back(agent);
      next = "stop";
    }
  }
  // The members a stop was sent to: a rollback goes to them alone (a member
  // of a later wave, or one refused as a whole, was never stopped). None:
  // nothing was stopped, nothing to roll back.
  if (step == "stop" && next == "rollback") {
    std::erase_if(members, [](const catalog::Task& t) { return !t.plan_id.has_value(); });
    if (members.empty()) next.clear();
  }
  if ((step == "rollback" || step == "halt") && !ok) {
    // A rollback (or halt) whose agent was lost (killed mid-rollback, restarted) runs
    // again on that member: it acts only on this restore's record, so a
    // second run puts back what the first did not, or finds nothing to do.
    // At most three tries a member; then the restore ends naming it.
    std::vector<catalog::Task> again;
    for (const auto& t : members) {
      catalog::TaskState st = t.id == ended.id ? ended.state : t.state;
      // A plan that expired waiting for an agent that is away is made again
      // for as long as it takes (the restore stays running, holding its lock,
      // saying which member owes its rollback; an operator may cancel it); an
      // agent lost while it ran the rollback is tried three times.
      bool missed = st == catalog::TaskState::missed;
      bool lost = std::any_of(t.reasons.begin(), t.reasons.end(),
                              [](const catalog::Reason& r) { return r.code == cairn::v1::ERROR_CODE_AGENT_LOST; });
      if (!ok_state(st) && (missed || (lost && tries[t.agent_id] < 3)))
        again.push_back(t);
    }
    if (!again.empty()) {
      members = std::move(again);
      next = step;
    } else if (step == "rollback") {
      return;
    }
    // A halt that failed on a member (its stop command failed) still goes on
    // to the rollback, which stops the service again before it puts anything back.
  }
  if (next.empty()) return;
  auto restore = tx.restore(*ended.restore_id);
  if (!restore || restore->state != catalog::SetState::running) return;
  std::vector<catalog::NewTask> tasks;
  for (const auto& m : members) {
    catalog::NewTask nt{m.agent_id, m.component, m.source_snapshot, std::nullopt};
    nt.restore_step = next;
    nt.cluster_id = m.cluster_id;
    nt.repository = !m.repository.empty() ? m.repository : restore_task_repository(tx, nt);
    tasks.push_back(std::move(nt));
  }
  auto ids = tx.add_restore_tasks(*ended.restore_id, tasks);
  // A member whose agent is gone cannot take this step: it fails now (the
  // barrier then rolls every member back), instead of a plan waiting for the
  // agent while the others stop. A rollback waits for it: its agent puts
  // back what this restore set aside when it returns. So does a halt: the
  // others stay stopped until the absent member's service is stopped too (it
  // may run the restored data; the others starting on their previous data
  // beside it would mix the two).
  std::vector<std::string> absent;
  if (next != "rollback" && next != "halt" && connected_)
    for (const auto& id : ids)
      if (auto t = tx.task(id); t && !connected_(t->agent_id)) absent.push_back(id);
  // Nothing is stopped unless every member can be: a member gone between
  // preflight and stop ends the restore there, every member untouched.
  std::string names;
  for (const auto& id : absent)
    if (auto t = tx.task(id))
      if (auto a = tx.agent(t->agent_id)) names += (names.empty() ? "'" : ", '") + a->name + "'";
  if (next == "stop" && connected_)
    for (const auto& agent : later_waves)  // a member of a later wave must be there too
      if (!connected_(agent))
        if (auto a = tx.agent(agent)) names += (names.empty() ? "'" : ", '") + a->name + "'";
  if (next == "stop" && !names.empty()) {
    for (const auto& id : ids) {
      auto t = tx.task(id);
      if (!t || catalog::is_terminal(t->state)) continue;
      catalog::TaskUpdate u{catalog::TaskState::failed};
      u.reasons.push_back({cairn::v1::ERROR_CODE_AGENT_LOST,
                           "not stopped: the agent of " + names +
                               " is not connected, and no member is stopped unless every member can be",
                           t->component});
      tx.update_task(id, u);
    }
    return;
  }
  // The lock stays the restore's for the next step.
  std::string driver;
  for (const auto& c : tx.agent_components(members.front().agent_id))
    if (c.name == ended.component) driver = c.driver;
  tx.acquire_lock("cluster:" + driver + "/" + ended.cluster_id, catalog::TaskKind::restore, *ended.restore_id,
                  config_.lock_ttl_seconds);
  PlanBatch plans(tx, config_, key_);
  for (const auto& id : ids) {
    if (std::find(absent.begin(), absent.end(), id) != absent.end()) continue;
    auto t = tx.task(id);
    auto agent = tx.agent(t->agent_id);
    cairn::v1::Task w = restore_wire(tx, *t, restore->source_set_id, *ended.restore_id);
    w.mutable_options()->set_skip_safety_backup(true);  // taken at the stop step
    if (restore->selector.is_object() && restore->selector.value("force_identity", false))
      w.mutable_options()->set_force_identity(true);
    plans.add(*agent, {t->id}, {w});
    to_deliver_.push_back(t->agent_id);
  }
  plans.sign_and_store();
  for (const auto& id : absent) {
    auto t = tx.task(id);
    if (!t || catalog::is_terminal(t->state)) continue;
    catalog::TaskUpdate u{catalog::TaskState::failed};
    u.reasons.push_back({cairn::v1::ERROR_CODE_AGENT_LOST,
                         "the member's agent is not connected: step '" + next + "' cannot run there", t->component});
    tx.update_task(id, u);  // may end the step, and so move the restore on (to its rollback)
  }
}

std::vector<std::string> Orders::take_agents_to_deliver() {
  std::vector<std::string> out;
  out.swap(to_deliver_);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace cairn::controller
