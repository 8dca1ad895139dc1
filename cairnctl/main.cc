// cairnctl: the operator's command. `cairnctl repo ...` drives a repository
// directly, with no controller: that is how an operator restores when the
// controller itself is gone.
#include <malloc.h>
#include <signal.h>

#include <cstdio>
#include <iostream>

#include "cairn/version.h"
#include "cairnctl/cli.h"
#include "common/repo/storage/registry.h"
#include "common/util/terminal_text.h"
#ifdef CAIRN_WITH_CONTROLLER
#include "cairnctl/op_commands.h"
#endif

namespace {
cairn::ctl::Context* g_ctx = nullptr;
void on_signal(int) {
  if (g_ctx) g_ctx->cancel = true;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace cairn::ctl;
  Context ctx;
  g_ctx = &ctx;
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  signal(SIGPIPE, SIG_IGN);
  // Packs (16 MiB) and log-profile chunks (up to 8 MiB) come and go all the time; a
  // fixed mmap threshold returns them to the system on free instead of letting
  // glibc's adaptive threshold keep them in the heap (peak RSS).
  mallopt(M_MMAP_THRESHOLD, 4 << 20);
  cairn::repo::set_storage_log([](const std::string& m) { warn(m); });

  CLI::App app{"cairnctl - operate cairn backups"};
  app.set_version_flag("--version", std::string("cairnctl ") + CAIRN_VERSION);
  app.require_subcommand(1);
  CLI::App* repo = app.add_subcommand("repo", "work on a repository directly (no controller needed)");
  repo->require_subcommand(1);
  register_repo_init(*repo, ctx);
  register_repo_backup(*repo, ctx);
  register_repo_snapshots(*repo, ctx);
  register_repo_ls(*repo, ctx);
  register_repo_restore(*repo, ctx);
  register_repo_check(*repo, ctx);
  register_repo_repair(*repo, ctx);
  register_repo_forget(*repo, ctx);
  register_repo_prune(*repo, ctx);
  register_repo_key(*repo, ctx);
  register_repo_unlock(*repo, ctx);
#ifdef CAIRN_WITH_CONTROLLER
  register_op_keys(app, ctx);
  register_op_agent(app, ctx);
  register_op_backup(app, ctx);
  register_op_restore(app, ctx);
  register_op_drill(app, ctx);
  register_op_status(app, ctx);
  register_op_policy(app, ctx);
  register_op_catalog(app, ctx);
  register_op_export(app, ctx);
#endif

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : kExitError;
  }
  if (!ctx.action) return kExitError;
  try {
    return ctx.action();
  } catch (const cairn::Error& e) {
    // Errors echo names (files, agents, the controller's detail): never raw.
    std::fprintf(stderr, "cairnctl: error: %s\n", cairn::terminal_safe(e.what()).c_str());
    return exit_code_for(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairnctl: error: %s\n", cairn::terminal_safe(e.what()).c_str());
    return kExitError;
  }
}
