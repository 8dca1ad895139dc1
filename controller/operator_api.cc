// Operator requests against the catalog and the fleet.
#include "controller/operator_api.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <map>
#include <set>

#include "cairn/version.h"
#include "common/util/error.h"
#include "controller/key_rotation.h"
#include "controller/keyfiles.h"
#include "proto/restore_step.h"

namespace cairn::controller {
namespace {

using cairn::v1::ErrorCode;

// The full id for what the operator typed: the id itself, or the one id that
// starts with it. Ambiguous prefixes are refused with the candidates listed.
std::string resolve_id(const catalog::Tx& tx, catalog::Tx::IdKind kind, const std::string& given, const char* what) {
  if (given.empty()) throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT, std::string("no ") + what + " id given");
  constexpr size_t kShown = 10;
  auto ids = tx.ids_with_prefix(kind, given, kShown + 1);
  for (const auto& id : ids)
    if (id == given) return id;
  if (ids.empty()) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, std::string("no ") + what + " '" + given + "'");
  if (ids.size() == 1) return ids.front();
  std::string list;
  for (size_t i = 0; i < ids.size() && i < kShown; ++i) list += (i ? ", '" : "'") + ids[i] + "'";
  if (ids.size() > kShown) list += ", ...";
  throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                std::string(what) + " id prefix '" + given + "' is ambiguous: it matches " + list + "; give more characters");
}

// A set's own fields, as `backup list` and `backup show` give them. A safety
// set names the restore it was taken for, so it never reads as a backup.
void fill_set_header(const catalog::Tx& tx, const catalog::BackupSet& s, cairn::v1::BackupSetInfo& out) {
  out.set_backup_set_id(s.id);
  out.set_created_at(s.created_at);
  out.set_requested_by(s.requested_by);
  out.set_state(wire_state(s.state));
  out.set_finished_at(s.finished_at.value_or(0));
  out.set_trigger(s.trigger);
  if (s.trigger == "safety") out.set_safety_for_restore_id(tx.restore_of_safety_set(s.id).value_or(""));
  out.set_policy(s.policy.value_or(""));
  out.set_expired_at(s.expired_at.value_or(0));
  out.set_forgotten_at(s.forgotten_at.value_or(0));
  out.set_unattested(!s.attested);
  if (auto k = tx.active_controller_key(); k)
    for (const auto& r : tx.set_record_repositories(s.id, *k)) out.add_signed_record_in(r);
  // The newest drill of each drilled snapshot (docs/drills.md): proven
  // restorable, or the drill's failure.
  std::map<std::string, cairn::v1::DrillSummary> newest;  // by source snapshot
  std::map<std::string, catalog::Task> source;            // the set's task that wrote each snapshot
  for (const auto& d : tx.restores_of_set(s.id)) {
    if (d.kind != "drill") continue;
    if (source.empty())
      for (auto& t : tx.tasks_of_set(s.id))
        if (t.snapshot_id) source[*t.snapshot_id] = std::move(t);
    for (const auto& t : tx.tasks_of_restore(d.id)) {
      cairn::v1::DrillSummary w;
      w.set_component(t.component);
      // A cluster's snapshot is the cluster's, not its writer's.
      if (auto it = source.find(t.source_snapshot.value_or("")); it != source.end()) {
        if (!it->second.cluster_id.empty())
          w.set_component(t.component + " (cluster " + it->second.cluster_id + ")");
        else if (auto a = tx.agent(it->second.agent_id))
          w.set_agent_name(a->name);
      }
      w.set_drill_id(d.id);
      // A drill is proven task by task: one snapshot's success is its own.
      w.set_state(t.state == catalog::TaskState::succeeded ? cairn::v1::SET_STATE_COMPLETE
                  : catalog::is_terminal(t.state)          ? cairn::v1::SET_STATE_FAILED
                                                           : cairn::v1::SET_STATE_RUNNING);
      w.set_finished_at(catalog::is_terminal(t.state) ? t.updated_at : 0);
      if (t.state != catalog::TaskState::succeeded && !t.reasons.empty()) w.set_failure(t.reasons.front().detail);
      newest[t.source_snapshot.value_or("")] = w;  // restores_of_set is oldest first
    }
  }
  for (auto& [snap, w] : newest) *out.add_drills() = std::move(w);
  // Its offsite copies (a policy's copy_to).
  for (const auto& c : tx.set_copies(s.id)) {
    auto* w = out.add_copies();
    w->set_repository(c.repository);
    w->set_state(c.started_at && c.state != "copied" ? "copying" : c.state);
    w->set_reason(c.reason);
    if (c.started_at && c.state != "copied") {
      w->set_started_at(*c.started_at);
      w->set_snapshots_total(c.snapshots_total);
      w->set_bytes_total(c.bytes_total);
    }
    w->set_finished_at(c.finished_at.value_or(0));
    w->set_next_attempt_at(c.state == "failed" ? c.next_attempt_at : 0);
    w->set_attempts(c.attempts);
    w->set_snapshots(c.snapshots);
    w->set_bytes(c.bytes);
    w->set_blobs_new(c.blobs_new);
    w->set_removed(c.removed_at.has_value());
  }
}

