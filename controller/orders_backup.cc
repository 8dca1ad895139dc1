// A backup order: one backup set, one task per selected component (one member
// of a cluster-scoped one), one signed plan per agent.
#include <map>
#include <set>

#include "controller/orders_internal.h"

namespace cairn::controller {

Ordered Orders::create_backup(const std::string& actor, const cairn::v1::Selector& selector, const std::string& mode,
                              const BackupExtras& extras) {
  using namespace orders_detail;
  return catalog_.transaction(actor, [&](Tx& tx) {
    auto selected = select(tx, selector, false);
    if (selected.empty())
      throw OpError(cairn::v1::ERROR_CODE_NOTHING_SELECTED,
                    "the selection matched no component of an approved agent (see 'cairnctl agent list')");
    // A mode goes to the components that declare it; one nobody declares is a mistake.
    std::set<std::pair<std::string, std::string>> takes_mode;
    for (const auto& p : selected)
      if (!mode.empty() && std::find(p.modes.begin(), p.modes.end(), mode) != p.modes.end()) takes_mode.insert({p.agent.id, p.component});
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
        w.set_cluster_id(t.cluster_id);                                        // the snapshot's tag cluster:<id> (catalog rebuild, import)
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

}  // namespace cairn::controller
