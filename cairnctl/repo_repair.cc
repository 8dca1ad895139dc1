#include <unistd.h>

#include "cairnctl/cli.h"
#include "common/repo/checker.h"

namespace cairn::ctl {

void register_repo_repair(CLI::App& repo, Context& ctx) {
  auto* cmd = repo.add_subcommand("repair", "repair a damaged repository");
  cmd->require_subcommand(1);
  auto* idx = cmd->add_subcommand("index", "rebuild the index from the pack headers (after 'check' reports a damaged or lost index file)");
  add_repo_options(idx, ctx.opts);
  idx->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto& o = ctx.opts;
      // The old index may be what is broken: do not load it, it is about to be replaced.
      auto r = open_repo(o, false);
      auto lock = lock_repo(*r, o, repo::LockKind::exclusive, "repair index");
      ProgressPrinter pp(o, "repair");
      repo::ProgressFn progress;
      if (!o.quiet || o.json) progress = [&pp](const repo::Progress& p) { pp(p); };
      repo::RepairIndexResult res = repo::repair_index(*r, progress, &ctx.cancel);
      pp.clear();
      for (const auto& [pack, why] : res.bad_packs)
        warn("pack '" + pack + "' was left alone: its header is unreadable (" + why +
             "); entries the old index had for it were kept. Run 'cairnctl repo check --read-data' to see what it affects");
      if (o.json) {
        nlohmann::json bad = nlohmann::json::array();
        for (const auto& [pack, why] : res.bad_packs) bad.push_back({{"pack", pack}, {"reason", why}});
        print_json({{"message_type", "summary"},
                    {"packs", res.packs},
                    {"blobs", res.blobs},
                    {"index_files_written", res.index_files},
                    {"index_files_removed", res.superseded},
                    {"bad_packs", bad}});
      } else {
        info(o, "read the headers of " + std::to_string(res.packs) + " packs: " + std::to_string(res.blobs) + " blobs");
        auto count = [](size_t n, const char* one, const char* many) { return std::to_string(n) + " " + (n == 1 ? one : many); };
        info(o, "wrote " + count(res.index_files.size(), "index file", "index files") + ", removed " +
                    count(res.superseded.size(), "old one", "old ones"));
        if (res.bad_packs.empty()) info(o, "index rebuilt; run 'cairnctl repo check' to confirm");
      }
      return res.bad_packs.empty() ? kExitOk : kExitError;
    };
  });
}

}  // namespace cairn::ctl
