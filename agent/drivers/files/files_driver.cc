#include "agent/drivers/files/files_driver.h"

#include <fnmatch.h>
#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <unordered_set>

#include "agent/drivers/files/mirror.h"
#include "agent/drivers/repo_progress.h"
#include "agent/failpoint.h"
#include "common/repo/archiver.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::files {

namespace v1 = cairn::v1;

namespace {

bool has_glob(const std::string& p) { return p.find_first_of("*?[") != std::string::npos; }

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

// A declared path is a glob only when it has glob characters and does not
// name an existing file as written: "/srv/app[1]/data" that exists is taken
// literally, as a shell does when the pattern matches nothing else.
bool is_pattern(const std::string& p) { return has_glob(p) && !exists(p); }

bool under(const std::string& sp, const std::string& p) {
  return sp == p || (sp.size() > p.size() && sp.compare(0, p.size(), p) == 0 && sp[p.size()] == '/');
}

// restore_glob_matches() reads its list as fnmatch patterns: a literal path
// must not turn into a pattern because a name contains '*', '?' or '['.
std::string escape_glob(const std::string& p) {
  std::string out;
  for (char c : p) {
    if (c == '*' || c == '?' || c == '[' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

FilesDriver::FilesDriver(std::string component, Settings settings) : component_(std::move(component)), settings_(std::move(settings)) {}

DriverCaps FilesDriver::capabilities() const {
  DriverCaps c;
  c.backup = true;
  c.restore = true;
  c.restore_to_alternate = !settings_.restore_to.empty();
  if (c.restore_to_alternate) c.restore_targets = {settings_.restore_to_name};
  c.needs_service_stop = false;
  c.safety_backup = true;
  return c;
}

bool FilesDriver::has_restore_target(const std::string& name) const {
  return !settings_.restore_to.empty() && name == settings_.restore_to_name;
}

std::vector<std::string> FilesDriver::expand_paths() const {
  std::set<std::string> out;
  for (const auto& p : settings_.paths) {
    if (!is_pattern(p)) {
      out.insert(p);
      continue;
    }
    glob_t g{};
    if (::glob(p.c_str(), 0, nullptr, &g) == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) out.insert(g.gl_pathv[i]);
    ::globfree(&g);
  }
  return {out.begin(), out.end()};
}

bool FilesDriver::covers(const std::string& sp) const {
  if (sp.empty() || sp[0] != '/') return false;
  for (const auto& p : settings_.paths) {
    if (has_glob(p) && ::fnmatch(p.c_str(), sp.c_str(), FNM_PATHNAME | FNM_PERIOD) == 0) return true;
    if (under(sp, p)) return true;  // literally, also for a path with glob characters in its name
  }
  // A safety snapshot of the alternative target holds its paths: restoring it
  // in place writes only there.
  return !settings_.restore_to.empty() && under(sp, settings_.restore_to);
}

std::vector<std::string> FilesDriver::config_warnings() const {
  std::vector<std::string> out;
  for (const auto& p : settings_.paths) {
    if (has_glob(p)) {
      glob_t g{};
      int rc = ::glob(p.c_str(), GLOB_NOSORT, nullptr, &g);
      ::globfree(&g);
      if (rc != 0) out.push_back("component '" + component_ + "': declared glob '" + p + "' matches nothing");
      continue;
    }
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0)
      out.push_back("component '" + component_ + "': declared path '" + p + "' does not exist (" + std::strerror(errno) + ")");
  }
  return out;
}

std::vector<v1::Reason> FilesDriver::preflight(const v1::Task& task) const {
  std::vector<v1::Reason> out;
  const v1::TaskKind kind = task.kind();
  const std::string& target_name = task.options().restore_target();
  if (kind == v1::TASK_KIND_BACKUP) {
    bool any = false;
    for (const auto& p : expand_paths()) {
      struct stat st {};
      if (::lstat(p.c_str(), &st) == 0) any = true;
    }
    if (!any)
      out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, "none of the declared paths of component '" + component_ + "' exists"));
  } else if (kind == v1::TASK_KIND_RESTORE && !target_name.empty() && !has_restore_target(target_name)) {
    out.push_back(
        make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + component_ + "' declares no restore target '" + target_name + "'"));
  }
  return out;
}