// --require-connected: nothing is created when a selected agent is offline.
void refuse_offline(const std::vector<std::string>& names) {
  if (names.empty()) return;
  std::string list;
  for (const auto& n : names) list += (list.empty() ? "'" : ", '") + n + "'";
  throw OpError(cairn::v1::ERROR_CODE_CONFLICT, "not connected: " + list +
                                                    "; nothing was created (start the agent(s), leave them out with --node, or drop "
                                                    "--require-connected to queue the work until they connect)");
}

}  // namespace

void OperatorApi::fill_task(const catalog::Tx& tx, const catalog::Task& t, cairn::v1::TaskInfo& out) const {
  out.set_task_id(t.id);
  out.set_agent_id(t.agent_id);
  if (auto a = tx.agent(t.agent_id)) {
    out.set_agent_name(a->name);
    out.set_agent_last_seen(a->last_seen_at.value_or(0));
  }
  out.set_agent_connected(fleet_.connected(t.agent_id));
  if (t.plan_id)
    if (auto p = tx.plan(*t.plan_id)) out.set_plan_expires_at(p->expires_at);
  out.set_component(t.component);
  out.set_kind(t.kind == catalog::TaskKind::backup                  ? cairn::v1::TASK_KIND_BACKUP
               : t.restore_id && t.restore_id->rfind("dr-", 0) == 0 ? cairn::v1::TASK_KIND_DRILL
                                                                    : cairn::v1::TASK_KIND_RESTORE);
  out.set_state(wire_state(t.state));
  for (const auto& r : t.reasons) {
    auto* w = out.add_reasons();
    w->set_code(r.code);
    w->set_detail(r.detail);
    w->set_item(r.item);
  }
  auto* p = out.mutable_progress();
  p->set_task_id(t.id);
  p->set_phase(t.progress.phase);
  p->set_bytes_done(t.progress.bytes_done);
  p->set_bytes_total(t.progress.bytes_total);
  p->set_files_done(t.progress.files_done);
  p->set_files_total(t.progress.files_total);
  p->set_current_item(t.progress.current_item);
  p->set_at(t.progress.at.value_or(0));
  if (t.snapshot_id) out.set_snapshot_id(*t.snapshot_id);
  if (t.component_metadata) out.set_component_metadata(*t.component_metadata);
  out.set_restore_step(proto::restore_step_name(t.restore_step));
  out.set_repository(t.repository);
  out.set_snapshot_removed_at(t.snapshot_removed_at.value_or(0));
  out.set_storage_requests(t.storage_requests);
  out.set_storage_retries(t.storage_retries);
  out.set_cluster_id(t.cluster_id);
  if (t.manifest_digest) out.set_manifest_digest(*t.manifest_digest);
  out.set_updated_at(t.updated_at);
}

