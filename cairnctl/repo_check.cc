#include "cairnctl/cli.h"

namespace cairn::ctl {

void register_repo_check(CLI::App& repo, Context& ctx) {
  auto* cmd = repo.add_subcommand("check", "not yet implemented");
  add_repo_options(cmd, ctx.opts);
  cmd->callback([&ctx] { ctx.action = []() -> int { throw Error(Errc::unsupported, "'check' is not implemented yet"); }; });
}

}  // namespace cairn::ctl
