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
      // What protects a remote store's objects from its writers (docs/configuration.md §
      // Protecting the repository from its writers), as these credentials find it.
      std::optional<repo::StoreProtection> prot;
      if (be->caps().remote) {
        try {
          prot = be->protection();
        } catch (const Error& e) {
          prot = repo::StoreProtection{repo::Protection::unknown, std::string("the store did not answer: ") + e.what()};
        }
      }
      if (o.json) {
        nlohmann::json j = {{"message_type", "init"}, {"repository", o.repo}, {"key", slot}};
        if (prot) j["store_protection"] = {{"state", repo::protection_name(prot->state)}, {"detail", prot->detail}};
        print_json(j);
      } else {
        // Two lines, two calls: info() escapes a newline (the path may hold one).
        info(o, "created cairn repository at '" + o.repo + "' (key slot " + slot.substr(0, 12) + ")");
        info(o, "keep the passphrase safe: without it the data cannot be read");
        if (prot) {
          info(o, std::string("store protection: ") + repo::protection_name(prot->state) + " (" + prot->detail + ")");
          if (!repo::overwrite_safe(prot->state))
            warn(
                "the store keeps no earlier versions of what is overwritten or deleted: agents refuse to back up into it "
                "unless their credentials may only create objects; enable the bucket's versioning (or Object Lock) "
                "(docs/configuration.md § Protecting the repository from its writers)");
        }
      }
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