void OperatorApi::fill_set(const catalog::Tx& tx, const std::string& id, cairn::v1::BackupSetInfo& out) const {
  auto s = tx.backup_set(id);
  if (!s) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no backup set '" + id + "'");
  fill_set_header(tx, *s, out);
  for (const auto& t : tx.tasks_of_set(id)) fill_task(tx, t, *out.add_tasks());
}

void OperatorApi::fill_restore(const catalog::Tx& tx, const std::string& id, cairn::v1::RestoreInfo& out) const {
  auto r = tx.restore(id);
  if (!r) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no restore '" + id + "'");
  out.set_restore_id(r->id);
  out.set_backup_set_id(r->source_set_id);
  out.set_state(wire_state(r->state));
  out.set_safety_backup_set_id(r->safety_set_id.value_or(""));
  out.set_created_at(r->created_at);
  out.set_finished_at(r->finished_at.value_or(0));
  out.set_kind(r->kind);
  if (r->kind == "drill") {
    auto tasks = tx.tasks_of_restore(id);
    for (const auto& t : tasks) fill_task(tx, t, *out.add_tasks());
    if (r->state != catalog::SetState::running) out.set_verdict(catalog::drill_verdict(tasks));
    std::string agent = tasks.empty() ? std::string() : tasks.front().agent_id;
    if (auto a = tx.agent(agent)) agent = a->name;
    out.add_order("restore into a sandbox on " + agent + ", start, check, tear down (docs/drills.md)");
    return;
  }
  if (r->selector.is_object()) {
    out.set_restore_target(r->selector.value("restore_target", ""));
    out.set_write_mode(r->selector.value("write_mode", "") == "merge" ? cairn::v1::RESTORE_WRITE_MODE_MERGE
                                                                      : cairn::v1::RESTORE_WRITE_MODE_MIRROR);
  }
  // The safety backup's tasks come first: they run first and can stop the restore.
  if (r->safety_set_id)
    for (const auto& t : tx.tasks_of_set(*r->safety_set_id)) fill_task(tx, t, *out.add_tasks());
  auto tasks = tx.tasks_of_restore(id);
  for (const auto& t : tasks) fill_task(tx, t, *out.add_tasks());

  // The order, as the controller runs it (docs/protocol.md § Restores).
  auto name_of = [&](const std::string& agent_id) {
    auto a = tx.agent(agent_id);
    return a ? a->name : agent_id;
  };
  std::map<std::string, std::set<std::string>> clusters;  // "component, cluster X" -> members
  std::set<std::string> plain;
  for (const auto& t : tasks) {
    if (!t.cluster_id.empty())
      clusters[t.component + " (cluster " + t.cluster_id + ")"].insert(name_of(t.agent_id));
    else
      plain.insert(t.component + " on " + name_of(t.agent_id));
  }
  std::set<std::string> after;
  if (r->selector.is_object() && r->selector.contains("after_clusters") && r->selector["after_clusters"].is_array())
    for (const auto& d : r->selector["after_clusters"])
      if (d.is_object()) after.insert(d.value("component", "") + " on " + name_of(d.value("agent_id", "")));
  auto join = [](const std::set<std::string>& s) {
    std::string out;
    for (const auto& x : s) out += (out.empty() ? "" : ", ") + x;
    return out;
  };
  if (r->safety_set_id) out.add_order("safety backup of what will be overwritten (set " + *r->safety_set_id + ")");
  for (const auto& [c, members] : clusters)
    out.add_order(c + ": stop, data, start, verify on every member together (" + join(members) + ")");
  // A deferred member's tasks exist once released: listed with what waits, not twice.
  for (const auto& x : after) plain.erase(x);
  if (!after.empty()) out.add_order("after every cluster above is verified: " + join(after));
  if (!plain.empty()) out.add_order(join(plain));
}

