// The operator API's policy and forget requests (docs/operations.md).
#include <spdlog/spdlog.h>

#include "common/util/error.h"
#include "controller/catalog_rebuild.h"
#include "controller/operator_api.h"
#include "controller/schedule.h"

namespace cairn::controller {
namespace {

catalog::PolicyRetention from_wire(const cairn::v1::Retention& w) {
  catalog::PolicyRetention r;
  r.last = int(w.last());
  r.hourly = int(w.hourly());
  r.daily = int(w.daily());
  r.weekly = int(w.weekly());
  r.monthly = int(w.monthly());
  r.yearly = int(w.yearly());
  r.within = w.within_seconds();
  r.min = int(w.min());
  return r;
}

void to_wire(const catalog::PolicyRetention& r, cairn::v1::Retention& w) {
  w.set_last(uint32_t(r.last));
  w.set_hourly(uint32_t(r.hourly));
  w.set_daily(uint32_t(r.daily));
  w.set_weekly(uint32_t(r.weekly));
  w.set_monthly(uint32_t(r.monthly));
  w.set_yearly(uint32_t(r.yearly));
  w.set_within_seconds(r.within);
  w.set_min(uint32_t(r.min));
}

catalog::Policy from_spec(const cairn::v1::PolicySpec& spec, const std::string& default_tz) {
  catalog::Policy p;
  p.name = spec.name();
  p.selector = selector_json(spec.selector());
  p.repository = spec.repository();
  p.mode = spec.mode();
  p.schedule = spec.schedule();
  p.time_zone = spec.time_zone().empty() ? default_tz : spec.time_zone();
  p.retention = from_wire(spec.retention());
  p.drill_schedule = spec.drill();
  p.drill_on = spec.drill_on();
  p.keep_proven = !spec.retention_ignores_drills();
  p.copy_to = spec.copy_to();
  try {
    check_policy(p);
  } catch (const Error& e) {
    throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT, e.what());
  }
  return p;
}

void fill_run(const catalog::Tx& tx, const catalog::PolicyRun& run, cairn::v1::PolicyRunInfo& w) {
  w.set_scheduled_for(run.scheduled_for);
  w.set_at(run.at);
  w.set_trigger(run.trigger);
  w.set_outcome(run.outcome);
  w.set_reason(run.reason);
  if (run.backup_set_id) {
    w.set_backup_set_id(*run.backup_set_id);
    if (auto s = tx.backup_set(*run.backup_set_id)) w.set_set_state(wire_state(s->state));
  }
}

void fill_policy(const catalog::Tx& tx, const catalog::Policy& p, size_t runs, cairn::v1::PolicyInfo& w) {
  auto* spec = w.mutable_spec();
  spec->set_name(p.name);
  *spec->mutable_selector() = selector_from_json(p.selector);
  spec->set_repository(p.repository);
  spec->set_mode(p.mode);
  spec->set_schedule(p.schedule);
  spec->set_time_zone(p.time_zone);
  to_wire(p.retention, *spec->mutable_retention());
  spec->set_drill(p.drill_schedule);
  spec->set_drill_on(p.drill_on);
  spec->set_retention_ignores_drills(!p.keep_proven);
  spec->set_copy_to(p.copy_to);
  w.set_source(p.source);
  w.set_next_drill(p.drill_next_at.value_or(0));
  w.set_paused(p.paused);
  w.set_created_at(p.created_at);
  w.set_updated_at(p.updated_at);
  if (p.next_run_at) {
    w.add_next_runs(*p.next_run_at);
    for (auto t = Scheduler::next_run(p, *p.next_run_at); t && w.next_runs_size() < 3; t = Scheduler::next_run(p, *t)) w.add_next_runs(*t);
  }
  for (const auto& run : tx.policy_runs(p.name, runs)) fill_run(tx, run, *w.add_runs());
  for (const auto& s : tx.policy_sets(p.name)) {
    if (s.forgotten_at) continue;
    w.set_sets(w.sets() + 1);
    if (s.expired_at) w.set_sets_expired(w.sets_expired() + 1);
  }
}

}  // namespace

