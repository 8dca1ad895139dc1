#include <malloc.h>
#include <unistd.h>

#include <chrono>

#include "cairnctl/cli.h"
#include "common/repo/archiver.h"

namespace cairn::ctl {

namespace {
struct BackupArgs {
  std::vector<std::string> paths, tags, excludes;
  bool use_stdin = false;
  std::string stdin_name, profile, parent, host;
  bool force = false, no_parent = false;
  unsigned threads = 0;
  std::string memory_budget;
  double shared_start = 0;
};
}  // namespace

void register_repo_backup(CLI::App& repo, Context& ctx) {
  static BackupArgs a;
  auto* cmd = repo.add_subcommand("backup", "back up files and directories, or stdin, into a new snapshot");
  add_repo_options(cmd, ctx.opts);
  cmd->add_option("paths", a.paths, "files and directories to back up");
  cmd->add_option("--tag", a.tags, "tag the snapshot (repeatable)")->allow_extra_args(false);
  cmd->add_option("--exclude", a.excludes, "skip paths matching this glob (full path or base name; repeatable)")->allow_extra_args(false);
  cmd->add_flag("--stdin", a.use_stdin, "read the data from standard input");
  cmd->add_option("--stdin-name", a.stdin_name, "file name for the data read from stdin");
  cmd->add_option("--chunk-profile", a.profile,
                  "force a chunk-size profile: page (32 KiB), relation (128 KiB), standard (1 MiB), log (2 MiB), kafka (1 MiB, between "
                  "record batches)")
      ->check(CLI::IsMember({"page", "standard", "log", "kafka"}));
  // The default parent is whatever snapshot of this host and paths is newest,
  // written by anyone holding the password: docs/cli.md says when to use these.
  auto* parent_opt =
      cmd->add_option("--parent", a.parent, "compare against this snapshot instead of the latest of the same host and paths");
  cmd->add_flag("--no-parent", a.no_parent, "use no parent: read every file (for a repository other hosts write too)")
      ->excludes(parent_opt);
  cmd->add_flag("--force", a.force, "read every file, even those unchanged since the parent");
  cmd->add_option("--host", a.host, "record this host name instead of the machine's");
  cmd->add_option("--threads", a.threads, "worker threads (default: one per usable CPU, as many as --memory-budget holds)");
  add_memory_budget_option(cmd, a.memory_budget);
  cmd->add_option("--shared-with-replicas", a.shared_start,
                  "other writers store the same data into this repository now (the replicas of a Kafka partition): "
                  "find their blobs while storing, and start each directory's subdirectories at this fraction of "
                  "them (0 < F < 1, a different one per writer)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      // The summary's duration is the command's wall time: opening the
      // repository, waiting for the lock and a store that stalls on the
      // snapshot's upload are part of what the user waited for.
      const auto started = std::chrono::steady_clock::now();
      const auto& o = ctx.opts;
      if (a.use_stdin && !a.paths.empty()) throw Error(Errc::invalid_input, "--stdin takes no paths");
      if (!a.use_stdin && a.paths.empty()) throw Error(Errc::invalid_input, "nothing to back up: give paths, or --stdin --stdin-name NAME");
      if (a.use_stdin && a.stdin_name.empty()) throw Error(Errc::invalid_input, "--stdin needs --stdin-name NAME");
      if (a.use_stdin && isatty(0)) throw Error(Errc::invalid_input, "--stdin reads a pipe or file, not a terminal");
      auto budget = memory_budget(a.memory_budget);
      auto r = open_repo(o);
      check_memory_needs(budget, a.memory_budget,
                         repo::repository_needs(r->index(), repo::MemoryUse::backup, repo::Repository::index_load_threads()));
      auto lock = lock_repo(*r, o, repo::LockKind::shared, "backup");
      say_memory_budget(o, budget);
      repo::BackupOptions bo;
      bo.paths = a.paths;
      bo.tags = a.tags;
      bo.excludes = a.excludes;
      if (a.use_stdin) bo.stdin_name = a.stdin_name;
      if (!a.profile.empty()) {
        repo::ChunkProfile p{};
        if (!repo::parse_profile(a.profile, p))
          throw Error(Errc::invalid_input, "--chunk-profile '" + a.profile + "' is not one of page, relation, standard, log, kafka");
        bo.profile = p;
      }
      bo.parent = a.parent;
      if (a.no_parent) bo.parent_rule = repo::BackupOptions::ParentRule::named_only;  // and none named
      bo.force = a.force;
      bo.hostname = a.host;
      bo.threads = a.threads;
      bo.memory_budget = budget.bytes;
      if (a.shared_start > 0) {
        bo.share_writes = true;
        bo.walk_start = a.shared_start;
      }
      bo.cancel = &ctx.cancel;
      bo.check_lock = [l = lock.get()] { l->check("writing the snapshot"); };
      ProgressPrinter pp(o, "backup");
      if (!o.quiet || o.json) {
        bo.progress = [&pp](const repo::Progress& p) { pp(p); };
        bo.progress_interval = std::chrono::milliseconds(isatty(2) && !o.json ? 250 : 1000);
      }
      // Chunk buffers (256 KiB to 4 MiB, recycled by the archiver) come from mmap, not
      // the heap: freed ones go back to the system at once instead of leaving
      // fragmented arenas that grow with the input (peak RSS).
      mallopt(M_MMAP_THRESHOLD, 256 << 10);
      repo::BackupResult res = repo::backup(*r, bo);
      pp.clear();
      // Released before the summary: its request (a delete) is one the store
      // counted, so the summary's storage.requests is every request made.
      lock.reset();
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      const auto& s = res.snapshot;
      for (const auto& e : s.errors) warn(repo::describe_item_error(e.path, e.reason));
      if (o.json) {
        nlohmann::json errs = nlohmann::json::array();
        for (const auto& e : s.errors) errs.push_back({{"path", e.path}, {"reason", e.reason}});
        nlohmann::json j = s.summary;
        j["message_type"] = "summary";
        j["snapshot_id"] = s.id;
        j["partial"] = s.partial;
        j["errors"] = errs;
        j["parent"] = s.parent;
        j["duration_s"] = seconds;  // the snapshot records its own, up to its save
        if (r->backend().caps().remote) j["storage"] = storage_json(r->backend());
        print_json(j);
      } else {
        info(o, "files: " + std::to_string(res.files_new) + " new, " + std::to_string(res.files_changed) + " changed, " +
                    std::to_string(res.files_unmodified) + " unmodified; " + std::to_string(res.dirs) + " dirs");
        info(o, "added to the repository: " + human_bytes(res.stats.bytes_stored_new) + " (" + human_bytes(res.stats.bytes_raw_new) +
                    " before compression) of " + human_bytes(res.bytes_total) + " in " + human_duration(seconds));
        if (r->backend().caps().remote) info(o, storage_line(r->backend()));
        info(o, std::string(s.partial ? "PARTIAL snapshot " : "snapshot ") + s.id.substr(0, 8) + " saved" +
                    (s.partial ? " (" + std::to_string(s.errors.size()) + " sources could not be read; listed above)" : ""));
      }
      return s.partial ? kExitPartial : kExitOk;
    };
  });
}

}  // namespace cairn::ctl
