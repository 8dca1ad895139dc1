// cairnctl catalog rebuild: a catalog from what the repositories hold
// (controller/catalog_rebuild.h). Works on the controller's data directory
// directly, with the controller stopped.
#include <cstdio>

#include "cairnctl/op_commands.h"
#include "common/util/error.h"
#include "controller/catalog_rebuild.h"
#include "controller/config.h"

namespace cairn::ctl {

std::vector<controller::RebuildSource> repository_sources(const std::string& config, const std::string& repo,
                                                          const std::string& password_file, const std::string& name) {
  std::vector<controller::RebuildSource> repos;
  if (!config.empty())
    for (const auto& r : controller::load_config(config).repositories) repos.push_back({r.name, r.path, r.password_file});
  if (!repo.empty()) {
    if (password_file.empty()) throw Error(Errc::invalid_input, "--repo needs --password-file");
    std::erase_if(repos, [&](const controller::RebuildSource& r) { return r.name == name; });
    repos.push_back({name, repo, password_file});
  }
  if (repos.empty())
    throw Error(Errc::invalid_input, "no repository named: give --repo and --password-file, or --config with [[repository]] tables");
  return repos;
}

void register_op_catalog(CLI::App& app, Context& ctx) {
  auto* catalog = app.add_subcommand("catalog", "the controller's catalog, with the controller stopped");
  catalog->require_subcommand(1);
  auto* rebuild = catalog->add_subcommand(
      "rebuild", "recreate a lost catalog's backup sets, snapshots and outcomes from the repositories' snapshot tags");
  struct Args {
    std::string config, data_dir, repo, password_file, name = "main";
  };
  auto a = std::make_shared<Args>();
  rebuild->add_option("--config", a->config,
                      "the controller's configuration: its data_dir and every [[repository]] it declares");
  rebuild->add_option("--data-dir", a->data_dir, "the controller's data directory (instead of --config's)");
  rebuild->add_option("--repo", a->repo, "a repository to read (instead of --config's)");
  rebuild->add_option("--password-file", a->password_file, "its passphrase file (mode 0600)");
  rebuild->add_option("--repository-name", a->name, "the name the agents give that repository")->capture_default_str();
  rebuild->callback([&ctx, a] {
    ctx.action = [a]() -> int {
      std::string data_dir = a->data_dir;
      if (data_dir.empty() && !a->config.empty()) data_dir = controller::load_config(a->config).data_dir;
      if (data_dir.empty()) throw Error(Errc::invalid_input, "give --data-dir or --config");
      auto repos = repository_sources(a->config, a->repo, a->password_file, a->name);
      auto rep = controller::rebuild_catalog(data_dir, repos);
      std::printf("catalog rebuilt in %s/catalog.db: %zu backup set(s) (%zu complete), %zu snapshot(s), %zu agent(s)\n",
                  data_dir.c_str(), rep.sets, rep.sets_complete, rep.snapshots, rep.agents);
      if (rep.skipped_safety) std::printf("left out: %zu safety backup snapshot(s) (taken before restores)\n", rep.skipped_safety);
      if (rep.skipped_untagged) std::printf("left out: %zu snapshot(s) without cairn's set tags\n", rep.skipped_untagged);
      if (rep.skipped_unreadable) std::printf("left out: %zu unreadable snapshot(s)\n", rep.skipped_unreadable);
      for (const auto& n : rep.notes) std::printf("note: %s\n", n.c_str());
      if (rep.agents)
        std::printf("the %zu agent(s) are pending: start the controller, then approve each with 'cairnctl agent approve' "
                    "when it connects (the same key gets its old identity back)\n", rep.agents);
      return 0;
    };
  });
}

}  // namespace cairn::ctl