std::vector<std::string> OperatorApi::offline_selected(const cairn::v1::Selector& sel) const {
  std::vector<catalog::Agent> picked;
  catalog_.read([&](const catalog::Tx& tx) {
    for (const auto& a : tx.agents()) {
      if (a.state != catalog::AgentState::approved) continue;
      bool named = sel.nodes().empty();
      for (const auto& n : sel.nodes()) named |= n == a.name || n == a.id;
      bool has_component = sel.components().empty();
      for (const auto& c : tx.agent_components(a.id))
        for (const auto& want : sel.components()) has_component |= c.name == want;
      if (named && has_component) picked.push_back(a);
    }
  });
  std::vector<std::string> out;
  for (const auto& a : picked)
    if (!fleet_.connected(a.id)) out.push_back(a.name);
  return out;
}

void OperatorApi::cancel(const std::string& actor, const std::string& given, cairn::v1::OperatorResponse& r) {
  std::string id;
  bool is_restore = false;
  size_t cancelled = catalog_.transaction(actor, [&](catalog::Tx& tx) {
    // A restore id (rs-...) or a backup set id (bs-...); a prefix of either.
    auto sets = tx.ids_with_prefix(catalog::Tx::IdKind::backup_set, given, 2);
    auto restores = tx.ids_with_prefix(catalog::Tx::IdKind::restore, given, 2);
    is_restore = !restores.empty() && sets.empty();
    id = resolve_id(tx, is_restore ? catalog::Tx::IdKind::restore : catalog::Tx::IdKind::backup_set, given,
                    is_restore ? "restore" : "backup set");
    std::vector<catalog::Task> tasks;
    bool ended = false;  // an ended restore's open task is a rollback it owed a member
    if (is_restore) {
      auto rs = tx.restore(id);
      ended = rs->state != catalog::SetState::running;
      if (rs->safety_set_id) tasks = tx.tasks_of_set(*rs->safety_set_id);
      for (auto& t : tx.tasks_of_restore(id)) tasks.push_back(std::move(t));
    } else {
      tasks = tx.tasks_of_set(id);
    }
    size_t n = 0;
    for (const auto& t : tasks) {
      if (catalog::is_terminal(t.state)) continue;
      catalog::TaskUpdate u(catalog::TaskState::failed);
      u.reasons.push_back({cairn::v1::ERROR_CODE_CANCELLED, ended ? catalog::kOwedRollbackGivenUp : "cancelled by operator", ""});
      tx.update_task(t.id, u);
      ++n;
    }
    return n;
  });
  spdlog::info("operator: '{}' cancelled {} open task(s) of '{}'", actor, cancelled, id);
  catalog_.read([&](const catalog::Tx& tx) {
    if (is_restore)
      fill_restore(tx, id, *r.mutable_restore());
    else
      fill_set(tx, id, *r.mutable_backup_set());
  });
}

void OperatorApi::fill_agent(const catalog::Tx& tx, const catalog::Agent& a, cairn::v1::AgentInfo& out) const {
  out.set_agent_id(a.id);
  out.set_name(a.name);
  out.set_curve_public_key(key_to_z85(a.curve_public_key));
  out.set_state(wire_state(a.state));
  out.set_last_seen(a.last_seen_at.value_or(0));
  out.set_connected(fleet_.connected(a.id));
  for (const auto& k : a.trusted_key_ids) out.add_trusted_key_ids(k);
  out.set_trusts_active_key(std::find(a.trusted_key_ids.begin(), a.trusted_key_ids.end(), signing_key_.key_id()) !=
                            a.trusted_key_ids.end());
  for (const auto& c : tx.agent_components(a.id)) {
    auto* w = out.add_components();
    w->set_name(c.name);
    w->set_driver(c.driver);
    w->set_can_restore(c.can_restore);
    for (const auto& t : c.restore_targets) w->add_restore_targets(t);
    // What the catalog has, node-scoped components included (issue 32).
    w->set_scope(c.scope.empty() ? std::string("node") : c.scope);
    w->set_cluster_id(c.cluster_id);
    w->set_member_id(c.member_id);
    if (c.scope == "cluster") {
      // "none": the component cannot name its cluster (an empty host) and no
      // backup names this agent as a member of one.
      w->set_membership(c.cluster_id.empty() ? "none" : c.member_pending ? "pending" : "approved");
      w->set_declared_cluster_id(c.declared_cluster_id);
    }
    w->set_repository(c.repository);
  }
}

