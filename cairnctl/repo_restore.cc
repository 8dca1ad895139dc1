#include <unistd.h>

#include <chrono>

#include "cairnctl/cli.h"
#include "common/repo/restorer.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl {

namespace {
struct RestoreArgs {
  std::string snapshot, target;
  std::vector<std::string> includes, excludes;
  bool overwrite = false;
  bool skip_damaged = false;
  unsigned threads = 0;
  std::string memory_budget;
  uint64_t max_entries = 0;  // 0: the defaults
};
}  // namespace

void register_repo_restore(CLI::App& repo, Context& ctx) {
  static RestoreArgs a;
  auto* cmd = repo.add_subcommand("restore", "restore a snapshot's files under a target directory");
  add_repo_options(cmd, ctx.opts);
  cmd->add_option("snapshot", a.snapshot, "snapshot id (or a unique prefix, or 'latest')")->required();
  cmd->add_option("--target,-t", a.target, "directory to restore into; snapshot paths are recreated below it")->required();
  cmd->add_option("--include,-i", a.includes,
                  "restore only paths matching this glob (path inside the snapshot or base name; a matching directory brings its "
                  "whole subtree; repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--exclude,-e", a.excludes, "skip paths matching this glob (same matching; repeatable)")->allow_extra_args(false);
  cmd->add_flag("--overwrite", a.overwrite, "allow a non-empty target and replace what is already there");
  cmd->add_option("--threads", a.threads, "parallel writers (default: twice the usable CPUs, 4 to 8, as many as --memory-budget holds)");
  add_memory_budget_option(cmd, a.memory_budget);
  add_skip_damaged_option(cmd, a.skip_damaged);
  cmd->add_option("--max-entries", a.max_entries,
                  "stop with an error past this many entries (a tree bomb's defence; default 50,000,000); giving it also lifts the "
                  "4 GiB bound on the restore plan's memory");
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto started = std::chrono::steady_clock::now();  // the summary's duration: the command's wall time
      const auto& o = ctx.opts;
      auto budget = memory_budget(a.memory_budget);
      auto r = open_repo(o);
      auto lock = lock_repo_for_reading(*r, o, "restore");
      say_memory_budget(o, budget);
      repo::RestoreOptions ro;
      ro.target = a.target;
      ro.includes = a.includes;
      ro.excludes = a.excludes;
      ro.overwrite = a.overwrite;
      ro.threads = a.threads;
      ro.memory_budget = budget.bytes;
      if (a.max_entries) {
        ro.max_entries = a.max_entries;
        ro.max_plan_bytes = UINT64_MAX;
      }
      ro.cancel = &ctx.cancel;
      ProgressPrinter pp(o, "restore");
      if (!o.quiet || o.json) {
        ro.progress = [&pp](const repo::Progress& p) { pp(p); };
        ro.progress_interval = std::chrono::milliseconds(isatty(2) && !o.json ? 250 : 1000);
      }
      repo::RestoreResult res;
      try {
        res = repo::restore(*r, resolve_snapshot_ref(*r, a.snapshot, a.skip_damaged), ro);
      } catch (...) {
        pp.clear();
        throw;
      }
      pp.clear();
      lock.reset();  // its request counted in the summary (as backup's)
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      // Said whatever --quiet or --json: the target held what a killed restore left.
      if (std::string left = repo::leftovers_text(res, a.target); !left.empty())
        std::fprintf(stderr, "cairnctl: %s\n", terminal_safe(left).c_str());
      for (const auto& w : res.warnings) warn("'" + w.path + "': " + w.reason);
      for (const auto& f : res.failures)
        std::fprintf(stderr, "cairnctl: error: restore of '%s' failed: %s\n", terminal_safe(f.path).c_str(),
                     terminal_safe(f.reason).c_str());
      if (o.json) {
        nlohmann::json fails = nlohmann::json::array(), warns = nlohmann::json::array();
        for (const auto& f : res.failures) fails.push_back({{"path", f.path}, {"reason", f.reason}});
        for (const auto& w : res.warnings) warns.push_back({{"path", w.path}, {"reason", w.reason}});
        nlohmann::json j = {{"message_type", "summary"},
                            {"snapshot_id", res.snapshot_id},
                            {"target", a.target},
                            {"files_restored", res.files_restored},
                            {"dirs_restored", res.dirs_restored},
                            {"others_restored", res.others_restored},
                            {"bytes_restored", res.bytes_restored},
                            {"leftovers_removed", {{"files", res.leftovers_removed}, {"bytes", res.leftover_bytes_removed}}},
                            {"duration_s", seconds},
                            {"failures", fails},
                            {"warnings", warns}};
        if (r->backend().caps().remote) j["storage"] = storage_json(r->backend());
        print_json(j);
      } else {
        info(o, "restored snapshot " + res.snapshot_id.substr(0, 8) + " to '" + a.target + "': " + std::to_string(res.files_restored) +
                    " files, " + std::to_string(res.dirs_restored) + " dirs, " + std::to_string(res.others_restored) + " other entries, " +
                    human_bytes(res.bytes_restored) + " in " + human_duration(seconds));
        if (r->backend().caps().remote) info(o, storage_line(r->backend()));
        if (!res.failures.empty())
          info(o, std::to_string(res.failures.size()) +
                      " entries could not be restored (listed above); run 'cairnctl repo check --read-data'");
      }
      return res.failures.empty() ? kExitOk : kExitError;
    };
  });
}

}  // namespace cairn::ctl
