// The opensearch driver's restore: identity and health refusals, the stored
// repository put back beside snapshot_path, the plan applied through the
// API, health and counts checked; and the put-back of an interrupted one.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>

#include "agent/drivers/opensearch/internal.h"
#include "agent/drivers/opensearch/opensearch_driver.h"
#include "agent/drivers/repo_progress.h"
#include "agent/failpoint.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::opensearch {

namespace fs = std::filesystem;
namespace v1 = cairn::v1;
using namespace std::chrono_literals;
using namespace detail;

nlohmann::json RestorePlan::to_json() const {
  return {{"repository", repository}, {"location", location},         {"snapshot", snapshot}, {"remove", remove},
          {"restore", restore},       {"global_state", global_state}, {"rollback", rollback}};
}

RestorePlan RestorePlan::from_json(const nlohmann::json& j) {
  RestorePlan p;
  p.repository = j.at("repository").get<std::string>();
  p.location = j.at("location").get<std::string>();
  p.snapshot = j.at("snapshot").get<std::string>();
  p.remove = j.at("remove").get<std::vector<std::string>>();
  p.restore = j.at("restore").get<std::vector<std::string>>();
  p.global_state = j.value("global_state", false);
  p.rollback = j.value("rollback", "");
  return p;
}

std::vector<v1::Reason> OpenSearchDriver::identity_checks(const nlohmann::json& meta, bool force_identity) const {
  std::vector<v1::Reason> out;
  ClusterInfo ci;
  try {
    ci = cluster_info(api_);
  } catch (const Error& e) {
    out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED, std::string("the cluster does not answer usably: ") + e.what(), component_));
    return out;
  }
  if (ci.health == "red")
    out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED,
                              "cluster '" + ci.name +
                                  "' is red (a primary shard is unassigned): bring its nodes back before a restore; "
                                  "nothing was changed",
                              component_));
  std::string name = meta.value("cluster_name", ""), uuid = meta.value("cluster_uuid", "");
  if (!force_identity && (name != ci.name || uuid != ci.uuid))
    out.push_back(make_reason(v1::ERROR_CODE_PREFLIGHT_FAILED,
                              "the snapshot is of cluster '" + name + "' (uuid " + uuid + "), this is cluster '" + ci.name + "' (uuid " +
                                  ci.uuid + "): restore with --force-identity to restore it onto this cluster; nothing was changed",
                              component_));
  return out;
}

std::vector<v1::Reason> OpenSearchDriver::restore_preflight(TaskContext& ctx, const RestoreSpec& spec) {
  std::vector<v1::Reason> out;
  try {
    auto id = repo::resolve_snapshot(*ctx.repo, spec.snapshot_id);
    auto snap = repo::load_snapshot(*ctx.repo, id);
    snap.id = id;
    if (auto bad = check_snapshot(snap); !bad.empty()) return bad;
    return identity_checks(snap.component, spec.force_identity);
  } catch (const Error& e) {
    out.push_back(make_reason(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, std::string("cannot read the snapshot: ") + e.what(), component_));
  }
  return out;
}

std::string OpenSearchDriver::wait_healthy(const std::vector<std::string>& names, const std::atomic<bool>* cancel) const {
  if (names.empty()) return {};
  auto deadline = std::chrono::steady_clock::now() + kHealthTimeout;
  std::string last;
  while (true) {
    bool all = true;
    try {
      int nodes = api_.ok("GET", "/_cluster/health", nullptr, 30s).value("number_of_nodes", 0);
      const std::string want = nodes <= 1 ? "yellow" : "green";
      for (const auto& part : chunks(names)) {
        auto h = api_.call("GET", "/_cluster/health/" + join(part) + "?wait_for_status=" + want + "&timeout=20s", nullptr, 60s, cancel);
        std::string st = h.body.is_object() ? h.body.value("status", "") : "";
        if (h.status == 408 || (st != "green" && st != want)) {
          all = false;
          last = "indices " + join(part).substr(0, 200) + " are " + (st.empty() ? Api::reason(h) : st) + ", not " + want;
          break;
        }
      }
    } catch (const Error& e) {
      all = false;
      last = e.what();
    }
    if (all) return {};
    if (cancel && cancel->load()) return "cancelled";
    if (std::chrono::steady_clock::now() >= deadline) return last;
    std::this_thread::sleep_for(1s);
  }
}