void OperatorApi::policy(const std::string& actor, const cairn::v1::PolicyRequest& q, cairn::v1::OperatorResponse& r) {
  using P = cairn::v1::PolicyRequest;
  if (!scheduler_) throw OpError(cairn::v1::ERROR_CODE_UNAVAILABLE, "this controller runs no scheduler");
  const std::string& default_tz = scheduler_tz_;
  auto answer = [&](const std::string& name, size_t runs) {
    catalog_.read([&](const catalog::Tx& tx) {
      auto p = tx.policy(name);
      if (p) fill_policy(tx, *p, runs, *r.mutable_policies()->add_policies());
    });
  };
  auto existing = [&](const std::string& name) {
    auto p = catalog_.read([&](const catalog::Tx& tx) { return tx.policy(name); });
    if (!p) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no policy '" + name + "' (see 'cairnctl policy list')");
    return *p;
  };
  auto not_config = [&](const catalog::Policy& p, const char* what) {
    if (p.source == "config")
      throw OpError(cairn::v1::ERROR_CODE_CONFLICT, "policy '" + p.name + "' is declared in the controller's configuration; " + what +
                                                        " it there and restart the controller");
  };
  const int64_t now = catalog_.read([](const catalog::Tx& tx) { return tx.now(); });
  switch (q.op_case()) {
    case P::kList:
      catalog_.read([&](const catalog::Tx& tx) {
        for (const auto& p : tx.policies()) fill_policy(tx, p, 1, *r.mutable_policies()->add_policies());
      });
      r.mutable_policies();
      return;
    case P::kShow:
      existing(q.show());
      answer(q.show(), 20);
      return;
    case P::kAdd:
    case P::kEdit: {
      bool add = q.op_case() == P::kAdd;
      auto p = from_spec(add ? q.add() : q.edit(), default_tz);
      if (!p.copy_to.empty() && config_ && !config_->repository(p.copy_to))
        throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT,
                      "--copy-to '" + p.copy_to +
                          "' is not a repository the controller declares: add a [[repository]] table of that name to "
                          "its configuration (docs/configuration.md), then restart it");
      catalog_.transaction(actor, [&](catalog::Tx& tx) {
        auto old = tx.policy(p.name);
        if (add && old) throw OpError(cairn::v1::ERROR_CODE_CONFLICT, "a policy named '" + p.name + "' exists; use 'policy edit'");
        if (!add && !old) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no policy '" + p.name + "'");
        if (old) not_config(*old, "edit");
        p.paused = old && old->paused;
        p.next_run_at = Scheduler::next_run(p, now);
        p.drill_next_at = Scheduler::next_drill(p, now);
        tx.put_policy(p, add);
      });
      spdlog::info("operator: '{}' {} policy '{}' ({})", actor, add ? "added" : "changed", p.name, p.schedule);
      answer(p.name, 1);
      return;
    }
    case P::kRemove: {
      auto p = existing(q.remove());
      not_config(p, "remove");
      answer(p.name, 0);
      catalog_.transaction(actor, [&](catalog::Tx& tx) { tx.remove_policy(p.name); });
      spdlog::info("operator: '{}' removed policy '{}'", actor, p.name);
      return;
    }
    case P::kPause:
    case P::kResume: {
      bool pause = q.op_case() == P::kPause;
      auto p = existing(pause ? q.pause() : q.resume());
      catalog_.transaction(actor, [&](catalog::Tx& tx) {
        tx.set_policy_paused(p.name, pause);
        p.paused = pause;
        // Resumed: the next run after now; what fell due while paused is not run.
        tx.set_policy_next_run(p.name, Scheduler::next_run(p, now));
        tx.set_policy_next_drill(p.name, Scheduler::next_drill(p, now));
      });
      spdlog::info("operator: '{}' {} policy '{}'", actor, pause ? "paused" : "resumed", p.name);
      answer(p.name, 1);
      return;
    }
    case P::kRunNow: {
      std::vector<std::string> agents;
      scheduler_->run_now(actor, existing(q.run_now()).name, now, agents);
      fleet_.deliver(agents);
      answer(q.run_now(), 1);
      return;
    }
    case P::OP_NOT_SET:
      break;
  }
  throw OpError(cairn::v1::ERROR_CODE_MALFORMED_MESSAGE, "policy request names no operation");
}