// A backup: the declared paths that exist (a missing one is a reason). A
// safety backup: what the restore will overwrite, the declared paths in place
// or the snapshot's paths under the alternative target.
void FilesDriver::snapshot(TaskContext& ctx, SnapshotSink& sink, const SnapshotPurpose& purpose) {
  (void)ctx;
  std::vector<std::string> candidates;
  const bool alternate = purpose.safety && !purpose.target_name.empty();
  if (alternate) {
    if (purpose.restoring)
      for (const auto& p : purpose.restoring->paths) candidates.push_back(settings_.restore_to + p);
  } else {
    candidates = expand_paths();
  }
  bool any = false;
  for (const auto& p : candidates) {
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0) {
      sink.add_path(p);
      any = true;
    } else if (!purpose.safety) {
      int e = errno;
      sink.add_reason(make_reason(v1::ERROR_CODE_ITEM_SKIPPED, "cannot read '" + p + "': " + std::strerror(e), p));
    }
    // A safety backup saves what exists: a path that is not there loses nothing.
  }
  for (const auto& g : settings_.excludes) sink.exclude(g);
  if (!any && !purpose.safety)
    sink.add_reason(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, "none of the declared paths of component '" + component_ + "' exists"));
}

// Every path of the snapshot must lie under what this component declares: the
// controller picks the snapshot, not the paths.
std::vector<v1::Reason> FilesDriver::check_snapshot(const repo::Snapshot& snap) const {
  for (const auto& p : snap.paths)
    if (!covers(p))
      return {make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                          "snapshot '" + snap.id.substr(0, 8) + "' holds '" + p + "', which component '" + component_ +
                              "' does not declare; nothing restored",
                          p)};
  return {};
}

std::string FilesDriver::recover_interrupted_restore(const InPlaceRestore& r) {
  if (!undo_) throw Error(Errc::unsupported, "this agent cannot undo an interrupted files restore (no repository to read from)");
  return undo_(r);
}

DriverResult FilesDriver::restore(TaskContext& ctx, const RestoreSpec& spec) { return restore_within(ctx, spec, nullptr); }

DriverResult FilesDriver::restore_paths(TaskContext& ctx, const std::string& snapshot_id, const std::vector<std::string>& only) {
  RestoreSpec spec;
  spec.snapshot_id = snapshot_id;
  spec.step = v1::RESTORE_STEP_ALL;
  spec.skip_safety_backup = true;
  spec.write_mode = v1::RESTORE_WRITE_MODE_MIRROR;
  return restore_within(ctx, spec, &only);
}

