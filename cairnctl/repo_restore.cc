#include "cairnctl/cli.h"

namespace cairn::ctl {

void register_repo_restore(CLI::App& repo, Context& ctx) {
  auto* cmd = repo.add_subcommand("restore", "not yet implemented");
  add_repo_options(cmd, ctx.opts);
  cmd->callback([&ctx] { ctx.action = []() -> int { throw Error(Errc::unsupported, "'restore' is not implemented yet"); }; });
}

}  // namespace cairn::ctl