void OperatorApi::forget(const std::string& actor, const cairn::v1::ForgetRequest& q, cairn::v1::OperatorResponse& r) {
  if (!scheduler_) throw OpError(cairn::v1::ERROR_CODE_UNAVAILABLE, "this controller runs no scheduler");
  std::vector<catalog::Policy> policies = catalog_.read([](const catalog::Tx& tx) { return tx.policies(); });
  if (!q.policy().empty()) {
    std::erase_if(policies, [&](const catalog::Policy& p) { return p.name != q.policy(); });
    if (policies.empty()) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no policy '" + q.policy() + "'");
  }
  auto* out = r.mutable_forget();
  out->set_dry_run(q.dry_run());
  for (const auto& p : policies) {
    auto* w = out->add_policies();
    w->set_policy(p.name);
    w->set_rules(describe(p.retention));
    for (const auto& d : scheduler_->retention(actor, p.name, q.dry_run())) {
      auto* s = w->add_sets();
      s->set_backup_set_id(d.set.id);
      s->set_created_at(d.set.created_at);
      s->set_state(wire_state(d.set.state));
      s->set_group(d.group);
      s->set_keep(d.keep);
      s->set_expired(d.set.expired_at.has_value());
      for (const auto& why : d.reasons) s->add_reasons(why);
    }
  }
  if (!q.dry_run()) spdlog::info("operator: '{}' applied retention to {} polic(ies)", actor, policies.size());
}

void OperatorApi::import_set(const std::string& actor, const cairn::v1::ImportRequest& q, cairn::v1::OperatorResponse& r) {
  const ControllerConfig::Repository* cfg = config_ ? config_->repository(q.repository()) : nullptr;
  if (!cfg)
    throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND,
                  "this controller declares no repository '" + q.repository() +
                      "' ([[repository]] in its configuration, with the path and password file it opens it with)");
  ImportAttestation att;
  att.record_text = q.set_record();
  att.export_ids.assign(q.export_snapshot_ids().begin(), q.export_snapshot_ids().end());
  att.accept_unattested = q.accept_unattested();
  for (const auto& k : q.trusted_keys()) {
    plan::PublicKey pub{};
    std::copy(k.begin(), k.end(), pub.begin());  // 32 bytes: checked by wire.cc
    att.trusted.push_back(pub);
  }
  if (q.check_only()) {
    // Asked before cairnctl copies anything: does the record attest these
    // export snapshots? Nothing is recorded either way.
    std::vector<ExportedSnapshot> exported;
    for (int i = 0; i < q.export_snapshot_ids_size(); ++i) exported.push_back({q.export_snapshot_ids(i), q.export_task_ids(i)});
    std::string why, key_id;
    bool ok = false;
    catalog_.read([&](const catalog::Tx& tx) {
      std::map<std::string, plan::PublicKey> keys;
      if (verify_export_record(att.record_text, q.backup_set_id(), exported, controller_keys(tx, att.trusted, keys), why)) {
        ok = true;
        key_id = nlohmann::json::parse(att.record_text).value("key_id", "");
      }
    });
    if (!ok && !att.accept_unattested) throw OpError(cairn::v1::ERROR_CODE_CONFLICT, unattested_refusal(why));
    r.set_detail(ok ? "attested: the set record verifies under controller key '" + key_id + "'" : "unattested: " + why);
    return;
  }
  std::vector<std::string> ids(q.snapshot_ids().begin(), q.snapshot_ids().end());
  ImportResult res;
  try {
    res = controller::import_set(catalog_, {cfg->name, cfg->path, cfg->password_file}, ids, actor, q.origin(), att);
  } catch (const Error& e) {
    if (e.code() == Errc::exists || e.code() == Errc::denied) throw OpError(cairn::v1::ERROR_CODE_CONFLICT, e.what());
    if (e.code() == Errc::invalid_input) throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT, e.what());
    throw;
  }
  // An attested set is signed again by this controller and its record written
  // to the repository it went into (as every attested set without a record
  // by the active key is at start): a catalog rebuild from there attests it.
  if (!res.key_id.empty()) catalog_.transaction(actor, [&](catalog::Tx& tx) { tx.set_records_due_unwritten(signing_key_.key_id()); });
  catalog_.read([&](const catalog::Tx& tx) { fill_set(tx, res.set.id, *r.mutable_backup_set()); });
  std::string notes;
  for (const auto& n : res.notes) notes += (notes.empty() ? "" : "; ") + n;
  r.set_detail(notes);
  spdlog::info("operator: '{}' imported backup set '{}' ({} snapshot(s), {}, {}) from '{}' into repository '{}'", actor, res.set.id,
               res.set.tasks.size(), std::string(catalog::to_string(res.set.state)),
               res.key_id.empty() ? std::string("UNATTESTED") : "attested by controller key '" + res.key_id + "'", q.origin(), cfg->name);
}

