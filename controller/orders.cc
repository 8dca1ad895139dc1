// Backup, restore and drill orders: what their files share (orders_internal.h),
// and the selector's catalog form. The orders themselves: orders_backup.cc,
// orders_restore.cc, orders_drill.cc, and the steps of a cluster restore
// orders_cluster.cc.
#include <map>
#include <set>

#include "common/crypto/crypto.h"
#include "common/util/encoding.h"
#include "controller/driver_metadata.h"
#include "controller/orders_internal.h"
#include "proto/restore_step.h"

namespace cairn::controller {
namespace orders_detail {

bool clustered(const Pick& p) { return !p.cluster_id.empty(); }

// The operation lock: a node-scoped component's on the agent, a cluster's on
// the cluster (every member's backup and restore take the same one).
std::string lock_target(const Pick& p) {
  return clustered(p) ? "cluster:" + p.driver + "/" + p.cluster_id : p.agent.id + "/" + p.component;
}

// The same for a member's task in the catalog: its cluster's lock, or "" when
// the agent no longer declares the component.
std::string cluster_lock_of(const Tx& tx, const std::string& agent_id, const std::string& component, const std::string& cluster_id) {
  for (const auto& c : tx.agent_components(agent_id))
    if (c.name == component) return "cluster:" + c.driver + "/" + cluster_id;
  return {};
}

// The token of the new cluster a restore makes (etcd's --initial-cluster-token):
// new for every restore, the same on every member.
std::string cluster_token(const std::string& restore_id, const std::string& cluster_id) {
  return "cairn-" + restore_id + "-" + to_hex(crypto::sha256(as_bytes(cluster_id))).substr(0, 8);
}

bool listed(const google::protobuf::RepeatedPtrField<std::string>& list, const std::string& a, const std::string& b) {
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
    declared += (declared.empty() ? "" : "; ") + p.component + " on " + p.agent.name + ": " + quoted_list(p.restore_targets);
  }
  if (!missing.empty())
    throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT, "no restore target '" + target + "' declared by component " + missing +
                                                              " (declared targets: " + declared +
                                                              "); pick a declared target, or narrow the selection with --component/--node");
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
std::string restore_repository(const Tx& tx, const std::string& agent_id, const std::string& component, const std::string& snapshot) {
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
  if (t.restore_step != cairn::v1::RESTORE_STEP_ALL) {
    w.mutable_options()->set_restore_step(proto::restore_step_name(t.restore_step));
    (*w.mutable_options()->mutable_cluster_options())["cluster_token"] = cluster_token(restore_id, t.cluster_id);
  }
  // A rollback starts the member's service again only when its stop step
  // found it running: a member that was down before the restore (an empty
  // host, a member an operator had stopped) stays down.
  if (t.restore_step == cairn::v1::RESTORE_STEP_ROLLBACK && t.restore_id)
    for (const auto& s : tx.tasks_of_restore(*t.restore_id))
      if (s.agent_id == t.agent_id && s.component == t.component && s.restore_step == cairn::v1::RESTORE_STEP_STOP &&
          s.component_metadata && driver_metadata::stop_found_service_down(driver_metadata::parse(*s.component_metadata)))
        (*w.mutable_options()->mutable_cluster_options())["was_running"] = "false";
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
      throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT, "component '" + component_of[cluster] + "' is cluster-scoped: cluster '" +
                                                                cluster + "' is restored on all its members at once (" + quoted_list(all) +
                                                                "), but " + quoted_list(missing) +
                                                                " are not selected; select every member (or only --component)");
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
      std::string why = !a && tx.name_released(name)               ? "its agent is revoked and no agent took the name"
                        : !a                                       ? "no agent has this name"
                        : a->state == catalog::AgentState::pending ? "its agent is pending approval"
                        : a->state == catalog::AgentState::revoked ? "its agent is revoked"
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
                  problems +
                      ". A cluster restore runs on every member the backup names, or on none: nothing was "
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
                    "the agents " + quoted_list(old) +
                        " are older than this controller's cluster restore (they do not "
                        "announce 'restore-steps/2'): upgrade them first; nothing was stopped or changed");
    return;
  }
  std::string what;
  for (const auto& [cluster, names] : absent) what += (what.empty() ? "" : "; ") + cluster + ": " + quoted_list(names);
  throw OpError(cairn::v1::ERROR_CODE_UNAVAILABLE,
                "a cluster restore stops no member until every member is ready, and these members' agents are not "
                "connected: " +
                    what +
                    ". Nothing was stopped or changed; bring the agents back ('cairnctl agent list' "
                    "shows them) and run the restore again");
}

std::string write_mode_name(cairn::v1::RestoreWriteMode m) { return m == cairn::v1::RESTORE_WRITE_MODE_MERGE ? "merge" : "mirror"; }

std::string new_plan_id() { return "pl-" + to_hex(crypto::random_array<8>()); }

void lock_targets(Tx& tx, const std::vector<Pick>& picks, catalog::TaskKind kind, const std::string& holder, int64_t ttl) {
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
      throw OpError(cairn::v1::ERROR_CODE_CONFLICT, (clustered(p) ? "cluster '" + p.cluster_id + "' of component '" + p.component + "'"
                                                                  : "component '" + p.component + "' on '" + p.agent.name + "'") +
                                                        " is busy: " + by + " holds its lock; try again once it ends");
    }
  }
}

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
                      "them" +
                      (what == "drill" ? " (a drill runs servers on the drill host from them)" : "") +
                      "; check its snapshots ('cairnctl backup show'), then " + what + " with --accept-unattested");
  tx.audit({what + ".accept_unattested",
            "backup_set:" + set.id,
            "ok",
            "an operator " + std::string(what == "drill" ? "drills" : "restores from") + " a set no signed set record covers",
            {}});
}

}  // namespace orders_detail

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

std::vector<BackupTarget> backup_targets(const catalog::Tx& tx, const cairn::v1::Selector& selector, const std::string& repository) {
  std::vector<BackupTarget> out;
  for (const auto& p : orders_detail::select_known(tx, selector, false))
    out.push_back({p.agent.name, p.component, repository.empty() ? p.repository : repository});
  return out;
}

}  // namespace cairn::controller
