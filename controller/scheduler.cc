// Policies at work (scheduler.h).
#include "controller/scheduler.h"

#include <spdlog/spdlog.h>

#include <cstdlib>

#include "common/util/error.h"
#include "controller/schedule.h"

namespace cairn::controller {
namespace {

bool same_definition(const catalog::Policy& a, const catalog::Policy& b) {
  return a.selector == b.selector && a.repository == b.repository && a.mode == b.mode && a.schedule == b.schedule &&
         a.time_zone == b.time_zone && a.retention == b.retention && a.source == b.source && a.drill_schedule == b.drill_schedule &&
         a.drill_on == b.drill_on && a.keep_proven == b.keep_proven;
}

std::string utc(int64_t t) { return format_local(t, cctz::utc_time_zone()); }

}  // namespace

std::optional<int64_t> Scheduler::next_run(const catalog::Policy& p, int64_t after) {
  if (p.paused) return std::nullopt;
  try {
    return Schedule::parse(p.schedule).next_after(after, load_time_zone(p.time_zone));
  } catch (const Error& e) {  // stored policies were checked; a tzdata that lost a zone lands here
    spdlog::error("policy '{}': {}; it does not run until it is fixed", p.name, e.what());
    return std::nullopt;
  }
}

std::optional<int64_t> Scheduler::next_drill(const catalog::Policy& p, int64_t after) {
  if (p.paused || p.drill_schedule.empty()) return std::nullopt;
  try {
    return Schedule::parse(p.drill_schedule).next_after(after, load_time_zone(p.time_zone));
  } catch (const Error& e) {
    spdlog::error("policy '{}': drill schedule: {}; it drills nothing until it is fixed", p.name, e.what());
    return std::nullopt;
  }
}

void Scheduler::run_drill(const catalog::Policy& p, std::vector<std::string>& agents) {
  cairn::v1::DrillRequest req;
  req.set_latest(true);
  req.set_policy(p.name);
  req.set_on_agent(p.drill_on);
  auto sel = selector_from_json(p.selector);
  for (const auto& c : sel.components()) req.mutable_selector()->add_components(c);
  for (const auto& n : sel.nodes()) req.mutable_selector()->add_nodes(n);
  try {
    auto o = orders_.create_drill("policy:" + p.name, req);
    agents.insert(agents.end(), o.agent_ids.begin(), o.agent_ids.end());
    spdlog::info("policy '{}': drill {} started", p.name, o.id);
  } catch (const std::exception& e) {
    // Loud: an audit event and the log; the component's proven age grows
    // on the status page and in /metrics.
    spdlog::warn("policy '{}': its drill could not start: {}", p.name, e.what());
    catalog_.transaction("policy:" + p.name, [&](catalog::Tx& tx) {
      tx.audit({"drill.refused", "policy:" + p.name, "refused", e.what(), {}});
    });
  }
}

void Scheduler::start(int64_t now) {
  started_at_ = now;
  catalog_.transaction("controller", [&](catalog::Tx& tx) {
    std::set<std::string> declared;
    for (auto p : config_.policies) {
      declared.insert(p.name);
      auto old = tx.policy(p.name);
      if (old && old->source == "catalog")
        spdlog::warn("policy '{}' is declared in {}: it replaces the catalog's policy of that name (the configuration wins)", p.name,
                     config_.source);
      if (old && same_definition(*old, p)) continue;  // keeps its pause and next run
      p.paused = old ? old->paused : false;
      p.next_run_at = next_run(p, now);
      p.drill_next_at = next_drill(p, now);
      tx.put_policy(p, !old);
    }
    for (const auto& p : tx.policies()) {
      if (p.source == "config" && !declared.count(p.name)) {
        spdlog::info("policy '{}' is no longer declared in {}: removed", p.name, config_.source);
        tx.remove_policy(p.name);
        continue;
      }
      if (!p.paused && !p.next_run_at) tx.set_policy_next_run(p.name, next_run(p, now));
      if (!p.paused && !p.drill_schedule.empty() && !p.drill_next_at) tx.set_policy_next_drill(p.name, next_drill(p, now));
      for (const auto& s : tx.policy_sets(p.name))
        if (s.state == catalog::SetState::running) watched_[s.id] = p.name;
    }
  });
  for (const auto& p : catalog_.read([](const catalog::Tx& tx) { return tx.policies(); }))
    spdlog::info("policy '{}': {} ({}){}", p.name, p.schedule, p.time_zone,
                 p.paused        ? ", paused"
                 : p.next_run_at ? ", next run " + utc(*p.next_run_at)
                                 : ", no next run");
}

catalog::PolicyRun Scheduler::run(const std::string& actor, const catalog::Policy& p, const std::string& trigger, int64_t scheduled_for,
                                  const std::string& note, std::vector<std::string>& agents) {
  catalog::PolicyRun r;
  r.policy = p.name;
  r.trigger = trigger;
  r.scheduled_for = scheduled_for;
  auto sets = catalog_.read([&](const catalog::Tx& tx) { return tx.policy_sets(p.name); });
  for (const auto& s : sets)
    if (s.state == catalog::SetState::running) {
      r.outcome = "skipped";
      r.reason = "the previous run (backup set " + s.id + ", started " + utc(s.created_at) +
                 ") is still running; runs of one policy never overlap";
      if (!note.empty()) r.reason += " (" + note + ")";
      break;
    }
  if (r.outcome.empty()) {
    try {
      BackupExtras extras;
      extras.trigger = "schedule";
      extras.policy = p.name;
      extras.repository = p.repository;
      auto ordered = orders_.create_backup(actor, selector_from_json(p.selector), p.mode, extras);
      r.outcome = "started";
      r.backup_set_id = ordered.id;
      r.reason = note;
      watched_[ordered.id] = p.name;
      agents.insert(agents.end(), ordered.agent_ids.begin(), ordered.agent_ids.end());
    } catch (const OpError& e) {
      r.outcome = "refused";
      r.reason = e.what();
    } catch (const Error& e) {
      r.outcome = "refused";
      r.reason = e.what();
    }
  }
  catalog_.transaction(actor, [&](catalog::Tx& tx) { tx.record_policy_run(r); });
  if (r.outcome == "started")
    spdlog::info("policy '{}': run {} started ({}){}", p.name, *r.backup_set_id, trigger, note.empty() ? "" : ": " + note);
  else
    spdlog::warn("policy '{}': run {} ({}): {}", p.name, r.outcome, trigger, r.reason);
  return r;
}

catalog::PolicyRun Scheduler::run_now(const std::string& actor, const std::string& name, int64_t now, std::vector<std::string>& agents) {
  auto p = catalog_.read([&](const catalog::Tx& tx) { return tx.policy(name); });
  if (!p) throw Error(Errc::not_found, "no policy '" + name + "' (see 'cairnctl policy list')");
  return run(actor, *p, "run-now", now, "", agents);
}

std::vector<SetDecision> Scheduler::retention(const std::string& actor, const std::string& name, bool dry_run) {
  // What to keep and the expiry, read and written in one transaction: a
  // drill that proves a set between the two cannot lose it (docs/drills.md).
  std::vector<SetDecision> decisions;
  std::optional<catalog::Policy> p;
  auto decide = [&](const catalog::Tx& tx) {
    p = tx.policy(name);
    if (!p) throw Error(Errc::not_found, "no policy '" + name + "' (see 'cairnctl policy list')");
    decisions = decide_retention(tx.policy_sets(name), p->retention, load_time_zone(p->time_zone));
    auto keep = [&](SetDecision& d, const std::string& why) {
      d.keep = true;
      d.reasons.push_back(why);
    };
    if (p->keep_proven) {
      // The newest set a drill proved restorable, per component, stays while
      // no newer set of that component is proven; a set a drill is reading
      // counts as proven until the drill ends (docs/drills.md).
      const auto proven = tx.newest_proven_sets(name);
      const auto drilled = tx.sets_being_drilled(name);
      for (auto& d : decisions) {
        for (const auto& [component, set_id] : proven)
          if (d.set.id == set_id) keep(d, "the newest set proven restorable for '" + component + "' (keep_proven)");
        if (std::find(drilled.begin(), drilled.end(), d.set.id) != drilled.end()) keep(d, "a drill of it is running (keep_proven)");
      }
    }
    if (!p->copy_to.empty()) {
      // The newest set copied offsite stays, copy included, while newer sets'
      // copies are pending or failing: the other site always holds one.
      for (auto& d : decisions) {
        bool copied = false;
        for (const auto& c : tx.set_copies(d.set.id))
          if (c.repository == p->copy_to && c.state == "copied" && !c.removed_at) copied = true;
        if (!copied) continue;
        if (!d.keep) keep(d, "the newest set copied to '" + p->copy_to + "' (newer sets' copies have not landed)");
        break;
      }
    }
  };
  if (dry_run) {
    catalog_.read(decide);
    return decisions;
  }
  size_t expired = 0;
  catalog_.transaction(actor, [&](catalog::Tx& tx) {
    decide(tx);
    for (const auto& d : decisions)
      if (!d.keep && !d.set.expired_at) {
        tx.expire_set(d.set.id, "policy '" + name + "' (" + describe(p->retention) + ") keeps it no longer");
        ++expired;
      }
  });
  if (expired) {
    spdlog::info("policy '{}': retention ({}) expired {} backup set(s)", name, describe(p->retention), expired);
    forget_pass_due_ = true;
  }
  return decisions;
}

void Scheduler::take_maintenance_results(int64_t now) {
  for (auto& r : maintenance_.take_results()) {
    forget_pass_due_ = true;  // the next job of this repository, or a retry
    const auto& repo = r.job.repository;
    if (!r.ok) {
      // A lock held by a backup or a restore the catalog knows of is released
      // before that task reports its end, and submit_forgets waits for every
      // such task of the repository to end: the retry follows the last one at
      // once. A lock no open task holds is asked again 5 s later (a short
      // backup that ended before this result was read, most often), then
      // every minute while it stays (an operator's check, a forget by hand);
      // any other failure in ten.
      std::string when;
      int64_t delay = 600;
      Waiting& w = waiting(repo, now);
      if (r.locked) {
        // A prune that gave way did so for the fleet's own work.
        bool ours = r.yielded || catalog_.read([&](const catalog::Tx& tx) { return tx.repository_in_use(repo); });
        w.locked_streak = ours ? 0 : w.locked_streak + 1;
        delay = ours ? 0 : w.locked_streak == 1 ? 5 : 60;
        when = ours ? "trying again once the backups and restores using it end" : "trying again in " + std::to_string(delay) + " s";
      } else {
        w.locked_streak = 0;
        when = "trying again in 600 s";
      }
      if (delay)
        retry_after_[repo] = now + delay;
      else
        retry_after_.erase(repo);  // held back until those tasks end (submit_forgets)
      spdlog::log(r.locked ? spdlog::level::info : spdlog::level::err,
                  "retention: repository '{}' could not be cleared of {} set(s): {}; {}", repo, r.job.set_ids.size(), r.error, when);
      catalog_.transaction("controller", [&](catalog::Tx& tx) {
        tx.audit({"repository.prune", "repository:" + repo, r.locked ? "deferred" : "failed", r.error, {{"backup_sets", r.job.set_ids}}});
      });
      continue;
    }
    retry_after_.erase(repo);
    waiting_.erase(repo);
    catalog_.transaction("controller", [&](catalog::Tx& tx) {
      tx.audit({"repository.prune",
                "repository:" + repo,
                "ok",
                "",
                {{"backup_sets", r.job.set_ids},
                 {"snapshots_removed", r.snapshots_removed},
                 {"bytes_before", r.size_before},
                 {"bytes_after", r.size_after}}});
      for (const auto& id : r.job.copy_set_ids) tx.mark_copy_removed(id, repo);
      for (const auto& id : r.job.set_ids) {
        tx.mark_snapshots_removed(id, repo);
        // Forgotten once every repository it wrote to, and every one it was
        // copied to, is cleared of it.
        bool all = id != copying_;
        for (const auto& c : tx.set_copies(id))
          if (!c.removed_at) all = false;
        std::set<std::string> repositories;
        for (const auto& t : tx.tasks_of_set(id)) {
          if (!t.snapshot_id) continue;
          repositories.insert(t.repository);
          if (!t.snapshot_removed_at) all = false;
        }
        if (all) tx.mark_set_forgotten(id, {{"repositories", repositories}});
      }
    });
    spdlog::info("retention: repository '{}': {} snapshot(s) of {} set(s) removed; pack data {} -> {} bytes", repo, r.snapshots_removed,
                 r.job.set_ids.size(), r.size_before, r.size_after);
  }
}

Scheduler::Waiting& Scheduler::waiting(const std::string& repo, int64_t now) {
  return waiting_.try_emplace(repo, Waiting{now}).first->second;
}

void Scheduler::write_set_records(int64_t now) {
  if (!records_ || !key_) return;
  bool failed = false;
  for (auto& res : records_->take_results()) {
    catalog_.transaction("controller", [&](catalog::Tx& tx) {
      for (const auto& repo : res.written) tx.set_record_written(res.job.set_id, repo, res.job.key_id);
      if (res.errors.empty()) tx.set_record_not_due(res.job.set_id);
    });
    for (const auto& [repo, why] : res.errors) {
      failed = true;
      // Once an hour a repository: a repository away fails every set's record.
      if (now - record_warned_[repo] >= 3600) {
        record_warned_[repo] = now;
        spdlog::warn(
            "set records: cannot write the signed record of backup set '{}' to repository '{}' (tried again "
            "every minute; a catalog rebuild takes the sets without one as unattested): {}",
            res.job.set_id, repo, why);
      }
    }
  }
  if (failed) records_retry_at_ = now + 60;
  if (records_->in_flight() || now < records_retry_at_) return;
  std::vector<SetRecordWriter::Job> jobs;
  catalog_.transaction("controller", [&](catalog::Tx& tx) {
    for (const auto& id : tx.set_records_due(64)) {
      auto set = tx.backup_set(id);
      if (!set || !set->attested || set->trigger == "safety" || set->forgotten_at || set->state == catalog::SetState::running) {
        tx.set_record_not_due(id);
        continue;
      }
      SetRecordWriter::Job job;
      job.set_id = id;
      job.key_id = key_->key_id();
      auto have = tx.set_record_repositories(id, job.key_id);
      for (const auto& repo : tx.set_snapshot_repositories(id)) {
        if (repo.empty()) continue;  // a task of an older catalog that did not record its repository
        if (!config_.repository(repo)) {
          if (record_warned_.emplace("undeclared:" + repo, now).second)
            spdlog::warn(
                "set records: repository '{}' is not declared in the controller's configuration "
                "([[repository]]), so the controller cannot write the signed records of the sets stored "
                "there; a catalog rebuild takes those sets as unattested (docs/operations.md § Catalog rebuild)",
                repo);
          continue;
        }
        if (std::find(have.begin(), have.end(), repo) == have.end()) job.repositories.push_back(repo);
      }
      if (job.repositories.empty()) {
        // Written everywhere already, or its repositories are not the
        // controller's to write (not declared: docs/operations.md § Set records).
        tx.set_record_not_due(id);
        continue;
      }
      job.file = sign_set_record(record_from_catalog(tx, *set, now), *key_);
      jobs.push_back(std::move(job));
    }
  });
  for (auto& j : jobs) records_->submit(std::move(j));
}

namespace {
// A failed copy is tried again after a minute, doubled per attempt up to an
// hour; CAIRN_COPY_RETRY_SECONDS_FOR_TESTS sets the first delay (tests).
int64_t copy_retry_seconds() {
  static const int64_t s = [] {
    const char* v = std::getenv("CAIRN_COPY_RETRY_SECONDS_FOR_TESTS");
    long long n = v ? std::atoll(v) : 0;
    return n > 0 ? int64_t(n) : int64_t(60);
  }();
  return s;
}
}  // namespace

void Scheduler::copy_sets(int64_t now, std::set<std::string>& retention_due) {
  if (!copier_) return;
  for (auto& res : copier_->take_results()) {
    copying_.clear();
    const auto& j = res.job;
    catalog_.transaction("controller", [&](catalog::Tx& tx) {
      if (res.ok)
        tx.set_copy_copied(j.set_id, j.destination, int64_t(res.snapshots.size()), int64_t(res.bytes), int64_t(res.blobs_new),
                           res.snapshots);
      else
        tx.set_copy_failed(j.set_id, j.destination, res.error, res.snapshots, copy_retry_seconds());
    });
    if (res.ok)
      spdlog::info("copy: backup set '{}' copied to repository '{}' ({} snapshot(s), {} bytes read, {} blob(s) new there)", j.set_id,
                   j.destination, res.snapshots.size(), res.bytes, res.blobs_new);
    else
      spdlog::warn(
          "copy: backup set '{}' could not be copied to repository '{}': {}; it is tried again later "
          "('cairnctl backup show {}' says when)",
          j.set_id, j.destination, res.error, j.set_id);
    if (res.ok) {
      copies_checked_at_ = 0;  // the next one at once
      // A set whose copy landed may let an older one go (retention keeps the
      // newest copied set while newer copies are missing): its policy's
      // retention runs in this tick's pass.
      auto set = catalog_.read([&](const catalog::Tx& tx) { return tx.backup_set(j.set_id); });
      if (set && set->policy) retention_due.insert(*set->policy);
    }
  }
  if (copier_->in_flight()) {
    // How far it got, for backup show and the status page (every 2 s).
    if (auto p = copier_->progress(); p && now - copy_progress_at_ >= 2) {
      copy_progress_at_ = now;
      catalog_.transaction("controller", [&](catalog::Tx& tx) {
        tx.set_copy_progress(p->set_id, p->destination, p->started_at, int64_t(p->snapshots_done), int64_t(p->snapshots_total),
                             int64_t(p->bytes_done), int64_t(p->bytes_total));
      });
    }
    return;
  }
  if (now - copies_checked_at_ < 5) return;
  copies_checked_at_ = now;
  std::optional<SetCopier::Job> job;
  catalog_.transaction("controller", [&](catalog::Tx& tx) {
    tx.clear_copy_progress();  // none runs now (one a restarted controller left says nothing)
    for (const auto& c : tx.set_copies_due(now, 8)) {
      SetCopier::Job j{c.set_id, c.repository, {}};
      for (const auto& t : tx.tasks_of_set(c.set_id)) {
        if (t.kind != catalog::TaskKind::backup || !t.snapshot_id || t.snapshot_removed_at) continue;
        if (t.state != catalog::TaskState::succeeded && t.state != catalog::TaskState::partial) continue;
        j.tasks.push_back({t.id, t.repository, *t.snapshot_id});
      }
      if (j.tasks.empty()) {
        tx.set_copy_copied(c.set_id, c.repository, 0, 0, 0, {});  // nothing stored, nothing to copy
        continue;
      }
      job = std::move(j);
      break;
    }
  });
  if (!job) return;
  copying_ = job->set_id;
  copier_->submit(std::move(*job));
}

void Scheduler::submit_forgets(int64_t now) {
  std::map<std::string, ForgetJob> jobs;
  auto expired = catalog_.read([](const catalog::Tx& tx) { return tx.expired_sets(); });
  if (expired.empty()) {
    waiting_.clear();
    return;
  }
  std::set<std::string> wanted;  // repositories with expired snapshots to remove
  catalog_.transaction("controller", [&](catalog::Tx& tx) {
    for (const auto& s : expired) {
      bool any = false;
      // The repository's job for this pass, or nullptr while it cannot be
      // cleared now (undeclared, busy, retried later, in use).
      auto job_of = [&](const std::string& repo) -> ForgetJob* {
        if (repo.empty() || !maintenance_.declared(repo)) {
          if (warned_.insert(repo).second)
            spdlog::warn("retention: backup sets expire but their snapshots stay in repository '{}': {}", repo,
                         repo.empty() ? "the agent did not say which repository its backups went to"
                                      : "the controller's configuration declares no [[repository]] of that name");
          return nullptr;
        }
        wanted.insert(repo);
        if (maintenance_.busy(repo) || retry_after_[repo] > now) return nullptr;
        if (tx.repository_in_use(repo)) {
          held_back_.insert(repo);
          waiting(repo, now).locked_streak = 0;  // a lock met after these tasks is a new row
          return nullptr;
        }
        auto& job = jobs[repo];
        job.repository = repo;
        if (job.set_ids.empty() || job.set_ids.back() != s.id) job.set_ids.push_back(s.id);
        return &job;
      };
      for (const auto& t : tx.tasks_of_set(s.id)) {
        if (!t.snapshot_id) continue;
        any = true;
        if (t.snapshot_removed_at) continue;  // that repository is cleared of it
        if (auto* job = job_of(t.repository)) job->snapshot_ids.push_back(*t.snapshot_id);
      }
      // Its offsite copies (copy_to) go too, from their repository.
      for (const auto& c : tx.set_copies(s.id)) {
        if (c.removed_at) continue;
        if (s.id == copying_) {
          any = true;  // in flight: its result is recorded first, then removed
          continue;
        }
        auto copies = tx.task_copies(s.id, c.repository);
        if (copies.empty()) {
          tx.mark_copy_removed(s.id, c.repository);  // nothing of it was stored there
          continue;
        }
        any = true;
        if (auto* job = job_of(c.repository)) {
          for (const auto& [task, snap] : copies) job->snapshot_ids.push_back(snap);
          job->copy_set_ids.push_back(s.id);
        }
      }
      if (!any) {
        tx.mark_set_forgotten(s.id, {{"repositories", nlohmann::json::array()}});  // nothing was stored
        continue;
      }
      // Cleared everywhere already (its last copy had nothing stored): forgotten now.
      bool cleared = s.id != copying_;
      std::set<std::string> repositories;
      for (const auto& t : tx.tasks_of_set(s.id))
        if (t.snapshot_id) {
          repositories.insert(t.repository);
          if (!t.snapshot_removed_at) cleared = false;
        }
      for (const auto& c : tx.set_copies(s.id))
        if (!c.removed_at) cleared = false;
      if (cleared) tx.mark_set_forgotten(s.id, {{"repositories", repositories}});
    }
  });
  for (auto& [repo, job] : jobs) maintenance_.submit(std::move(job));
  std::erase_if(waiting_, [&](const auto& e) { return !wanted.count(e.first); });
  // Backups and restores come first, and a lock makes the prune wait: a
  // repository always in use is never cleared. Said once an hour, not only
  // in the 'deferred' audit events.
  for (auto& [repo, w] : waiting_) {
    if (now - w.since < 3600) continue;
    if (w.warned && now - w.warned < 3600) continue;
    w.warned = now;
    spdlog::warn(
        "retention: repository '{}' has waited {} min to be cleared of expired sets ({}); its backups and "
        "restores come first and its lock must be free: leave it a gap between them "
        "(cairn_backup_sets_expired in /metrics)",
        repo, (now - w.since) / 60,
        held_back_.count(repo)    ? "backups or restores use it now"
        : maintenance_.busy(repo) ? "a prune of it runs now"
                                  : "its last prune was deferred or failed");
  }
}

std::vector<std::string> Scheduler::tick(int64_t now) {
  std::vector<std::string> agents;
  if (now == last_tick_) return agents;
  last_tick_ = now;
  // Backups and restores come before retention: one using a repository the
  // worker is pruning (ordered since the job started) would wait for the
  // exclusive lock, and fail after its minute. The prune stops instead, and
  // goes again once the tasks using that repository end.
  for (const auto& repo : maintenance_.busy_repositories())
    if (catalog_.read([&](const catalog::Tx& tx) { return tx.repository_in_use(repo); }) &&
        maintenance_.yield(repo, "gave way to a backup or restore using repository '" + repo + "'"))
      spdlog::info("retention: the prune of repository '{}' gives way to a backup or restore using it", repo);
  take_maintenance_results(now);
  write_set_records(now);
  // Sets that ended: retention after each complete one, and after each copy that landed.
  std::set<std::string> apply;
  copy_sets(now, apply);

  for (auto it = watched_.begin(); it != watched_.end();) {
    auto s = catalog_.read([&](const catalog::Tx& tx) { return tx.backup_set(it->first); });
    if (s && s->state == catalog::SetState::running) {
      ++it;
      continue;
    }
    if (s && s->state == catalog::SetState::complete) apply.insert(it->second);
    it = watched_.erase(it);
  }
  for (const auto& name : apply) {
    try {
      retention("controller", name, false);
    } catch (const std::exception& e) {
      spdlog::error("policy '{}': retention failed: {}", name, e.what());
    }
  }

  auto policies = catalog_.read([](const catalog::Tx& tx) { return tx.policies(); });
  for (const auto& p : policies) {
    if (p.paused || !p.next_run_at || *p.next_run_at > now) continue;
    int64_t due = *p.next_run_at;
    std::string trigger = "schedule", note;
    if (due < started_at_) {
      // Missed while the controller was not running: one run stands for all.
      int missed = 1;
      for (auto t = next_run(p, due); t && *t <= now && missed < 100000; t = next_run(p, *t)) ++missed;
      trigger = "missed";
      note = std::to_string(missed) + " run(s) fell due while the controller was not running (the first at " + utc(due) +
             "); this one run stands for them";
    }
    run("policy:" + p.name, p, trigger, due, note, agents);
    auto next = next_run(p, now);
    catalog_.transaction("controller", [&](catalog::Tx& tx) { tx.set_policy_next_run(p.name, next); });
  }
  // Drills fall due on their own schedule; one missed while the controller
  // was down runs once.
  for (const auto& p : policies) {  // the backup runs above change no drill field
    if (p.paused || p.drill_schedule.empty() || !p.drill_next_at || *p.drill_next_at > now) continue;
    run_drill(p, agents);
    auto next = next_drill(p, now);
    catalog_.transaction("controller", [&](catalog::Tx& tx) { tx.set_policy_next_drill(p.name, next); });
  }

  // The forget pass reads every expired set: after retention expired some,
  // after a maintenance job ended, and once a minute (a repository that was
  // locked or busy with a backup), not at every tick.
  // A repository held back by its backups and restores is cleared in the
  // tick after the last of them ends, not up to a minute later.
  if (!held_back_.empty()) {
    catalog_.read([&](const catalog::Tx& tx) {
      for (const auto& repo : held_back_)
        if (!tx.repository_in_use(repo)) forget_pass_due_ = true;
    });
  }
  // A retry falls due at its second.
  for (auto& [repo, at] : retry_after_)
    if (at && at <= now) {
      forget_pass_due_ = true;
      at = 0;
    }
  if (forget_pass_due_ || now - last_forget_pass_ >= 60) {
    held_back_.clear();  // the pass below records again those still held back
    forget_pass_due_ = false;
    last_forget_pass_ = now;
    submit_forgets(now);
  }
  return agents;
}

}  // namespace cairn::controller