void OperatorApi::attest_export(const std::string& actor, const cairn::v1::ExportAttestRequest& q, cairn::v1::OperatorResponse& r) {
  std::string file;
  catalog_.transaction(actor, [&](catalog::Tx& tx) {
    auto set = tx.backup_set(q.backup_set_id());
    if (!set) throw OpError(cairn::v1::ERROR_CODE_NOT_FOUND, "no backup set '" + q.backup_set_id() + "'");
    if (set->state == catalog::SetState::running)
      throw OpError(cairn::v1::ERROR_CODE_CONFLICT, "backup set " + set->id + " is still running");
    // A set the catalog itself took from snapshot tags (a rebuild without a
    // record, an import with --accept-unattested) is never signed: an export
    // would launder it into an attested one.
    if (!set->attested)
      throw OpError(cairn::v1::ERROR_CODE_CONFLICT, "backup set " + set->id +
                                                        " is unattested (no set record signed by this controller covers it); "
                                                        "an export of it carries no signed record");
    auto rec = record_from_catalog(tx, *set, ::time(nullptr));
    for (const auto& e : q.snapshots()) {
      SetRecord::Task* task = nullptr;
      for (auto& rt : rec.tasks)
        if (rt.id == e.task_id()) task = &rt;
      if (!task) throw OpError(cairn::v1::ERROR_CODE_INVALID_ARGUMENT, "backup set " + set->id + " has no task " + e.task_id());
      if (task->snapshot_id != e.source_snapshot_id())
        throw OpError(cairn::v1::ERROR_CODE_CONFLICT, "task " + e.task_id() + "'s snapshot is " + task->snapshot_id.substr(0, 16) +
                                                          " in the catalog, not " + e.source_snapshot_id().substr(0, 16) +
                                                          " as the export read: the export is not signed");
      task->copies.emplace_back(std::string(kExportCopyPrefix) + q.export_name(), e.export_snapshot_id());
    }
    file = sign_set_record(rec, signing_key_).dump();
    tx.audit({"set.export",
              "backup_set:" + set->id,
              "ok",
              "",
              {{"export", q.export_name()}, {"snapshots", q.snapshots_size()}, {"key_id", signing_key_.key_id()}}});
  });
  r.set_set_record(file);
  spdlog::info("operator: '{}' exported backup set '{}' as '{}': its record signed with key '{}'", actor, q.backup_set_id(),
               q.export_name(), signing_key_.key_id());
}

}  // namespace cairn::controller
