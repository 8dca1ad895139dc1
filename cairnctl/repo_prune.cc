#include <unistd.h>

#include <chrono>

#include "cairnctl/cli.h"
#include "common/repo/prune.h"

namespace cairn::ctl {

// Shared with repo_forget.cc (forget --prune): runs prune under a lock the caller holds.
int run_prune(repo::Repository& r, const RepoOptions& o, double max_unused, bool dry_run, const std::set<std::string>& ignore,
              const std::atomic<bool>* cancel, const repo::Lock* lock);

namespace {

std::string count_line(const repo::PruneCount& c) {
  return std::to_string(c.packs) + " packs, " + std::to_string(c.blobs) + " blobs, " + human_bytes(c.bytes);
}

nlohmann::json count_json(const repo::PruneCount& c) { return {{"packs", c.packs}, {"blobs", c.blobs}, {"bytes", c.bytes}}; }

void print_result(const RepoOptions& o, const repo::PruneResult& r, bool dry_run) {
  if (o.json) {
    print_json({{"message_type", "summary"},
                {"action", "prune"},
                {"dry_run", dry_run},
                {"snapshots", r.snapshots},
                {"used_blobs", r.used_blobs},
                {"used_bytes", r.used_bytes},
                {"before", count_json(r.before)},
                {"kept", count_json(r.kept)},
                {"repacked", count_json(r.repacked)},
                {"deleted", count_json(r.deleted)},
                {"unindexed_deleted", count_json(r.unindexed)},
                {"leftovers_removed", {{"files", r.leftovers.packs}, {"bytes", r.leftovers.bytes}}},
                {"versions_removed", {{"objects", r.versions_removed.packs}, {"bytes", r.versions_removed.bytes}}},
                {"versions_retained",
                 {{"objects", r.versions_retained.packs},
                  {"bytes", r.versions_retained.bytes},
                  {"until", r.retained_until},
                  {"legal_holds", r.legal_holds}}},
                {"written", count_json(r.written)},
                {"unused_bytes_before", r.unused_bytes_before},
                {"unused_bytes_after", r.unused_bytes_after},
                {"bytes_freed", r.bytes_freed},
                {"index_files_removed", r.index_files_removed},
                {"index_files_written", r.index_files_written},
                {"missing_packs", r.missing_packs}});
    return;
  }
  const char* would = dry_run ? "would be " : "";
  info(o, std::to_string(r.snapshots) + " snapshots use " + std::to_string(r.used_blobs) + " blobs (" + human_bytes(r.used_bytes) + ")");
  info(o, "before:    " + std::to_string(r.before.packs) + " packs, " + human_bytes(r.before.bytes) + ", of which " +
              human_bytes(r.unused_bytes_before) + " unused");
  info(o, "kept:      " + count_line(r.kept));
  info(o, std::string("repacked:  ") + std::to_string(r.repacked.packs) + " packs; " + std::to_string(r.repacked.blobs) + " used blobs (" +
              human_bytes(r.repacked.bytes) + ") " + (dry_run ? "would be " : "") + "copied into " + std::to_string(r.written.packs) +
              " new packs");
  info(o, std::string("deleted:   ") + std::to_string(r.deleted.packs) + " unused packs " + (dry_run ? "would be " : "") + "deleted; " +
              std::to_string(r.deleted.blobs) + " unused blobs (" + human_bytes(r.deleted.bytes) + ") dropped");
  if (r.unindexed.packs)
    info(o, "unindexed: " + std::to_string(r.unindexed.packs) + " packs (" + human_bytes(r.unindexed.bytes) +
                ") left by interrupted backups " + would + "deleted");
  if (r.leftovers.packs)
    info(o, "temporary: " + std::to_string(r.leftovers.packs) + " files (" + human_bytes(r.leftovers.bytes) +
                ") left by writes that never finished " + would + "removed");
  if (r.versions_removed.packs)
    info(o, "versions:  " + std::to_string(r.versions_removed.packs) + " versions (" + human_bytes(r.versions_removed.bytes) +
                ") the store's Object Lock kept of deleted objects " +
                (dry_run ? "would be removed where their retention has ended" : "removed"));
  // Versions still retained: prune's own warning says so (the controller logs the same).
  info(o, "unused space left: " + human_bytes(r.unused_bytes_after));
  if (dry_run)
    info(o, "dry run: " + human_bytes(r.bytes_freed) + " would be freed; nothing was changed");
  else if (!r.changed)
    info(o, "nothing to prune");
  else
    info(o, human_bytes(r.bytes_freed) + " freed");
}

struct PruneArgs {
  bool dry_run = false;
  double max_unused = 5;
};

}  // namespace

int run_prune(repo::Repository& r, const RepoOptions& o, double max_unused, bool dry_run, const std::set<std::string>& ignore,
              const std::atomic<bool>* cancel, const repo::Lock* lock) {
  repo::PruneOptions po;
  if (lock) po.check_lock = [lock] { lock->check("deleting data"); };
  po.max_unused_percent = max_unused;
  po.dry_run = dry_run;
  po.ignore_snapshots = ignore;
  po.cancel = cancel;
  po.warn = [](const std::string& m) { warn(m); };
  double last = -10;
  po.progress = [&o, &last](const repo::Progress& p) {
    if (o.json) {
      print_json({{"message_type", "status"},
                  {"action", "prune"},
                  {"phase", p.phase},
                  {"packs_done", p.files_done},
                  {"packs_total", p.files_total},
                  {"bytes_done", p.bytes_done},
                  {"bytes_total", p.bytes_total},
                  {"elapsed_s", p.elapsed_s},
                  {"current", p.current}});
      return;
    }
    if (o.quiet || p.phase == "done") return;
    // One line a second at most; always the last one.
    if (p.elapsed_s - last < 1 && p.files_done != p.files_total) return;
    last = p.elapsed_s;
    std::fprintf(stderr, "repacking: %llu/%llu packs, %s/%s\n", (unsigned long long)p.files_done, (unsigned long long)p.files_total,
                 human_bytes(p.bytes_done).c_str(), human_bytes(p.bytes_total).c_str());
  };
  repo::PruneResult res = repo::prune(r, po);
  print_result(o, res, dry_run);
  return kExitOk;
}

void register_repo_prune(CLI::App& repo, Context& ctx) {
  static PruneArgs a;
  auto* cmd = repo.add_subcommand("prune", "delete data no snapshot refers to; repack partly used packs");
  add_repo_options(cmd, ctx.opts);
  cmd->add_flag("--dry-run,-n", a.dry_run, "show what would be deleted and repacked; change nothing");
  cmd->add_option("--max-unused", a.max_unused, "tolerate this percentage of unused space before repacking (default 5)")
      ->check(CLI::Range(0.0, 100.0));
  cmd->callback([&ctx] {
    ctx.action = [&ctx]() -> int {
      const auto& o = ctx.opts;
      auto r = open_repo(o, false);  // prune reads every index file itself and refuses on a bad one
      // Credentials that cannot delete (an agent's) fail here, exit code 14,
      // before a lock or a repacked pack is written, whatever there is to prune.
      if (!a.dry_run) repo::check_may_delete(r->backend());
      auto lock = lock_repo(*r, o, repo::LockKind::exclusive, "prune");
      return run_prune(*r, o, a.max_unused, a.dry_run, {}, &ctx.cancel, lock.get());
    };
  });
}

}  // namespace cairn::ctl
