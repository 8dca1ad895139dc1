#include <unistd.h>

#include "cairnctl/cli.h"
#include "common/util/terminal_text.h"
#include "common/repo/checker.h"

namespace cairn::ctl {

namespace {
struct CheckArgs {
  bool read_data = false;
  unsigned threads = 0;
  std::string memory_budget;
};
}  // namespace

void register_repo_check(CLI::App& repo, Context& ctx) {
  static CheckArgs a;
  auto* cmd = repo.add_subcommand("check", "verify the repository: index, packs, snapshots and trees (and every byte with --read-data)");
  add_repo_options(cmd, ctx.opts);
  cmd->add_flag("--read-data", a.read_data, "read every pack whole and verify every blob (reads the whole repository)");
  cmd->add_option("--threads", a.threads, "packs read at once with --read-data (default: one per usable CPU, at most 8, as many as --memory-budget holds)");
  add_memory_budget_option(cmd, a.memory_budget);
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto& o = ctx.opts;
      // check loads the index itself and reports its problems with the rest.
      auto budget = memory_budget(a.memory_budget, repo::kOpenBytes, "opening a repository: the process and its key derivation");
      auto r = open_repo(o, false);
      auto lock = lock_repo_for_reading(*r, o, "check");
      say_memory_budget(o, budget);
      repo::CheckOptions co;
      co.read_data = a.read_data;
      co.threads = a.threads;
      co.memory_budget = budget.bytes;
      co.index_loaded = [&](const repo::Index& idx) {
        // Packs this repository writes are at most its pack size and a header.
        const uint64_t pack = r->params().pack_size + (1u << 20);
        check_memory_needs(budget, a.memory_budget,
                           repo::repository_needs(idx, a.read_data ? repo::MemoryUse::read_data : repo::MemoryUse::check, 1, pack));
      };
      co.cancel = &ctx.cancel;
      ProgressPrinter pp(o, "check");
      if (a.read_data && (!o.quiet || o.json)) {
        co.progress = [&pp](const repo::Progress& p) { pp(p); };
        co.progress_interval = std::chrono::milliseconds(isatty(2) && !o.json ? 250 : 1000);
      }
      repo::CheckReport rep = repo::check(*r, co);
      pp.clear();
      size_t errors = rep.errors(), warnings = rep.warnings();
      if (o.json) {
        for (const auto& p : rep.problems) {
          nlohmann::json j = repo::problem_json(p);
          j["message_type"] = "problem";
          print_json(j);
        }
        print_json({{"message_type", "summary"},
                    {"errors", errors},
                    {"warnings", warnings},
                    {"clean", errors == 0},
                    {"read_data", a.read_data},
                    {"index_files", rep.index_files},
                    {"packs", rep.packs},
                    {"pack_bytes", rep.pack_bytes},
                    {"blobs", rep.blobs},
                    {"snapshots", rep.snapshots},
                    {"trees", rep.trees},
                    {"packs_read", rep.packs_read},
                    {"bytes_read", rep.bytes_read},
                    {"blobs_verified", rep.blobs_verified},
                    {"seconds", rep.seconds}});
      } else {
        // Problems print even with --quiet: they are what the command is for.
        for (const auto& p : rep.problems) std::printf("%s\n", terminal_safe(repo::problem_line(p)).c_str());
        info(o, "checked " + std::to_string(rep.snapshots) + " snapshots, " + std::to_string(rep.trees) + " trees, " +
                    std::to_string(rep.packs) + " packs (" + human_bytes(rep.pack_bytes) + "), " + std::to_string(rep.index_files) +
                    " index files" +
                    (a.read_data ? "; read " + human_bytes(rep.bytes_read) + " and verified " + std::to_string(rep.blobs_verified) + " blobs"
                                 : "; data not read (use --read-data)") +
                    " in " + human_duration(rep.seconds));
        std::string w = warnings ? ", " + std::to_string(warnings) + (warnings == 1 ? " warning" : " warnings") : "";
        if (errors == 0) std::printf("no errors were found%s\n", w.c_str());
        else std::printf("%zu %s found%s\n", errors, errors == 1 ? "error" : "errors", w.c_str());
        std::fflush(stdout);
      }
      return errors ? kExitError : kExitOk;
    };
  });
}

}  // namespace cairn::ctl