void OpenSearchDriver::apply_plan(const RestorePlan& plan, bool recovering, const std::atomic<bool>* cancel) const {
  const std::string repo = "/_snapshot/" + plan.repository;
  if (api_.call("GET", repo).status == 404) {
    auto put = api_.call("PUT", repo, {{"type", "fs"}, {"settings", {{"location", plan.location}, {"readonly", true}}}}, 120s);
    if (put.status >= 400)
      throw Error(Errc::io, "registering the stored repository at '" + plan.location + "' failed: " + Api::reason(put) +
                                " (snapshot_path's parent directory must be within path.repo of every node)");
  }
  std::vector<std::string> gone = plan.remove;
  if (recovering) gone.insert(gone.end(), plan.restore.begin(), plan.restore.end());
  std::sort(gone.begin(), gone.end());
  gone.erase(std::unique(gone.begin(), gone.end()), gone.end());
  for (const auto& part : chunks(gone)) {
    auto d = api_.call("DELETE", "/" + join(part) + "?ignore_unavailable=true&expand_wildcards=all", nullptr, 300s, cancel);
    if (d.status >= 400 && d.status != 404) throw Error(Errc::io, "deleting indices " + join(part) + " failed: " + Api::reason(d));
  }
  failpoint("restore.opensearch.deleted");
  if (plan.restore.empty() && !plan.global_state) return;
  nlohmann::json body = {{"indices", plan.restore.empty() ? std::string("-*") : join(plan.restore)},
                         {"include_global_state", plan.global_state},
                         {"include_aliases", true},
                         {"ignore_unavailable", false}};
  auto r = api_.call("POST", repo + "/" + plan.snapshot + "/_restore?wait_for_completion=true", body, kRestoreTimeout, cancel);
  if (r.status >= 400) throw Error(Errc::io, "restoring snapshot '" + plan.snapshot + "' failed: " + Api::reason(r));
  const auto& s = r.body.value("snapshot", nlohmann::json::object());
  if (s.contains("shards") && s["shards"].value("failed", 0) > 0)
    throw Error(Errc::io, "restoring snapshot '" + plan.snapshot + "': " + std::to_string(s["shards"].value("failed", 0)) +
                              " shards failed to restore");
}

std::vector<v1::Reason> OpenSearchDriver::check_counts(const nlohmann::json& recorded, const std::vector<std::string>& only) const {
  std::vector<v1::Reason> out;
  nlohmann::json now = index_stats(true);
  for (const auto& n : only) {
    if (!recorded.contains(n)) continue;
    const auto& want = recorded[n];
    if (!now.contains(n)) {
      out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, "index '" + n + "' of the snapshot is not in the cluster", n));
      continue;
    }
    int64_t wd = want.value("docs", int64_t(-1)), hd = now[n].value("docs", int64_t(-1));
    int64_t wp = want.value("primaries", int64_t(-1)), hp = now[n].value("primaries", int64_t(-1));
    if (wd >= 0 && hd < wd)
      out.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED,
                                "index '" + n + "' holds " + std::to_string(hd) + " documents, the backup recorded " + std::to_string(wd),
                                n));
    if (wp >= 0 && hp != wp)
      out.push_back(
          make_reason(v1::ERROR_CODE_VERIFY_FAILED,
                      "index '" + n + "' has " + std::to_string(hp) + " primary shards, the backup recorded " + std::to_string(wp), n));
  }
  return out;
}

