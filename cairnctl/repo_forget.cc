#include <algorithm>
#include <map>
#include <set>

#include "cairnctl/cli.h"
#include "common/repo/policy.h"
#include "common/repo/prune.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl {

// In repo_prune.cc.
int run_prune(repo::Repository& r, const RepoOptions& o, double max_unused, bool dry_run, const std::set<std::string>& ignore,
              const std::atomic<bool>* cancel, const repo::Lock* lock);

namespace {

struct ForgetArgs {
  std::vector<std::string> ids;
  repo::RetentionPolicy policy;
  std::string within;
  bool prune = false;
  bool dry_run = false;
  bool force = false;
  double max_unused = 5;
};

std::string when(const repo::Snapshot& s) {
  std::string w = s.time.substr(0, 19);
  std::replace(w.begin(), w.end(), 'T', ' ');
  return terminal_safe(w);  // the snapshot's own text: shown escaped
}

std::string join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : sep) + x;
  return out;
}

}  // namespace

void register_repo_forget(CLI::App& repo, Context& ctx) {
  static ForgetArgs a;
  auto* cmd = repo.add_subcommand("forget", "remove snapshots, named or by a retention policy (data is freed by prune)");
  add_repo_options(cmd, ctx.opts);
  cmd->add_option("snapshots", a.ids, "snapshot ids (or unique prefixes) to remove, in addition to what the policy removes");
  auto& p = a.policy;
  cmd->add_option("--keep-last", p.keep_last, "keep the N newest snapshots")->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--keep-hourly", p.keep_hourly, "keep the newest snapshot of each of the last N hours with snapshots")
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--keep-daily", p.keep_daily, "keep the newest snapshot of each of the last N days with snapshots")
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--keep-weekly", p.keep_weekly, "keep the newest snapshot of each of the last N ISO weeks with snapshots")
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--keep-monthly", p.keep_monthly, "keep the newest snapshot of each of the last N months with snapshots")
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--keep-yearly", p.keep_yearly, "keep the newest snapshot of each of the last N years with snapshots")
      ->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--keep-within", a.within, "keep every snapshot this much younger than the newest of its group (e.g. 7d, 36h, 2w)");
  cmd->add_option("--keep-tag", p.keep_tags, "keep every snapshot with this tag (repeatable)")->allow_extra_args(false);
  cmd->add_flag("--prune", a.prune, "run prune afterwards, under the same lock");
  cmd->add_option("--max-unused", a.max_unused, "with --prune: tolerated unused space in percent (default 5)")
      ->check(CLI::Range(0.0, 100.0));
  cmd->add_flag("--dry-run,-n", a.dry_run, "show what would be removed; change nothing");
  cmd->add_flag("--force", a.force, "remove a piece of a log (a WAL segment) even while a kept snapshot (a base backup) replays it");
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto& o = ctx.opts;
      if (!a.within.empty()) {
        a.policy.keep_within = parse_duration(a.within);
        if (a.policy.keep_within < 0)
          throw Error(Errc::invalid_input, "--keep-within '" + a.within + "' is not a duration (try 7d, 36h, 2w)");
      }
      // With neither ids nor a policy, apply_retention refuses the empty policy.
      bool use_policy = !a.policy.empty() || a.ids.empty();
      if (use_policy && a.policy.empty()) repo::apply_retention({}, a.policy);

      auto r = open_repo(o, a.prune);
      // As prune: credentials that cannot delete fail with exit code 14 even with nothing to forget.
      if (!a.dry_run) repo::check_may_delete(r->backend());
      auto lock = lock_repo(*r, o, repo::LockKind::exclusive, a.prune ? "forget --prune" : "forget");
      std::set<std::string> explicit_ids;
      for (const auto& ref : a.ids) explicit_ids.insert(repo::resolve_snapshot(*r, ref));

      std::vector<std::pair<std::string, std::string>> bad;
      auto snaps = repo::load_snapshots(*r, &bad);
      for (const auto& [id, why] : bad)
        if (!explicit_ids.count(id)) warn("snapshot '" + id.substr(0, 8) + "' is unreadable and left alone: " + why);

      std::vector<repo::RetentionGroup> groups;
      if (use_policy) {
        groups = repo::apply_retention(snaps, a.policy);
      } else {
        // Ids only: show the named snapshots, grouped like a policy would.
        std::vector<repo::Snapshot> named;
        for (const auto& s : snaps)
          if (explicit_ids.count(s.id)) named.push_back(s);
        std::map<std::string, repo::RetentionGroup> by;
        for (const auto& s : named) {
          auto& g = by[repo::source_key(s)];
          g.hostname = s.hostname;
          g.paths = s.paths;
          std::sort(g.paths.begin(), g.paths.end());
          g.snapshots.push_back({s, false, {}});
        }
        for (auto& [k, g] : by) {
          std::sort(g.snapshots.begin(), g.snapshots.end(),
                    [](const auto& x, const auto& y) { return x.snapshot.time_unix > y.snapshot.time_unix; });
          groups.push_back(std::move(g));
        }
      }

      std::set<std::string> remove;
      std::set<std::string> seen;
      for (auto& g : groups)
        for (auto& d : g.snapshots) {
          seen.insert(d.snapshot.id);
          if (explicit_ids.count(d.snapshot.id)) d.keep = false;  // named explicitly: removed whatever the policy says
          if (!d.keep) remove.insert(d.snapshot.id);
        }
      std::vector<std::string> unreadable_named;
      for (const auto& id : explicit_ids)
        if (!seen.count(id)) {
          unreadable_named.push_back(id);
          remove.insert(id);
        }

      // A piece of a log a kept snapshot replays (a WAL segment after a kept
      // base backup's start): forgetting it leaves a gap no recovery from
      // that backup passes. Refused unless forced; a policy never removes it.
      {
        std::vector<const repo::Snapshot*> kept;
        for (const auto& s : snaps)
          if (!remove.count(s.id)) kept.push_back(&s);
        std::string refused;
        for (const auto& s : snaps) {
          if (!remove.count(s.id)) continue;
          auto by = repo::replayed_by(s, kept);
          if (by.empty()) continue;
          if (!explicit_ids.count(s.id) && !a.force) {
            remove.erase(s.id);  // a policy's choice: kept, said below
            for (auto& g : groups)
              for (auto& d : g.snapshots)
                if (d.snapshot.id == s.id) {
                  d.keep = true;
                  d.reasons = {"replayed by " + by.front()->id.substr(0, 8)};
                }
            continue;
          }
          std::string names;
          for (size_t i = 0; i < by.size() && i < 3; ++i)
            names += std::string(i ? ", " : "") + by[i]->id.substr(0, 8) + " (" + when(*by[i]) + ")";
          if (by.size() > 3) names += " and " + std::to_string(by.size() - 3) + " more";
          const auto tv = repo::tag_values(s);
          const std::string what =
              "snapshot '" + s.id.substr(0, 8) + "'" + (tv.count("wal") ? " (WAL '" + terminal_safe(tv.at("wal")) + "')" : std::string());
          if (a.force)
            warn(what + " is replayed by kept snapshot(s) " + names + "; removed as forced: their recovery stops before it");
          else
            refused += "\n  " + what + " is replayed by kept snapshot(s) " + names;
        }
        if (!refused.empty())
          throw Error(Errc::invalid_input,
                      "refusing to forget pieces of a log that kept snapshots replay (recovery from them could not pass "
                      "the gap):" +
                          refused + "\nforget those snapshots first, or add --force to remove them anyway; nothing was removed");
      }

      if (o.json) {
        nlohmann::json jg = nlohmann::json::array();
        for (const auto& g : groups) {
          nlohmann::json keep = nlohmann::json::array(), rm = nlohmann::json::array();
          for (const auto& d : g.snapshots) {
            nlohmann::json e = {
                {"id", d.snapshot.id}, {"short_id", d.snapshot.id.substr(0, 8)}, {"time", d.snapshot.time}, {"tags", d.snapshot.tags}};
            if (d.keep) {
              e["reasons"] = d.reasons;
              keep.push_back(e);
            } else {
              e["explicit"] = explicit_ids.count(d.snapshot.id) != 0;
              rm.push_back(e);
            }
          }
          jg.push_back(
              {{"host", g.hostname}, {"paths", g.paths}, {"keep", keep}, {"remove", rm}, {"kept_newest_by_guard", g.guard_kept_newest}});
        }
        print_json({{"message_type", "forget"},
                    {"dry_run", a.dry_run},
                    {"policy", use_policy ? a.policy.describe() : "none"},
                    {"groups", jg},
                    {"unreadable_removed", unreadable_named},
                    {"removed", remove.size()}});
      } else if (!o.quiet) {
        for (const auto& g : groups) {
          std::printf("snapshots of host '%s', paths %s:\n", terminal_safe(g.hostname).c_str(), terminal_safe(join(g.paths, ", ")).c_str());
          size_t nk = std::count_if(g.snapshots.begin(), g.snapshots.end(), [](const auto& d) { return d.keep; });
          if (nk) {
            std::printf("keep %zu:\n  %-8s  %-19s  %s\n", nk, "ID", "Time", "Reasons");
            for (const auto& d : g.snapshots)
              if (d.keep)
                std::printf("  %-8s  %-19s  %s\n", d.snapshot.id.substr(0, 8).c_str(), when(d.snapshot).c_str(),
                            join(d.reasons, ", ").c_str());
          }
          if (g.snapshots.size() > nk) {
            std::printf("remove %zu:\n  %-8s  %s\n", g.snapshots.size() - nk, "ID", "Time");
            for (const auto& d : g.snapshots)
              if (!d.keep)
                std::printf("  %-8s  %-19s%s\n", d.snapshot.id.substr(0, 8).c_str(), when(d.snapshot).c_str(),
                            explicit_ids.count(d.snapshot.id) ? "  (named)" : "");
          }
          if (g.guard_kept_newest)
            std::printf("note: the policy would remove every snapshot of this group; the newest is kept (name it to remove it)\n");
          std::printf("\n");
        }
        for (const auto& id : unreadable_named) std::printf("remove unreadable snapshot %s (named)\n", id.substr(0, 8).c_str());
      }

      if (!a.dry_run)
        for (const auto& id : remove) {
          lock->check("removing snapshots");
          r->backend().remove({repo::FileType::snapshot, id});
        }
      if (a.dry_run)
        info(o, "dry run: " + std::to_string(remove.size()) + " snapshots would be removed; nothing was changed");
      else
        info(o, std::to_string(remove.size()) + " snapshots removed" +
                    (a.prune || remove.empty() ? "" : "; run 'cairnctl repo prune' to free their data"));

      if (a.prune) return run_prune(*r, o, a.max_unused, a.dry_run, a.dry_run ? remove : std::set<std::string>{}, &ctx.cancel, lock.get());
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
