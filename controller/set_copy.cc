#include "controller/set_copy.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <memory>

#include "common/repo/copy.h"
#include "common/repo/lock.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "controller/maintenance.h"

namespace cairn::controller {

void SetCopier::run(const Job& job, Result& res) {
  const auto* dst_decl = config_.repository(job.destination);
  if (!dst_decl)
    throw Error(Errc::not_found,
                "the destination repository '" + job.destination + "' is not declared in the controller's configuration ([[repository]])");
  auto warn = [](const std::string& m) { spdlog::warn("copy: {}", m); };
  std::unique_ptr<repo::Repository> dst;
  try {
    dst = open_controller_repository(*dst_decl);
  } catch (const Error& e) {
    throw Error(e.code(), "cannot open the destination repository '" + job.destination + "': " + e.what());
  }
  auto dst_lock =
      repo::Lock::acquire(*dst, repo::LockKind::shared, "controller: copy of set " + job.set_id, std::chrono::seconds(60), warn);
  dst->load_index();
  // What an earlier attempt stored already: set and task tags.
  std::map<std::string, std::string> have;
  for (const auto& s : repo::load_snapshots(*dst)) {
    auto t = repo::tag_values(s);
    if (t["set"] == job.set_id && !t["task"].empty()) have[t["task"]] = s.id;
  }
  std::map<std::string, std::vector<const Task*>> by_source;
  for (const auto& t : job.tasks) by_source[t.repository].push_back(&t);
  // Every source opened and its snapshots read first: what the copy's
  // progress is measured against.
  struct Source {
    std::string name;
    std::unique_ptr<repo::Repository> repo;
    std::unique_ptr<repo::Lock> lock;
    std::vector<std::pair<const Task*, repo::Snapshot>> snapshots;
  };
  std::vector<Source> sources;
  Progress live{job.set_id, job.destination, int64_t(std::time(nullptr)), 0, 0, 0, 0};
  for (const auto& [name, tasks] : by_source) {
    const auto* src_decl = config_.repository(name);
    if (!src_decl)
      throw Error(Errc::not_found, "the set's snapshots are in repository '" + name +
                                       "', which the controller does not declare ([[repository]]): it cannot read them to copy");
    Source src{name, nullptr, nullptr, {}};
    try {
      src.repo = open_controller_repository(*src_decl);
    } catch (const Error& e) {
      throw Error(e.code(), "cannot open the source repository '" + name + "': " + e.what());
    }
    src.lock = repo::lock_for_reading(*src.repo, "controller: copy of set " + job.set_id, std::chrono::seconds(60), warn);
    src.repo->load_index();
    for (const Task* t : tasks) {
      if (auto it = have.find(t->task_id); it != have.end()) {
        res.snapshots[t->task_id] = it->second;
        continue;
      }
      repo::Snapshot s;
      try {
        s = repo::load_snapshot(*src.repo, t->snapshot_id);
      } catch (const Error& e) {
        throw Error(e.code(), "snapshot " + t->snapshot_id.substr(0, 16) + " of task " + t->task_id + " cannot be read from '" + name +
                                  "': " + e.what());
      }
      auto tags = repo::tag_values(s);
      if (tags["set"] != job.set_id || tags["task"] != t->task_id)
        throw Error(Errc::corrupt, "snapshot " + s.id.substr(0, 16) + " in repository '" + name + "' is tagged for set '" + tags["set"] +
                                       "', task '" + tags["task"] + "', not task " + t->task_id + " of set " + job.set_id +
                                       ": the catalog and the repository disagree; not copied");
      live.snapshots_total += 1;
      live.bytes_total += s.summary.value("bytes_total", uint64_t(0));
      src.snapshots.emplace_back(t, std::move(s));
    }
    sources.push_back(std::move(src));
  }
  set_progress(live);
  struct Done {  // no progress once the copy ends, however it ends
    SetCopier& c;
    ~Done() { c.set_progress(std::nullopt); }
  } done{*this};
  uint64_t base = 0;  // the file bytes of the snapshots copied so far
  for (auto& src : sources) {
    repo::SnapshotCopier copier(*src.repo, *dst);
    uint64_t at_start = 0, this_total = 0;  // the copier's file bytes when this snapshot began; its own total
    copier.on_progress([&](const repo::CopyStats& st) {
      live.bytes_done = std::min(live.bytes_total, base + std::min(this_total, st.file_bytes - at_start));
      set_progress(live);
    });
    for (auto& [t, s] : src.snapshots) {
      at_start = copier.stats().file_bytes;
      this_total = s.summary.value("bytes_total", uint64_t(0));
      auto n = copier.copy(s);
      if (src.lock) src.lock->check("copying");
      dst_lock->check("copying");
      res.snapshots[t->task_id] = n.id;
      // A snapshot copied counts whole (a subtree met twice is walked once).
      base += this_total;
      live.bytes_done = std::min(live.bytes_total, base);
      live.snapshots_done += 1;
      set_progress(live);
    }
    res.bytes += copier.stats().bytes;
    res.blobs_new += copier.stats().blobs_new;
    if (src.lock) src.lock->release();
  }
  dst_lock->release();
  res.ok = true;
}

SetCopier::Result SetCopier::run_job(const Job& job) {
  Result res;
  res.job = job;
  try {
    run(job, res);
  } catch (const std::exception& e) {
    res.ok = false;
    res.error = e.what();  // res.snapshots: what it stored before (retention removes those with the set)
  }
  return res;
}

}  // namespace cairn::controller
