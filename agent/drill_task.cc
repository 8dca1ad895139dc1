// A drill task (drill_task.h; docs/drills.md): the snapshots restored into
// a sandbox (agent/sandbox/sandbox.h) under the disk budget and the
// deadline, then the driver's own drill (DriverDrill, agent/driver.h; its
// code in agent/drivers/<name>/drill.cc) run on them, and the verdict.
#include "agent/drill_task.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "agent/drill_paths.h"
#include "agent/drill_support.h"
#include "agent/sandbox/sandbox.h"
#include "common/repo/repository.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"

namespace cairn::agent {

namespace v1 = cairn::v1;
namespace fs = std::filesystem;

namespace drill_internal {

using Report = DrillReport;

// What a drill's reasons say about the backup (docs/drills.md § Outcomes):
// "proven" with none; "not_run" when one says the drill could not run here
// (the drill host's disk or deadline, a cancel, something this agent or
// its configuration cannot do): that proves nothing either way; else
// "failed": the backup did not restore or did not check out.
std::string drill_verdict(const std::vector<v1::Reason>& reasons) {
  if (reasons.empty()) return "proven";
  for (const auto& r : reasons)
    if (r.code() == v1::ERROR_CODE_NO_SPACE || r.code() == v1::ERROR_CODE_CANCELLED || r.code() == v1::ERROR_CODE_UNSUPPORTED_TASK)
      return "not_run";
  return "failed";
}

// What the restore put in the sandbox.
struct Restored {
  uint64_t files = 0, bytes = 0;
};

bool restore_into(TaskContext& ctx, const std::string& snapshot_id, const std::string& target, const std::atomic<bool>* cancel, Report& rep,
                  Restored& out) {
  repo::RestoreOptions ro;
  ro.target = target;
  ro.memory_budget = ctx.memory_budget;
  ro.cancel = cancel;
  if (ctx.progress)
    ro.progress = [&ctx](const repo::Progress& p) {
      ctx.progress(WorkProgress{v1::PHASE_RESTORE, p.bytes_done, p.bytes_total, p.files_done, p.files_total, "drill: restore"});
    };
  repo::RestoreResult rr = repo::restore(*ctx.repo, snapshot_id, ro);
  out.files = rr.files_restored;
  out.bytes = rr.bytes_restored;
  for (size_t i = 0; i < rr.failures.size() && i < 20; ++i)
    rep.fail(v1::ERROR_CODE_REPOSITORY_CORRUPT, "the snapshot does not restore: " + rr.failures[i].path + ": " + rr.failures[i].reason,
             rr.failures[i].path);
  rep.check("restored without a failure", 0, rr.failures.size(), rr.failures.empty());
  return rr.failures.empty();
}
}  // namespace drill_internal

std::vector<std::string> drillable_drivers(const DrillDecl& d) {
  std::vector<std::string> out;
  for (const auto& [name, drill] : d.drills)
    if (drill && drill->tools_missing(d).empty()) out.push_back(name);
  return out;
}

namespace {

// The results of the Kafka cluster drills this agent ran since it started,
// by drill and brokers, with the task that ran each.
std::mutex& shared_drills_mu() {
  static std::mutex mu;
  return mu;
}
std::map<std::string, std::pair<std::string, DriverResult>>& shared_drills() {
  static std::map<std::string, std::pair<std::string, DriverResult>> done;
  return done;
}

}  // namespace

namespace {

// A drill's result: its report as the task's metadata ({"drill": ...}), its
// reasons, SUCCEEDED only without one.
void finish_drill(DriverResult& res, const std::string& driver, DrillReport& rep, const std::string& sandbox) {
  res.metadata = {{"drill",
                   {{"driver", driver},
                    {"phases", rep.phases},
                    {"checks", rep.checks},
                    {"sandbox", sandbox},
                    {"verdict", drill_internal::drill_verdict(rep.reasons)}}}};
  res.reasons = std::move(rep.reasons);
  res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_FAILED;
}

}  // namespace

DriverResult drill_ended_early(const std::string& driver, std::vector<v1::Reason> reasons) {
  DriverResult res;
  DrillReport rep;
  rep.reasons = std::move(reasons);
  finish_drill(res, driver, rep, "");
  return res;
}

DriverResult run_drill(const DrillDecl& d, TaskContext& ctx, const v1::Task& task) {
  using namespace drill_internal;
  DriverResult res;
  Report rep;
  const std::string driver = task.drill_driver();
  auto phase = [&](const std::string& name) {
    if (ctx.progress) ctx.progress(WorkProgress{name == "restore" ? v1::PHASE_RESTORE : v1::PHASE_VERIFY, 0, 0, 0, 0, "drill: " + name});
  };
  auto finish = [&](const std::string& sandbox) {
    finish_drill(res, driver, rep, sandbox);
    return res;
  };
  auto drivers = drillable_drivers(d);
  const DriverDrill* drill = d.drill(driver);
  if (!drill || std::find(drivers.begin(), drivers.end(), driver) == drivers.end()) {
    rep.fail(
        v1::ERROR_CODE_UNSUPPORTED_TASK, "this agent cannot drill driver '" + driver + "' (it drills " + [&] {
          std::string s;
          for (const auto& x : drivers) s += (s.empty() ? "" : ", ") + x;
          return s;
        }() + ")");
    return finish("");
  }
  // A cluster drill (Kafka's brokers): each member's task names them all;
  // the first runs the cluster, the others report its result (the key: the
  // drill and its members). Another agent start runs it again.
  const bool cluster = drill->cluster_drill();
  std::vector<std::string> wanted = {task.snapshot().snapshot_id()};
  if (cluster && !task.drill_members().empty()) {
    wanted.clear();
    for (const auto& m : task.drill_members()) wanted.push_back(m.snapshot_id());
  }
  // Its companion (Kafka in ZooKeeper mode: the set's ZooKeeper snapshot),
  // restored last, beside them.
  const size_t brokers = wanted.size();
  if (cluster && task.drill_zookeeper_size() > 1) {
    rep.fail(v1::ERROR_CODE_UNSUPPORTED_TASK,
             "the drill names " + std::to_string(task.drill_zookeeper_size()) + " ZooKeeper snapshots for one Kafka cluster; it takes one");
    return finish("");
  }
  if (cluster && task.drill_zookeeper_size() == 1) wanted.push_back(task.drill_zookeeper(0).snapshot_id());
  std::string shared_key;
  if (cluster && wanted.size() > 1) {
    std::vector<std::string> sorted = wanted;
    std::sort(sorted.begin(), sorted.end());
    shared_key = task.restore_id();
    for (const auto& w : sorted) shared_key += "|" + w;
    std::lock_guard lk(shared_drills_mu());
    auto& done = shared_drills();
    if (auto it = done.find(shared_key); it != done.end()) {
      DriverResult copy = it->second.second;
      copy.metadata["drill"]["shared_with_task"] = it->second.first;
      return copy;
    }
  }
  std::vector<repo::Snapshot> snaps;
  for (const auto& want : wanted) {
    try {
      repo::Snapshot s;
      std::string id = repo::resolve_snapshot(*ctx.repo, want);
      s = repo::load_snapshot(*ctx.repo, id);
      s.id = id;
      snaps.push_back(std::move(s));
    } catch (const Error& e) {
      rep.fail(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "snapshot '" + want + "' cannot be read: " + e.what());
      return finish("");
    }
  }
  const repo::Snapshot& snap = snaps.front();
  const std::string& snapshot_id = snap.id;
  // The disk budget, before anything is written: what the driver's drill
  // needs for these snapshots.
  const uint64_t need = drill->disk_needed(snaps);
  if (auto why = disk_refusal(d, need, drill_root_free_bytes(d)); !why.empty()) {
    rep.fail(v1::ERROR_CODE_NO_SPACE, why);
    return finish("");
  }

  // The deadline: everything the drill waits on watches this flag.
  Deadline deadline(std::chrono::seconds(d.deadline_seconds), ctx.cancel);
  const std::atomic<bool>& stop = deadline.stop();

  Sandbox box(d, task.task_id());
  try {
    if (auto why = box.bound(); !why.empty())
      throw Error(Errc::unsupported, "the drill's sandbox cannot be bounded: " + why +
                                         "; give the agent a writable cgroup hierarchy (systemd: Delegate=yes) or set "
                                         "[drill] memory_max = \"none\" to accept an unbounded sandbox");
    auto t = Clock::now();
    phase("restore");
    Restored restored;
    const std::string root = box.dir() + "/restored";
    std::vector<std::string> roots = {root};
    bool ok = true;
    if (snaps.size() == 1) {
      ok = restore_into(ctx, snapshot_id, root, &stop, rep, restored);
    } else {
      roots.clear();
      for (size_t i = 0; i < snaps.size() && ok; ++i) {
        roots.push_back(root + "/" + std::to_string(i));
        Restored one;
        ok = restore_into(ctx, snaps[i].id, roots.back(), &stop, rep, one);
        restored.files += one.files;
        restored.bytes += one.bytes;
      }
    }
    rep.phases["restore"] = seconds_since(t);
    res.bytes = restored.bytes;
    res.files = restored.files;
    // A server that runs on the host's file system (not confined to the
    // sandbox as root of a mount namespace, as the PostgreSQL and HAProxy
    // drills are) would follow the restored tree's links as root: none may
    // lead out of the sandbox. The files drill follows none.
    if (ok && drill->runs_on_host_files()) {
      std::vector<std::string> out;
      for (const auto& r : roots)
        for (auto& l : links_out_of(r)) out.push_back(std::move(l));
      if (!out.empty()) {
        std::string list;
        for (size_t i = 0; i < out.size() && i < 5; ++i) list += (i ? ", " : "") + out[i];
        rep.fail(v1::ERROR_CODE_VERIFY_FAILED, "the snapshot holds " + std::to_string(out.size()) + (out.size() >= 10 ? " or more" : "") +
                                                   " symbolic link(s) leading out of the drill's sandbox (" + list +
                                                   "); a drill never follows them, and nothing was started");
        ok = false;
      } else {
        rep.check("no symbolic link leads out of the sandbox", 0, 0, true);
      }
    }
    if (ok) {
      DrillRun run{d, box, ctx, snaps, roots, brokers, rep, &stop, phase};
      if (!drill->starts_servers()) {
        drill->run(run);
      } else {
        in_own_network([&] {
          try {
            drill->run(run);
          } catch (...) {
            box.kill_all();  // while this thread (their parent) still runs
            throw;
          }
          box.kill_all();
        });
      }
    }
  } catch (const Error& e) {
    rep.fail(e.code() == Errc::interrupted   ? v1::ERROR_CODE_CANCELLED
             : e.code() == Errc::unsupported ? v1::ERROR_CODE_UNSUPPORTED_TASK
                                             : v1::ERROR_CODE_VERIFY_FAILED,
             e.what());
  } catch (const std::exception& e) {
    // Not one of cairn's errors (a file system or JSON exception a driver's
    // drill let through): the drill still ends with its report, the
    // sandbox torn down, and the failure named.
    rep.fail(v1::ERROR_CODE_INTERNAL, std::string("the drill failed unexpectedly: ") + e.what());
  }
  // Stopped: that is the reason, named first; what failed after it (a
  // server asked while it was being stopped) follows.
  if (deadline.passed())
    rep.reasons.insert(rep.reasons.begin(),
                       make_reason(v1::ERROR_CODE_CANCELLED, "the drill ran past its deadline of " + std::to_string(d.deadline_seconds) +
                                                                 " s ([drill] deadline_seconds) and was stopped; it proved "
                                                                 "nothing either way (raise deadline_seconds)"));
  else if (stop)
    rep.reasons.insert(rep.reasons.begin(), make_reason(v1::ERROR_CODE_CANCELLED, "the drill was cancelled"));
  const std::string where = box.dir();
  box.teardown();
  DriverResult out = finish(where);
  if (!shared_key.empty() && !stop) {
    out.metadata["drill"]["brokers"] = brokers;
    std::lock_guard lk(shared_drills_mu());
    auto& done = shared_drills();
    if (done.size() >= 16) done.clear();
    done[shared_key] = {task.task_id(), out};
  }
  return out;
}

}  // namespace cairn::agent