// A restore drill order (docs/drills.md): a set's selected snapshots restored
// and checked in a sandbox on one drill agent.
#include <map>
#include <set>

#include "controller/driver_metadata.h"
#include "controller/orders_internal.h"

namespace cairn::controller {

Ordered Orders::create_drill(const std::string& actor, const cairn::v1::DrillRequest& req) {
  using namespace orders_detail;
  return catalog_.transaction(actor, [&](Tx& tx) {
    check_names(tx, req.selector());
    // What a set holds that the selection picks: (task, driver), one per
    // cluster for a cluster-scoped component (the snapshot a whole-cluster
    // restore would restore), one per agent for the others.
    std::set<std::string> without_drill;  // components whose driver has none, as their agent declares
    auto drillable_of = [&](const std::string& set_id, bool selected = true) {
      std::vector<std::pair<catalog::Task, std::string>> out;
      std::set<std::string> clusters;
      for (auto& t : tx.tasks_of_set(set_id)) {
        if (!t.snapshot_id || t.snapshot_removed_at || (t.state != catalog::TaskState::succeeded && t.state != catalog::TaskState::partial))
          continue;
        if (selected && !listed(req.selector().components(), t.component)) continue;
        auto agent = tx.agent(t.agent_id);
        if (!agent || (selected && !listed(req.selector().nodes(), agent->name, agent->id))) continue;
        std::string driver;
        for (const auto& c : tx.agent_components(t.agent_id))
          if (c.name == t.component) {
            driver = c.driver;
            if (!c.has_drill) without_drill.insert(t.agent_id + "/" + t.component);
          }
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
    // A snapshot whose drill starts another driver's beside it (a Kafka
    // broker in ZooKeeper mode: the ensemble, docs/drills.md § Kafka), as
    // its metadata says: that driver's snapshot the selection holds, or else
    // the set's one, in the same repository.
    std::map<std::string, std::vector<std::pair<catalog::Task, std::string>>> companions_by_driver;
    for (const auto& p : picks)
      if (auto b = driver_metadata::drill_beside(driver_metadata::parse_optional(p.first.component_metadata)); !b.driver.empty())
        companions_by_driver[b.driver];
    for (auto& [d, list] : companions_by_driver) {
      bool selected = false;
      for (const auto& p : picks) selected = selected || p.second == d;
      for (auto& p : selected ? picks : drillable_of(set->id, false))
        if (p.second == d) list.push_back(p);
    }
    std::map<std::string, catalog::Task> companion_of;  // backup task id -> the snapshot started beside it
    std::set<std::string> companion_drivers;
    // What no drill can run: a driver without one, a snapshot whose
    // companion the set does not hold. An operator's drill is refused naming
    // them; a policy's scheduled drill leaves them out, says so in the audit
    // trail, and drills the rest (one cluster without its companion must not
    // leave every other component unproven).
    auto undrillable = [&](const catalog::Task& t, const std::string& driver) -> std::string {
      if (without_drill.count(t.agent_id + "/" + t.component))
        return "'" + t.component + "' (driver " + driver + ": no drill exists for it)";
      const auto beside = driver_metadata::drill_beside(driver_metadata::parse_optional(t.component_metadata));
      if (beside.driver.empty()) return {};
      std::vector<const catalog::Task*> here;
      for (const auto& [z, zd] : companions_by_driver[beside.driver])
        if (z.repository == t.repository) here.push_back(&z);
      if (here.size() == 1) {
        companion_of[t.id] = *here.front();
        companion_drivers.insert(beside.driver);
        return {};
      }
      if (here.empty())
        return "'" + t.component + "' (" + beside.why + "; the set holds no '" + beside.driver + "' snapshot in repository '" +
               t.repository + "' to start beside it; back up the " + beside.driver + " component in the same set)";
      return "'" + t.component + "' (" + beside.why + "; the set holds " + std::to_string(here.size()) + " '" + beside.driver +
             "' clusters; name the one to start beside it with --component)";
    };
    std::string refused;
    std::vector<std::pair<catalog::Task, std::string>> kept;
    for (auto& p : picks) {
      std::string why = undrillable(p.first, p.second);
      if (why.empty())
        kept.push_back(std::move(p));
      else if (refused.find(why) == std::string::npos)
        refused += std::string(refused.empty() ? "" : "; ") + why;
    }
    const bool scheduled = !req.policy().empty();
    if (!refused.empty() && (!scheduled || kept.empty()))
      throw OpError(cairn::v1::ERROR_CODE_UNSUPPORTED_TASK, "backup set '" + set->id + "' holds snapshots no drill can run: " + refused +
                                                                (scheduled ? "" : "; leave them out with --component"));
    picks = std::move(kept);
    if (!refused.empty())
      tx.audit({"drill.skipped", "backup_set:" + set->id, "skipped", "undrillable", {{"policy", req.policy()}, {"left_out", refused}}});
    // Snapshots of one drill group (a Kafka cluster's brokers) are drilled
    // together, as one sandbox cluster (docs/drills.md § Kafka); each one's
    // task carries them all. Keyed by the repository, the driver and the
    // group its metadata names.
    std::map<std::string, std::vector<const catalog::Task*>> groups;
    std::map<std::string, std::string> group_of;  // backup task id -> its key
    for (const auto& [t, driver] : picks) {
      std::string g = driver_metadata::drill_group(driver_metadata::parse_optional(t.component_metadata));
      if (g.empty()) continue;
      std::string key = t.repository + "/" + driver + "/" + g;
      group_of[t.id] = key;
      groups[key].push_back(&t);
    }
    // The drill agent: the one named, or the first connected agent that
    // declares a drill sandbox able to run every selected driver.
    auto can_drill = [&](const catalog::Agent& a) {
      if (a.state != catalog::AgentState::approved) return false;
      if (connected_ && !connected_(a.id)) return false;
      if (!supports_) return true;
      for (const auto& [t, driver] : picks)
        if (!supports_(a.id, "drill:" + driver)) return false;
      for (const auto& d : companion_drivers)
        if (!supports_(a.id, "drill:" + d)) return false;
      return true;
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
      if (auto k = group_of.find(src.id); k != group_of.end())
        for (const catalog::Task* member : groups.at(k->second)) {
          auto* ref = w.add_drill_members();
          ref->set_backup_set_id(set->id);
          ref->set_snapshot_id(member->snapshot_id.value_or(""));
          ref->set_repository(member->repository);
        }
      if (auto z = companion_of.find(src.id); z != companion_of.end()) {
        auto* ref = w.add_drill_zookeeper();  // the companion snapshot (its field's name from when only Kafka had one)
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

}  // namespace cairn::controller
