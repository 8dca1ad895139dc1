#include "cairnctl/cli.h"
#include "common/repo/keys.h"
#include "common/util/fs.h"
#include "common/util/terminal_text.h"

namespace cairn::ctl {

namespace {
struct KeyArgs {
  std::string new_password_file, new_key_file, id;
};

repo::Secret new_secret(const KeyArgs& a) {
  if (!a.new_key_file.empty()) return {repo::Secret::Kind::key_file, read_secret_file(a.new_key_file)};
  if (!a.new_password_file.empty()) return {repo::Secret::Kind::passphrase, read_secret_file(a.new_password_file)};
  throw Error(Errc::invalid_input, "no new secret given: use --new-password-file FILE or --new-key-file FILE (mode 0600)");
}
}  // namespace

void register_repo_key(CLI::App& repo, Context& ctx) {
  static KeyArgs a;
  auto* key = repo.add_subcommand("key", "manage key slots (the data is never re-encrypted)");
  key->require_subcommand(1);

  auto* add = key->add_subcommand("add", "add a key slot for another passphrase or key file");
  add_repo_options(add, ctx.opts);
  add->add_option("--new-password-file", a.new_password_file, "file with the new passphrase (mode 0600)");
  add->add_option("--new-key-file", a.new_key_file, "file with a new key (mode 0600, at least 32 random bytes)");
  add->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      auto r = open_repo(ctx.opts, false);
      std::string id = repo::add_key_slot(r->backend(), r->master_key(), new_secret(a));
      if (ctx.opts.json)
        print_json({{"message_type", "key_added"}, {"id", id}});
      else
        info(ctx.opts, "added key slot " + id.substr(0, 12));
      return kExitOk;
    };
  });

  auto* list = key->add_subcommand("list", "list key slots");
  add_repo_options(list, ctx.opts);
  list->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      auto r = open_repo(ctx.opts, false);
      auto slots = repo::list_key_slots(r->backend());
      if (ctx.opts.json) {
        nlohmann::json arr = nlohmann::json::array();
        for (const auto& k : slots)
          arr.push_back({{"id", k.id},
                         {"current", k.id == r->key_slot()},
                         {"created", k.created},
                         {"hostname", k.hostname},
                         {"username", k.username},
                         {"kdf", k.kdf}});
        print_json(arr);
        return kExitOk;
      }
      std::printf("  %-12s  %-12s  %-16s  %-12s  %s\n", "ID", "KDF", "Host", "User", "Created");
      for (const auto& k : slots)
        std::printf("%s %-12s  %-12s  %-16s  %-12s  %s\n", k.id == r->key_slot() ? "*" : " ", k.id.substr(0, 12).c_str(),
                    terminal_safe(k.kdf).c_str(), terminal_safe(k.hostname).c_str(), terminal_safe(k.username).c_str(),
                    terminal_safe(k.created.substr(0, 19)).c_str());
      return kExitOk;
    };
  });

  auto* remove = key->add_subcommand("remove", "remove a key slot (not the one in use, not the last)");
  add_repo_options(remove, ctx.opts);
  remove->add_option("id", a.id, "key slot id or unique prefix")->required();
  remove->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      auto r = open_repo(ctx.opts, false);
      auto lock = lock_repo(*r, ctx.opts, repo::LockKind::exclusive, "key remove");
      auto slots = repo::list_key_slots(r->backend());
      std::string found;
      for (const auto& k : slots)
        if (k.id.rfind(a.id, 0) == 0) {
          if (!found.empty()) throw Error(Errc::invalid_input, "key id '" + a.id + "' is ambiguous");
          found = k.id;
        }
      if (found.empty()) throw Error(Errc::not_found, "no key slot '" + a.id + "' (see 'cairnctl repo key list')");
      if (found == r->key_slot())
        throw Error(Errc::invalid_input, "refusing to remove the key slot in use; open the repository with another key to remove this one");
      lock->check("removing the key slot");
      r->backend().remove({repo::FileType::key, found});
      info(ctx.opts, "removed key slot " + found.substr(0, 12));
      return kExitOk;
    };
  });

  auto* passwd = key->add_subcommand("passwd", "replace the key slot in use with one for a new passphrase");
  add_repo_options(passwd, ctx.opts);
  passwd->add_option("--new-password-file", a.new_password_file, "file with the new passphrase (mode 0600)");
  passwd->add_option("--new-key-file", a.new_key_file, "file with a new key (mode 0600)");
  passwd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      auto r = open_repo(ctx.opts, false);
      auto lock = lock_repo(*r, ctx.opts, repo::LockKind::exclusive, "key passwd");
      // The new slot is written first: at no moment is there no way in.
      std::string id = repo::add_key_slot(r->backend(), r->master_key(), new_secret(a));
      lock->check("removing the old key slot");
      r->backend().remove({repo::FileType::key, r->key_slot()});
      info(ctx.opts, "changed: key slot " + r->key_slot().substr(0, 12) + " replaced by " + id.substr(0, 12));
      return kExitOk;
    };
  });
}

void register_repo_unlock(CLI::App& repo, Context& ctx) {
  static bool all = false;
  static std::string watch;
  auto* cmd = repo.add_subcommand("unlock", "list locks and remove stale ones");
  add_repo_options(cmd, ctx.opts);
  cmd->add_flag("--remove-all", all, "remove every lock, live or not (only when you know no cairnctl is running)");
  cmd->add_option("--watch", watch,
                  "also watch the locks this host cannot judge (other hosts, other PID namespaces) for up to this long "
                  "(e.g. 35min) and remove those that stay unchanged for the stale interval (30 minutes)");
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      std::chrono::seconds w(0);
      if (!watch.empty()) {
        int64_t s = parse_duration(watch);
        if (s < 0) throw Error(Errc::invalid_input, "--watch '" + watch + "' is not a duration (try 35min, 1h)");
        w = std::chrono::seconds(s);
      }
      auto t = repo::LockTiming::from_env();
      auto r = open_repo(ctx.opts, false);
      std::vector<repo::LockInfo> kept;
      for (const auto& l : repo::remove_locks(*r, all, w, t, &kept))
        info(ctx.opts, "removed " + std::string(l.stale ? "stale " : "") + l.describe() + (l.stale ? ": " + l.stale_reason : ""));
      for (const auto& l : kept) {
        if (l.same_process_space)
          info(ctx.opts, "kept live " + l.describe());
        else
          info(ctx.opts,
               "kept " + l.describe() + ": cannot tell from here whether it is live (" + l.held_note + "); " +
                   (l.watched_s >= 1 ? "it changed or was watched only " + repo::lock_duration_text(int64_t(l.watched_s)) + "; " : "") +
                   "'--watch " + repo::lock_duration_text(t.stale_after.count() + t.refresh_every.count()) +
                   "' removes it if it stays unchanged for " + repo::lock_duration_text(t.stale_after.count()) +
                   ", '--remove-all' if you know its holder is gone");
      }
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