DriverResult FilesDriver::restore_within(TaskContext& ctx, const RestoreSpec& spec, const std::vector<std::string>* only) {
  DriverResult res;
  std::string target;
  if (!spec.target_name.empty()) {
    if (!has_restore_target(spec.target_name)) {
      res.reasons.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                                        "component '" + component_ + "' declares no restore target '" + spec.target_name + "'"));
      return res;
    }
    target = settings_.restore_to;
  }

  // The snapshot must be this component's, and hold nothing outside what the
  // component declares: the controller picks the snapshot, not the paths.
  std::string id;
  repo::Snapshot snap;
  try {
    id = repo::resolve_snapshot(*ctx.repo, spec.snapshot_id);
    snap = repo::load_snapshot(*ctx.repo, id);
  } catch (const Error& e) {
    res.reasons.push_back(
        make_reason(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "snapshot '" + spec.snapshot_id + "' cannot be read: " + e.what()));
    return res;
  }
  std::vector<std::string> includes;
  for (const auto& p : snap.paths) {
    if (!covers(p)) {
      res.reasons.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                                        "snapshot '" + id.substr(0, 8) + "' holds '" + p + "', which component '" + ctx.component +
                                            "' does not declare; nothing restored",
                                        p));
      return res;
    }
    includes.push_back(escape_glob(p));
  }
  // Limited to `only`: where a snapshot path and one of `only` nest, the
  // deeper of the two, so that mirror never reaches below `only` nor past
  // what the snapshot holds. A path of `only` the snapshot does not reach is
  // named (not restored).
  std::vector<std::string> roots = snap.paths;
  bool missed = false;  // a path of `only` the snapshot does not reach
  if (only) {
    roots.clear();
    for (const auto& o : *only) {
      bool reached = false;
      for (const auto& p : snap.paths) {
        if (under(p, o))
          roots.push_back(p), reached = true;
        else if (under(o, p))
          roots.push_back(o), reached = true;
      }
      missed = missed || !reached;
      if (!reached)
        res.reasons.push_back(
            make_reason(v1::ERROR_CODE_ITEM_SKIPPED, "'" + o + "' is not in snapshot '" + id.substr(0, 8) + "': left as it is", o));
    }
    std::sort(roots.begin(), roots.end());
    roots.erase(std::unique(roots.begin(), roots.end()), roots.end());
    includes.clear();
    for (const auto& r : roots) includes.push_back(escape_glob(r));
    if (roots.empty()) {
      res.outcome = v1::TASK_OUTCOME_FAILED;
      return res;
    }
  }

  const bool mirror = spec.write_mode != v1::RESTORE_WRITE_MODE_MERGE;
  std::unordered_set<std::string> keep;
  repo::RestoreOptions ro;
  ro.memory_budget = ctx.memory_budget;
  ro.target = target.empty() ? "/" : target;
  ro.includes = includes;
  ro.overwrite = true;
  ro.progress = repo_progress(ctx, v1::PHASE_RESTORE);
  ro.cancel = ctx.cancel;
  if (mirror) ro.on_entry = [&keep](const std::string& p) { keep.insert(p); };
  repo::RestoreResult rr;
  try {
    if (!target.empty()) mkdir_p(target, 0700);
    rr = repo::restore(*ctx.repo, id, ro);
  } catch (const Error& e) {
    // Failed as a whole, after the safety backup: the result still names it.
    v1::ErrorCode code = e.code() == Errc::corrupt       ? v1::ERROR_CODE_REPOSITORY_CORRUPT
                         : e.code() == Errc::interrupted ? v1::ERROR_CODE_CANCELLED
                         : e.code() == Errc::no_space    ? v1::ERROR_CODE_NO_SPACE
                                                         : v1::ERROR_CODE_IO_ERROR;
    res.reasons.push_back(make_reason(code, std::string("restore failed: ") + e.what()));
    return res;
  }
  // Fault injection (agent/failpoint.h): every file written, the mirror's
  // removals not yet made.
  if (target.empty() && failpoint("restore.files.written") == FailAction::fail) {
    res.outcome = v1::TASK_OUTCOME_FAILED;
    res.reasons.push_back(make_reason(v1::ERROR_CODE_IO_ERROR, "failpoint 'restore.files.written' (CAIRN_FAILPOINTS_FILE)"));
    return res;
  }
  if (std::string left = repo::leftovers_text(rr, ro.target); !left.empty()) note(ctx, left);
  for (const auto& f : rr.failures)
    res.reasons.push_back(make_reason(v1::ERROR_CODE_ITEM_SKIPPED, "could not restore '" + f.path + "': " + f.reason, f.path));
  if (mirror && snap.partial) {
    // The backup could not read some entries: they are absent from its tree
    // (or recorded empty), so "what the snapshot does not hold" would include
    // data that was never backed up. Nothing is removed.
    res.reasons.push_back(
        make_reason(v1::ERROR_CODE_ITEM_SKIPPED, "mirror: entries added since the backup were left in place because snapshot '" +
                                                     id.substr(0, 8) + "' is partial (" + std::to_string(snap.errors.size()) +
                                                     " item(s) could not be read at backup time); nothing was removed"));
  } else if (mirror && !rr.failures.empty()) {
    // Entries under an unreadable part of the snapshot are unknown: removing
    // "what the snapshot does not hold" could remove what it does.
    res.reasons.push_back(make_reason(v1::ERROR_CODE_ITEM_SKIPPED,
                                      "mirror: entries added since the backup were left in place because the restore had "
                                      "failures; run the restore again once they are fixed"));
  } else if (mirror) {
    MirrorSpec ms;
    ms.target = ro.target;
    ms.roots = roots;
    ms.keep = &keep;
    ms.excludes = settings_.excludes;
    ms.cancel = ctx.cancel;
    MirrorResult mr = mirror_prune(ms);
    for (const auto& p : mr.problems)
      res.reasons.push_back(make_reason(v1::ERROR_CODE_ITEM_SKIPPED, "mirror: '" + p.path + "': " + p.reason, p.path));
  }
  res.snapshot_id = id;
  res.manifest_digest = id;
  res.bytes = rr.bytes_restored;
  res.files = rr.files_restored;
  if (rr.failures.empty())
    res.outcome = (mirror && snap.partial) || missed ? v1::TASK_OUTCOME_PARTIAL : v1::TASK_OUTCOME_SUCCEEDED;
  else
    res.outcome = rr.files_restored > 0 ? v1::TASK_OUTCOME_PARTIAL : v1::TASK_OUTCOME_FAILED;
  return res;
}

}  // namespace cairn::agent::files
