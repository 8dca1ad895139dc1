#include "cairnctl/cli.h"
#include "common/repo/keys.h"

namespace cairn::ctl {

void register_repo_init(CLI::App& repo, Context& ctx) {
  auto* cmd = repo.add_subcommand("init", "create a new, encrypted repository");
  add_repo_options(cmd, ctx.opts);
  static int level = 1;
  static std::string pack_mib = "16";
  cmd->add_option("--compression-level", level, "zstd level for data (1-19)")->check(CLI::Range(1, 19))->capture_default_str();
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto& o = ctx.opts;
      repo::Secret s = read_secret(o);
      auto be = make_backend(o);
      repo::InitOptions io;
      io.zstd_level = level;
      std::string slot = repo::Repository::init(*be, s, io);
      if (o.json) print_json({{"message_type", "init"}, {"repository", o.repo}, {"key", slot}});
      else {
        // Two lines, two calls: info() escapes a newline (the path may hold one).
        info(o, "created cairn repository at '" + o.repo + "' (key slot " + slot.substr(0, 12) + ")");
        info(o, "keep the passphrase safe: without it the data cannot be read");
      }
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