cairn::v1::OperatorResponse OperatorApi::handle(const std::string& actor, const cairn::v1::OperatorRequest& q) {
  cairn::v1::OperatorResponse r;
  r.set_request_id(q.request_id());
  try {
    dispatch(actor, q, r);
    r.set_code(cairn::v1::ERROR_CODE_OK);
  } catch (const OpError& e) {
    r.clear_body();
    r.set_code(e.code());
    r.set_detail(e.what());
  } catch (const Error& e) {
    r.clear_body();
    r.set_code(e.code() == Errc::not_found       ? cairn::v1::ERROR_CODE_NOT_FOUND
               : e.code() == Errc::invalid_input ? cairn::v1::ERROR_CODE_CONFLICT
                                                 : cairn::v1::ERROR_CODE_INTERNAL);
    r.set_detail(e.what());
  } catch (const std::exception& e) {
    spdlog::error("operator: request from '{}' failed: {}", actor, e.what());
    r.clear_body();
    r.set_code(cairn::v1::ERROR_CODE_INTERNAL);
    r.set_detail("internal error; see the controller's log");
  }
  return r;
}

void OperatorApi::dispatch(const std::string& actor, const cairn::v1::OperatorRequest& q, cairn::v1::OperatorResponse& r) {
  using Q = cairn::v1::OperatorRequest;
  switch (q.body_case()) {
    case Q::kBackupCreate: {
      if (q.backup_create().require_connected()) refuse_offline(offline_selected(q.backup_create().selector()));
      auto o = orders_.create_backup(actor, q.backup_create().selector(), q.backup_create().mode());
      spdlog::info("operator: '{}' created backup set '{}' for {} agent(s)", actor, o.id, o.agent_ids.size());
      fleet_.deliver(o.agent_ids);
      catalog_.read([&](const catalog::Tx& tx) { fill_set(tx, o.id, *r.mutable_backup_set()); });
      return;
    }
    case Q::kBackupList: {
      size_t limit = q.backup_list().limit() ? q.backup_list().limit() : 50;
      catalog_.read([&](const catalog::Tx& tx) {
        for (const auto& s : tx.backup_sets(limit)) {
          fill_set_header(tx, s, *r.mutable_backup_list()->add_sets());
        }
      });
      r.mutable_backup_list();
      return;
    }
    case Q::kBackupShow:
      catalog_.read([&](const catalog::Tx& tx) {
        fill_set(tx, resolve_id(tx, catalog::Tx::IdKind::backup_set, q.backup_show().backup_set_id(), "backup set"),
                 *r.mutable_backup_set());
      });
      return;
    case Q::kBackupCancel:
      cancel(actor, q.backup_cancel().id(), r);
      return;
    case Q::kRestore: {
      cairn::v1::RestoreRequest req = q.restore();
      catalog_.read([&](const catalog::Tx& tx) {
        // Empty with a recovery target: the controller picks the base backup (Orders::create_restore).
        if (!req.backup_set_id().empty())
          req.set_backup_set_id(resolve_id(tx, catalog::Tx::IdKind::backup_set, req.backup_set_id(), "backup set"));
      });
      if (req.require_connected()) refuse_offline(offline_selected(req.selector()));
      auto o = orders_.create_restore(actor, req);
      spdlog::info("operator: '{}' created restore '{}' for {} agent(s)", actor, o.id, o.agent_ids.size());
      fleet_.deliver(o.agent_ids);
      catalog_.read([&](const catalog::Tx& tx) { fill_restore(tx, o.id, *r.mutable_restore()); });
      return;
    }
    case Q::kDrill: {
      cairn::v1::DrillRequest req = q.drill();
      if (!req.latest())
        catalog_.read([&](const catalog::Tx& tx) {
          req.set_backup_set_id(resolve_id(tx, catalog::Tx::IdKind::backup_set, req.backup_set_id(), "backup set"));
        });
      auto o = orders_.create_drill(actor, req);
      spdlog::info("operator: '{}' created drill '{}' on agent '{}'", actor, o.id, o.agent_ids.front());
      fleet_.deliver(o.agent_ids);
      catalog_.read([&](const catalog::Tx& tx) { fill_restore(tx, o.id, *r.mutable_restore()); });
      return;
    }
    case Q::kRestoreShow:
      catalog_.read([&](const catalog::Tx& tx) {
        fill_restore(tx, resolve_id(tx, catalog::Tx::IdKind::restore, q.restore_show().restore_id(), "restore"), *r.mutable_restore());
        // What it set aside that is still on the members' disks (docs/set-aside.md).
        for (const auto& [agent_id, list] : fleet_.set_aside())
          for (const auto& c : list)
            if (!c.restore_id().empty() && c.restore_id() == r.restore().restore_id()) {
              auto* e = r.mutable_restore()->add_set_aside();
              *e = c;
              auto agent = tx.agent(agent_id);
              e->set_agent(agent ? agent->name : agent_id);
            }
      });
      return;
    case Q::kRestoreList: {
      size_t limit = q.restore_list().limit() ? q.restore_list().limit() : 50;
      catalog_.read([&](const catalog::Tx& tx) {
        for (const auto& x : tx.restores(limit, q.restore_list().drills() ? "drill" : "restore")) {
          auto* w = r.mutable_restore_list()->add_restores();
          w->set_kind(x.kind);
          w->set_restore_id(x.id);
          w->set_backup_set_id(x.source_set_id);
          w->set_state(wire_state(x.state));
          w->set_safety_backup_set_id(x.safety_set_id.value_or(""));
          w->set_created_at(x.created_at);
          w->set_finished_at(x.finished_at.value_or(0));
          if (x.kind == "drill" && x.state != catalog::SetState::running) w->set_verdict(catalog::drill_verdict(tx.tasks_of_restore(x.id)));
        }
      });
      r.mutable_restore_list();
      return;
    }
    case Q::kAgentList:
      catalog_.read([&](const catalog::Tx& tx) {
        for (const auto& a : tx.agents()) fill_agent(tx, a, *r.mutable_agent_list()->add_agents());
      });
      r.mutable_agent_list();
      return;
    case Q::kAgentApprove:
      if (q.agent_approve().agent_ids_size() > 0) {
        std::vector<std::string> approved;
        catalog_.transaction(actor, [&](catalog::Tx& tx) {
          for (const auto& id : q.agent_approve().agent_ids()) {
            auto a = tx.agent(id);
            if (!a || a->id != id || a->state != catalog::AgentState::pending) continue;
            tx.set_agent_state(a->id, catalog::AgentState::approved);
            approved.push_back(a->id);
          }
        });
        spdlog::info("operator: '{}' approved {} pending agent(s) at once ({} asked for)", actor, approved.size(),
                     q.agent_approve().agent_ids_size());
        for (const auto& id : approved) fleet_.reconnect(id);
        catalog_.read([&](const catalog::Tx& tx) {
          auto* out = r.mutable_agent_list();
          for (const auto& id : approved) fill_agent(tx, *tx.agent(id), *out->add_agents());
        });
        return;
      }
      [[fallthrough]];
    case Q::kAgentRevoke: {
      bool approve = q.body_case() == Q::kAgentApprove;
      const std::string& who = approve ? q.agent_approve().agent() : q.agent_revoke().agent();
      auto agent = catalog_.transaction(actor, [&](catalog::Tx& tx) {
        auto a = tx.agent(who);  // an id or a name; else a unique id prefix
        if (!a) a = tx.agent(resolve_id(tx, catalog::Tx::IdKind::agent, who, "agent"));
        if (!a) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no agent '" + who + "'");
        if (a->state == catalog::AgentState::revoked && approve)
          throw OpError(cairn::v1::ERROR_CODE_CONFLICT,
                        "agent '" + a->name + "' is revoked; revocation is final, enrol it again with a new key");
        tx.set_agent_state(a->id, approve ? catalog::AgentState::approved : catalog::AgentState::revoked);
        return *tx.agent(a->id);
      });
      spdlog::info("operator: '{}' {} agent '{}' ({})", actor, approve ? "approved" : "revoked", agent.name, agent.id);
      if (approve)
        fleet_.reconnect(agent.id);
      else
        fleet_.revoke(agent.id);
      catalog_.read([&](const catalog::Tx& tx) { fill_agent(tx, *tx.agent(agent.id), *r.mutable_agent()); });
      return;
    }
    case Q::kStatus:
      catalog_.read([&](const catalog::Tx& tx) {
        auto* s = r.mutable_status();
        s->set_controller_version(CAIRN_VERSION);
        if (config_) s->set_cluster(config_->cluster_name());
        for (const auto& a : tx.agents()) {
          if (a.state == catalog::AgentState::approved) s->set_agents_approved(s->agents_approved() + 1);
          if (a.state == catalog::AgentState::pending) s->set_agents_pending(s->agents_pending() + 1);
        }
        s->set_agents_connected(uint32_t(fleet_.connected_count()));
        s->set_sets_running(uint32_t(tx.running_backup_sets()));
        s->set_active_key_id(signing_key_.key_id());
        s->set_audit_outbox_pending(uint64_t(tx.audit_outbox_pending()));
        for (const auto& h : tx.component_health()) {
          auto* w = s->add_components();
          w->set_component(h.component);
          w->set_where(h.where);
          w->set_newest_backup_at(h.newest_backup_at.value_or(0));
          w->set_proven_at(h.proven_at.value_or(0));
          w->set_rto_seconds(h.rto_seconds);
          w->set_last_drill_failure(h.last_drill_failure);
          w->set_last_drill_not_run(h.last_drill_not_run);
          w->set_newest_backup_failure(h.newest_backup_failure);
          w->set_newest_backup_failed_at(h.newest_backup_failed_at);
        }
        // Continuous WAL archives, from the agents' heartbeats: onto the
        // component's row (a row of its own before its first backup).
        for (const auto& [key, wal] : fleet_.wal_archives()) {
          auto agent = tx.agent(key.first);
          if (!agent) continue;
          cairn::v1::ComponentStatus* row = nullptr;
          for (auto& c : *s->mutable_components())
            if (c.component() == key.second && c.where() == agent->name) row = &c;
          if (!row) {
            row = s->add_components();
            row->set_component(key.second);
            row->set_where(agent->name);
          }
          row->set_wal_archived_at(wal.last_archived_at());
          row->set_wal_pending(wal.pending());
          row->set_wal_last_error(wal.last_error_at() > wal.last_archived_at() ? wal.last_error() : "");
          for (auto& line : wal_gap_lines(wal)) row->add_wal_gaps(std::move(line));
        }
        // What restores set aside on the agents' disks, onto the component's row.
        for (const auto& [agent_id, list] : fleet_.set_aside()) {
          auto agent = tx.agent(agent_id);
          if (!agent) continue;
          for (const auto& c : list) {
            cairn::v1::ComponentStatus* row = nullptr;
            for (auto& r : *s->mutable_components())
              if (r.component() == c.component() && r.where() == agent->name) row = &r;
            if (!row) {
              row = s->add_components();
              row->set_component(c.component());
              row->set_where(agent->name);
            }
            row->set_set_aside_copies(row->set_aside_copies() + 1);
            row->set_set_aside_bytes(row->set_aside_bytes() + c.bytes());
            if (c.keep() == "only-copy" || c.keep() == "unrecorded") row->set_set_aside_only_copies(row->set_aside_only_copies() + 1);
          }
        }
        if (verifier_)
          for (const auto& v : verifier_->states()) {
            auto* w = s->add_repositories();
            w->set_name(v.repository);
            w->set_remote(v.remote);
            w->set_verified_at(v.verified_at);
            w->set_tried_at(v.tried_at);
            w->set_error(v.error);
            w->set_snapshots_expected(uint32_t(v.expected));
            w->set_snapshots_listed(uint32_t(v.listed));
            for (const auto& m : v.missing) {
              auto* x = w->add_missing();
              x->set_snapshot_id(m.snapshot_id);
              x->set_backup_set_id(m.set_id);
              x->set_task_id(m.task_id);
              x->set_agent(m.agent);
              x->set_component(m.component);
              x->set_made_at(m.made_at);
              x->set_copy(m.copy);
            }
            if (v.protection_known) {
              w->set_protection(repo::protection_name(v.protection.state));
              w->set_protection_detail(v.protection.detail);
            }
            w->set_interval_seconds(verifier_->interval_seconds());
          }
        if (publisher_) {
          auto ps = publisher_->status();
          auto* a = s->mutable_audit_publisher();
          a->set_enabled(ps.enabled);
          a->set_connected(ps.connected);
          a->set_published_seq(ps.published_seq);
          a->set_checkpoints(ps.checkpoints);
          a->set_last_error(ps.last_error);
          a->set_topic_problem(ps.topic_problem);
          a->set_last_checkpoint_unix(ps.last_checkpoint_unix);
        }
      });
      return;
    case Q::kKeyRotate: {
      int64_t validity = q.key_rotate().announcement_validity_seconds();
      auto rot = rotate_signing_key(catalog_, key_dir_, signing_key_, validity ? validity : 365 * 86400, actor);
      auto* w = r.mutable_key_rotation();
      w->set_old_key_id(rot.old_key_id);
      w->set_new_key_id(rot.new_key_id);
      w->set_new_public_key(rot.new_public_key);
      w->set_announcement_id(rot.announcement_id);
      w->set_announcement_expires_at(rot.expires_at);
      w->set_plans_resigned(uint32_t(rot.plans_resigned));
      w->set_incomplete(rot.incomplete);
      // The rotation is done; a failure to notify now must not read as a
      // failed rotation (agents are brought over when they register).
      try {
        w->set_agents_notified(uint32_t(fleet_.rotated(rot.new_key_id)));
      } catch (const std::exception& e) {
        spdlog::error("operator: rotated to '{}' but could not notify connected agents now: {}", rot.new_key_id, e.what());
      }
      catalog_.read([&](const catalog::Tx& tx) {
        for (const auto& a : tx.agents())
          if (a.state == catalog::AgentState::approved) w->set_agents_approved(w->agents_approved() + 1);
      });
      spdlog::info("operator: '{}' rotated the signing key to '{}'; {} connected agent(s) notified", actor, rot.new_key_id,
                   w->agents_notified());
      return;
    }
    case Q::kPolicy:
      policy(actor, q.policy(), r);
      return;
    case Q::kForget:
      forget(actor, q.forget(), r);
      return;
    case Q::kImportSet:
      import_set(actor, q.import_set(), r);
      return;
    case Q::kAttestExport:
      attest_export(actor, q.attest_export(), r);
      return;
    case Q::BODY_NOT_SET:
      break;
  }
  throw OpError(cairn::v1::ERROR_CODE_MALFORMED_MESSAGE, "request has no body");
}

}  // namespace cairn::controller
