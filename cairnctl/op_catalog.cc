// cairnctl catalog rebuild: a catalog from what the repositories hold
// (controller/catalog_rebuild.h). Works on the controller's data directory
// directly, with the controller stopped.
#include <sys/stat.h>

#include <cstdio>

#include "cairnctl/op_commands.h"
#include "common/plan/signing_key.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "controller/catalog_rebuild.h"
#include "controller/config.h"
#include "controller/keyfiles.h"

namespace cairn::ctl {

std::vector<controller::RebuildSource> repository_sources(const std::string& config, const std::string& repo,
                                                          const std::string& password_file, const std::string& name) {
  std::vector<controller::RebuildSource> repos;
  if (!config.empty())
    for (const auto& r : controller::load_config(config).repositories)
      repos.push_back({r.name, r.path, r.password_file, r.credentials_file});
  if (!repo.empty()) {
    if (password_file.empty()) throw Error(Errc::invalid_input, "--repo needs --password-file");
    std::erase_if(repos, [&](const controller::RebuildSource& r) { return r.name == name; });
    const char* creds = std::getenv("CAIRN_STORAGE_CREDENTIALS");
    repos.push_back({name, repo, password_file, creds ? creds : ""});
  }
  if (repos.empty())
    throw Error(Errc::invalid_input, "no repository named: give --repo and --password-file, or --config with [[repository]] tables");
  return repos;
}

std::vector<plan::PublicKey> trusted_keys(const std::vector<std::string>& given, const std::string& config) {
  std::vector<plan::PublicKey> trusted;
  for (const auto& k : given) {
    if (k.starts_with("ed25519:")) {
      plan::PublicKey pub{};
      if (!plan::parse_public_key(k, pub))
        throw Error(Errc::invalid_input, "--trusted-key '" + k.substr(0, 24) + "…' is not a controller signing key ('ed25519:<base64>')");
      trusted.push_back(pub);
    } else {
      for (const auto& pub : plan::read_public_key_file(k)) trusted.push_back(pub);
    }
  }
  if (!config.empty()) {
    std::string pub = controller::load_config(config).key_dir + "/" + controller::kSigningPubFile;
    struct stat st {};
    if (::stat(pub.c_str(), &st) == 0) {
      for (const auto& k : plan::read_public_key_file(pub)) trusted.push_back(k);
    } else {
      std::printf("note: %s is not there: give the controller's signing key with --trusted-key\n", pub.c_str());
    }
  }
  return trusted;
}

void register_op_catalog(CLI::App& app, Context& ctx) {
  auto* catalog = app.add_subcommand("catalog", "the controller's catalog, with the controller stopped");
  catalog->require_subcommand(1);
  auto* rebuild = catalog->add_subcommand(
      "rebuild", "recreate a lost catalog's backup sets, snapshots and outcomes from the repositories' snapshot tags");
  struct Args {
    std::string config, data_dir, repo, password_file, name = "main";
    std::vector<std::string> trusted_keys;
  };
  auto a = std::make_shared<Args>();
  rebuild->add_option("--config", a->config, "the controller's configuration: its data_dir and every [[repository]] it declares");
  rebuild->add_option("--data-dir", a->data_dir, "the controller's data directory (instead of --config's)");
  rebuild->add_option("--repo", a->repo, "a repository to read (instead of --config's)");
  rebuild->add_option("--password-file", a->password_file, "its passphrase file (mode 0600)");
  rebuild->add_option("--repository-name", a->name, "the name the agents give that repository")->capture_default_str();
  rebuild->add_option("--trusted-key", a->trusted_keys, std::string(kTrustedKeyHelp) + ". --config adds its key_dir's")
      ->allow_extra_args(false);
  rebuild->callback([&ctx, a] {
    ctx.action = [a]() -> int {
      std::string data_dir = a->data_dir;
      if (data_dir.empty() && !a->config.empty()) data_dir = controller::load_config(a->config).data_dir;
      if (data_dir.empty()) throw Error(Errc::invalid_input, "give --data-dir or --config");
      auto repos = repository_sources(a->config, a->repo, a->password_file, a->name);
      auto trusted = trusted_keys(a->trusted_keys, a->config);
      auto rep = controller::rebuild_catalog(data_dir, repos, trusted);
      std::printf("catalog rebuilt in %s/catalog.db: %zu backup set(s) (%zu complete), %zu snapshot(s), %zu agent(s)\n", data_dir.c_str(),
                  rep.sets, rep.sets_complete, rep.snapshots, rep.agents);
      std::printf("%zu set(s) attested by a signed set record, %zu unattested (restored only with --accept-unattested)\n",
                  rep.sets_attested, rep.sets - rep.sets_attested);
      if (rep.records_unverified) std::printf("left out: %zu set record(s) that do not verify\n", rep.records_unverified);
      if (rep.snapshots_unlisted)
        std::printf("left out: %zu snapshot(s) claiming an attested set that its record does not list\n", rep.snapshots_unlisted);
      if (rep.skipped_safety) std::printf("left out: %zu safety backup snapshot(s) (taken before restores)\n", rep.skipped_safety);
      if (rep.skipped_untagged) std::printf("left out: %zu snapshot(s) without cairn's set tags\n", rep.skipped_untagged);
      if (rep.skipped_unreadable) std::printf("left out: %zu unreadable snapshot(s)\n", rep.skipped_unreadable);
      for (const auto& n : rep.notes) std::printf("note: %s\n", n.c_str());
      if (rep.agents)
        std::printf(
            "the %zu agent(s) are pending: start the controller, then approve each with 'cairnctl agent approve' "
            "when it connects (the same key gets its old identity back)\n",
            rep.agents);
      return 0;
    };
  });
}

}  // namespace cairn::ctl