DriverResult OpenSearchDriver::restore(TaskContext& ctx, const RestoreSpec& spec) {
  DriverResult res;
  auto fail = [&](v1::ErrorCode code, const std::string& detail) {
    res.outcome = v1::TASK_OUTCOME_FAILED;
    res.reasons.push_back(make_reason(code, detail, component_));
    return res;
  };
  if (spec.step != v1::RESTORE_STEP_ALL)
    return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + component_ + "' (opensearch) is restored in one task");
  if (!spec.target_name.empty())
    return fail(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + component_ + "' declares no restore target '" + spec.target_name + "'");

  // 1. The snapshot, and the cluster it may go to: nothing changed otherwise.
  std::string id;
  nlohmann::json meta;
  uint64_t need = 0;
  try {
    id = repo::resolve_snapshot(*ctx.repo, spec.snapshot_id);
    auto snap = repo::load_snapshot(*ctx.repo, id);
    snap.id = id;
    need = snapshot_bytes(snap);
    if (auto bad = check_snapshot(snap); !bad.empty()) {
      res.reasons = std::move(bad);
      return res;
    }
    meta = snap.component;
  } catch (const Error& e) {
    return fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, std::string("cannot read the snapshot: ") + e.what());
  }
  if (auto bad = identity_checks(meta, spec.force_identity); !bad.empty()) {
    res.reasons = std::move(bad);
    return res;
  }
  const std::string snap_name = meta["snapshot"].value("name", "");
  const nlohmann::json recorded = meta.value("indices", nlohmann::json::object());

  // 2. The stored repository read out beside snapshot_path (the same
  // filesystem, within path.repo when snapshot_path's parent is).
  const fs::path sp(settings_.snapshot_path);
  // What restores killed before their plan was written left; one with a
  // plan is the agent's next start's to finish (its record is in the journal).
  {
    std::error_code ec;
    const std::string prefix = sp.filename().string() + ".cairn-restore-";
    for (const auto& e : fs::directory_iterator(sp.parent_path(), ec)) {
      std::string n = e.path().filename().string();
      if (n.rfind(prefix, 0) != 0 || e.is_symlink(ec) || !e.is_directory(ec)) continue;
      if (fs::exists(e.path() / kPlanFile, ec)) {
        note(ctx, "'" + e.path().string() + "' holds the plan of an interrupted restore, kept for the agent's next start");
        continue;
      }
      remove_tree(e.path().string());
      note(ctx, "removed '" + e.path().string() + "', left by an earlier restore that did not end");
    }
  }
  const std::string stamp = utc_stamp();
  const std::string staging = settings_.snapshot_path + ".cairn-restore-" + stamp;
  struct StagingGuard {
    std::string path;
    bool keep = false;
    ~StagingGuard() {
      if (!keep) remove_tree(path);
    }
  } guard{staging};
  if (auto p = staging_space_problem(sp.parent_path().string(), need); !p.empty()) return fail(v1::ERROR_CODE_NO_SPACE, p);
  repo::RestoreOptions ro;
  ro.memory_budget = ctx.memory_budget;
  ro.target = staging;
  ro.cancel = ctx.cancel;
  ro.progress = repo_progress(ctx, v1::PHASE_RESTORE);
  repo::RestoreResult rr;
  try {
    rr = repo::restore(*ctx.repo, id, ro);
  } catch (const Error& e) {
    return fail(repository_read_code(e), std::string("reading the snapshot failed, nothing was changed: ") + e.what());
  }
  if (!rr.failures.empty()) {
    for (const auto& f : rr.failures)
      res.reasons.push_back(make_reason(v1::ERROR_CODE_REPOSITORY_CORRUPT, "'" + f.path + "': " + f.reason, f.path));
    return fail(v1::ERROR_CODE_REPOSITORY_CORRUPT,
                std::to_string(rr.failures.size()) + " entries of the snapshot could not be read; nothing was changed");
  }
  res.bytes = rr.bytes_restored;
  res.files = rr.files_restored;

  RestorePlan plan;
  plan.repository = "cairn-restore-" + lower(stamp);
  plan.location = staging + settings_.snapshot_path;
  plan.snapshot = snap_name;
  const std::string rrepo = "/_snapshot/" + plan.repository;
  auto unregister = [&] {
    try {
      (void)api_.call("DELETE", rrepo, nullptr, 60s);
    } catch (const Error&) {
    }
  };

  // 3. What the stored snapshot holds, and what this restore does with it.
  std::vector<std::string> in_snapshot;
  bool had_global = false;
  try {
    auto put = api_.call("PUT", rrepo, {{"type", "fs"}, {"settings", {{"location", plan.location}, {"readonly", true}}}}, 120s);
    if (put.status >= 400)
      return fail(v1::ERROR_CODE_PREFLIGHT_FAILED,
                  "the cluster refused the stored repository put back at '" + plan.location + "': " + Api::reason(put) +
                      " (snapshot_path's parent directory must be within path.repo of every node, shared by all); nothing was changed");
    auto info = api_.call("GET", rrepo + "/" + snap_name, nullptr, 120s);
    if (info.status >= 400 || !info.body.contains("snapshots") || info.body["snapshots"].empty()) {
      unregister();
      return fail(v1::ERROR_CODE_REPOSITORY_CORRUPT,
                  "the stored repository does not hold snapshot '" + snap_name + "': " + Api::reason(info) + "; nothing was changed");
    }
    const auto& si = info.body["snapshots"][0];
    for (const auto& i : si.value("indices", nlohmann::json::array())) in_snapshot.push_back(i.get<std::string>());
    had_global = si.value("include_global_state", false);
  } catch (const Error& e) {
    unregister();
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, std::string(e.what()) + "; nothing was changed");
  }
  std::sort(in_snapshot.begin(), in_snapshot.end());
  nlohmann::json now;
  try {
    now = index_stats(false);
  } catch (const Error& e) {
    unregister();
    return fail(v1::ERROR_CODE_PREFLIGHT_FAILED, std::string(e.what()) + "; nothing was changed");
  }
  const bool mirror = spec.write_mode != v1::RESTORE_WRITE_MODE_MERGE;
  if (mirror) {
    plan.restore = in_snapshot;
    for (const auto& [n, _] : now.items())
      if (std::binary_search(in_snapshot.begin(), in_snapshot.end(), n) || matches(settings_.indices, n)) plan.remove.push_back(n);
    plan.global_state = had_global && settings_.include_global_state;
  } else {
    for (const auto& n : in_snapshot) {
      if (now.contains(n))
        res.reasons.push_back(
            make_reason(v1::ERROR_CODE_ITEM_SKIPPED,
                        "index '" + n + "' exists in the cluster: kept, not restored (merge restores only absent indices)", n));
      else
        plan.restore.push_back(n);
    }
  }

  // The safety backup this task took (its snapshot's metadata names the task).
  try {
    auto list = api_.call("GET", "/_snapshot/" + settings_.snapshot_repository + "/cairn-*", nullptr, 60s);
    if (list.status == 200 && list.body.contains("snapshots"))
      for (const auto& s : list.body["snapshots"])
        if (s.contains("metadata") && s["metadata"].is_object() && s["metadata"].value("task", "") == ctx.task_id &&
            s["metadata"].value("safety", false) && s.value("state", "") == "SUCCESS")
          plan.rollback = s.value("snapshot", "");
  } catch (const Error& e) {
    note(ctx, std::string("the safety snapshot is not known to the restore's record: ") + e.what());
  }

  // 4. The plan on disk in the staging tree and the restore's record in the
  // journal before the first index goes: an agent killed from here on
  // applies the plan again at its next start.
  {
    std::ofstream f(staging + "/" + kPlanFile, std::ios::trunc);
    f << plan.to_json().dump();
    if (!f.flush()) {
      unregister();
      return fail(v1::ERROR_CODE_IO_ERROR, "cannot write the restore's plan into '" + staging + "'; nothing was changed");
    }
  }
  InPlaceRestore rec = in_place_restore(ctx, stamp, InPlaceRestore::State::swapping);
  rec.scratch = {staging};
  JournalGuard journal(ctx.journal, std::move(rec));
  try {
    journal.write();
  } catch (const Error& e) {
    unregister();
    return fail(v1::ERROR_CODE_IO_ERROR, e.what());
  }
  report_phase(ctx, v1::PHASE_RESTORE, plan.snapshot, rr.bytes_restored, rr.bytes_restored);
  try {
    apply_plan(plan, false, ctx.cancel);
  } catch (const Error& e) {
    // Indices may be gone: put back at once what the next start would
    // (recover_interrupted_restore); when that fails too, the record and
    // the staged tree stay and the agent's next start tries again.
    const auto code = e.code() == Errc::interrupted ? v1::ERROR_CODE_CANCELLED : v1::ERROR_CODE_IO_ERROR;
    std::string detail = e.what();
    try {
      detail += "; " + recover_interrupted_restore(journal.record());
    } catch (const Error& e2) {
      journal.keep();
      guard.keep = true;
      detail += std::string("; putting it right failed too (") + e2.what() + "): the plan is kept in '" + staging +
                "' and the agent's next start applies it";
    }
    return fail(code, detail);
  }

  // 5. Health and counts as recorded.
  report_phase(ctx, v1::PHASE_VERIFY, settings_.url);
  if (auto why = wait_healthy(plan.restore, ctx.cancel); !why.empty()) {
    unregister();
    return fail(v1::ERROR_CODE_VERIFY_FAILED,
                "the restored indices did not become healthy within " + std::to_string(kHealthTimeout.count()) + " s: " + why);
  }
  try {
    for (auto& r : check_counts(recorded, plan.restore)) res.reasons.push_back(std::move(r));
  } catch (const Error& e) {
    res.reasons.push_back(make_reason(v1::ERROR_CODE_VERIFY_FAILED, std::string("counting the restored documents failed: ") + e.what()));
  }
  unregister();
  nlohmann::json m = {{"snapshot", plan.snapshot},
                      {"restored_indices", plan.restore},
                      {"removed_indices", plan.remove},
                      {"global_state", plan.global_state},
                      {"mode", mirror ? "mirror" : "merge"}};
  res.metadata = m;
  bool verify_failed =
      std::any_of(res.reasons.begin(), res.reasons.end(), [](const v1::Reason& r) { return r.code() == v1::ERROR_CODE_VERIFY_FAILED; });
  res.outcome = verify_failed ? v1::TASK_OUTCOME_FAILED : res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_PARTIAL;
  return res;
}

std::string OpenSearchDriver::recover_interrupted_restore(const InPlaceRestore& r) {
  if (r.scratch.empty()) throw Error(Errc::invalid_input, "the restore's record names no staging directory");
  const std::string staging = r.scratch.front();
  std::ifstream f(staging + "/" + kPlanFile);
  if (!f) {
    // Killed before the plan was written: no index was touched.
    remove_tree(staging);
    return "no index had been changed; the staged copy '" + staging + "' was removed";
  }
  RestorePlan plan;
  try {
    plan = RestorePlan::from_json(nlohmann::json::parse(f));
  } catch (const std::exception& e) {
    throw Error(Errc::corrupt, "the restore's plan in '" + staging + "' cannot be read: " + e.what());
  }
  std::vector<std::string> touched = plan.remove;
  touched.insert(touched.end(), plan.restore.begin(), plan.restore.end());
  std::sort(touched.begin(), touched.end());
  touched.erase(std::unique(touched.begin(), touched.end()), touched.end());
  std::string done;
  RestorePlan run = plan;
  bool recovering = true;
  if (!plan.rollback.empty()) {
    // Put back: every index the restore touched as the safety snapshot holds it.
    const std::string live = "/_snapshot/" + settings_.snapshot_repository;
    auto info = api_.ok("GET", live + "/" + plan.rollback, nullptr, 120s);
    std::vector<std::string> had;
    if (info.contains("snapshots") && !info["snapshots"].empty())
      for (const auto& i : info["snapshots"][0].value("indices", nlohmann::json::array()))
        if (std::binary_search(touched.begin(), touched.end(), i.get<std::string>())) had.push_back(i.get<std::string>());
    run.repository = settings_.snapshot_repository;
    run.location = settings_.snapshot_path;
    run.snapshot = plan.rollback;
    run.remove = touched;
    run.restore = had;
    recovering = false;
    done = "the " + std::to_string(had.size()) + " indices it had touched are back as the safety snapshot '" + plan.rollback +
           "' holds them (taken before the restore)";
  } else {
    done = "no safety backup had been taken, so the restore of snapshot '" + plan.snapshot +
           "' was finished instead: " + std::to_string(plan.restore.size()) + " indices restored";
  }
  apply_plan(run, recovering, nullptr);
  std::string why = wait_healthy(run.restore, nullptr);
  (void)api_.call("DELETE", "/_snapshot/" + plan.repository, nullptr, 60s);
  remove_tree(staging);
  return done + (why.empty() ? "" : " (not yet healthy: " + why + ")");
}

}  // namespace cairn::agent::opensearch
