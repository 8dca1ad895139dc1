// The controller's repository maintenance worker (maintenance.h).
#include "controller/maintenance.h"

#include <spdlog/spdlog.h>

#include <set>

#include "common/repo/keys.h"
#include "common/repo/lock.h"
#include "common/repo/prune.h"
#include "common/repo/repository.h"
#include "common/repo/storage/backend.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "controller/set_record.h"

namespace cairn::controller {
namespace {

uint64_t pack_bytes(repo::Backend& be) {
  uint64_t total = 0;
  be.list(repo::FileType::pack, [&](const std::string&, uint64_t size) { total += size; });
  return total;
}

}  // namespace

std::unique_ptr<repo::Backend> open_controller_backend(const ControllerConfig::Repository& r) {
  return repo::open_backend(r.path, {.credentials_file = r.credentials_file});
}

std::unique_ptr<repo::Repository> open_controller_repository(const ControllerConfig::Repository& r) {
  auto be = open_controller_backend(r);
  if (!be->size({repo::FileType::config, ""})) throw Error(Errc::no_repo, "no repository at '" + r.path + "'");
  return repo::Repository::open(std::move(be), repo::Secret(repo::Secret::Kind::passphrase, read_secret_file(r.password_file)));
}

Maintenance::Maintenance(std::vector<ControllerConfig::Repository> repositories, std::function<void(const ForgetJob&)> before_prune)
    : repositories_(std::move(repositories)), before_prune_(std::move(before_prune)), worker_([this] { loop(); }) {}

Maintenance::~Maintenance() {
  {
    std::lock_guard g(mu_);
    stop_ = true;
    cancel_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

bool Maintenance::declared(const std::string& repository) const {
  for (const auto& r : repositories_)
    if (r.name == repository) return true;
  return false;
}

bool Maintenance::busy(const std::string& repository) const {
  std::lock_guard g(mu_);
  if (running_ == repository) return true;
  for (const auto& j : queue_)
    if (j.repository == repository) return true;
  return false;
}

void Maintenance::submit(ForgetJob job) {
  {
    std::lock_guard g(mu_);
    queue_.push_back(std::move(job));
  }
  cv_.notify_all();
}

bool Maintenance::yield(const std::string& repository, const std::string& why) {
  std::lock_guard g(mu_);
  bool asked = false;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (it->repository != repository) {
      ++it;
      continue;
    }
    ForgetResult r;
    r.job = std::move(*it);
    r.locked = true;
    r.yielded = true;
    r.error = why + "; the job had not started";
    results_.push_back(std::move(r));
    it = queue_.erase(it);
    asked = true;
  }
  if (running_ == repository && yield_why_.empty()) {
    yield_why_ = why;
    cancel_ = true;
    asked = true;
  }
  return asked;
}

std::vector<std::string> Maintenance::busy_repositories() const {
  std::lock_guard g(mu_);
  std::set<std::string> out;
  if (!running_.empty()) out.insert(running_);
  for (const auto& j : queue_) out.insert(j.repository);
  return {out.begin(), out.end()};
}

std::vector<ForgetResult> Maintenance::take_results() {
  std::lock_guard g(mu_);
  return std::exchange(results_, {});
}

std::optional<uint64_t> Maintenance::size_of(const std::string& repository) const {
  std::lock_guard g(mu_);
  auto it = sizes_.find(repository);
  if (it == sizes_.end()) return std::nullopt;
  return it->second;
}

void Maintenance::measure_soon(const std::string& repository) {
  if (!declared(repository)) return;
  {
    std::lock_guard g(mu_);
    if (!measure_due_.insert(repository).second) return;
  }
  cv_.notify_all();
}

void Maintenance::measure(const ControllerConfig::Repository& r) {
  try {
    auto be = open_controller_backend(r);
    uint64_t size = pack_bytes(*be);
    std::lock_guard g(mu_);
    sizes_[r.name] = size;
  } catch (const std::exception& e) {
    spdlog::warn("repository '{}': cannot measure its size: {}", r.name, e.what());
  }
  std::lock_guard g(mu_);
  measured_at_[r.name] = std::chrono::steady_clock::now();
}

void Maintenance::measure_all() {
  for (const auto& r : repositories_) measure(r);
}

void Maintenance::loop() {
  using Clock = std::chrono::steady_clock;
  measure_all();
  auto next_all = Clock::now() + std::chrono::minutes(10);
  std::unique_lock g(mu_);
  for (;;) {
    // Sizes are measured again every 10 minutes (backups add data between
    // prunes), and a repository a backup ended in once kMeasureAfterBackup
    // passed since its last measurement.
    auto due_at = [&](const std::string& r) {
      auto it = measured_at_.find(r);
      return it == measured_at_.end() ? Clock::time_point{} : it->second + kMeasureAfterBackup;
    };
    auto wake = next_all;
    for (const auto& r : measure_due_) wake = std::min(wake, due_at(r));
    size_t due = measure_due_.size();
    if (!cv_.wait_until(g, wake, [&] { return stop_ || !queue_.empty() || measure_due_.size() != due; })) {
      std::vector<std::string> now_due;
      if (Clock::now() >= next_all) {
        measure_due_.clear();
        next_all = Clock::now() + std::chrono::minutes(10);
        g.unlock();
        measure_all();
        g.lock();
        continue;
      }
      for (auto it = measure_due_.begin(); it != measure_due_.end();) {
        if (Clock::now() >= due_at(*it)) {
          now_due.push_back(*it);
          it = measure_due_.erase(it);
        } else {
          ++it;
        }
      }
      g.unlock();
      for (const auto& r : repositories_)
        if (std::find(now_due.begin(), now_due.end(), r.name) != now_due.end()) measure(r);
      g.lock();
      continue;
    }
    if (stop_) return;
    if (queue_.empty()) continue;  // measure_soon woke it
    ForgetJob job = std::move(queue_.front());
    queue_.pop_front();
    running_ = job.repository;
    yield_why_.clear();
    cancel_ = false;  // stop_ is false here, and both are set together under mu_
    g.unlock();
    ForgetResult r = run(job);
    g.lock();
    if (r.interrupted && !yield_why_.empty() && !stop_) {
      // Stopped to give way: a later turn's work.
      r.locked = true;
      r.yielded = true;
      r.error = yield_why_ + "; " + r.error;
    }
    running_.clear();
    yield_why_.clear();
    if (r.size_after) sizes_[job.repository] = r.size_after;
    results_.push_back(std::move(r));
  }
}

ForgetResult Maintenance::run(const ForgetJob& job) {
  ForgetResult out;
  out.job = job;
  const ControllerConfig::Repository* decl = nullptr;
  for (const auto& r : repositories_)
    if (r.name == job.repository) decl = &r;
  if (!decl) {
    out.error = "repository '" + job.repository + "' is not declared in the controller's configuration";
    return out;
  }
  bool pruning = false;
  try {
    auto r = open_controller_repository(*decl);
    auto warn = [name = decl->name](const std::string& m) { spdlog::warn("repository '{}': {}", name, m); };
    // No waiting: a backup holding its shared lock makes this a later turn's work.
    auto lock = repo::Lock::acquire(*r, repo::LockKind::exclusive, "controller: retention", std::chrono::seconds(0), warn);
    for (const auto& p : r->load_index())
      spdlog::warn("repository '{}': index file '{}' is unusable: {}", decl->name, p.index_file, p.message);
    out.size_before = pack_bytes(r->backend());
    // Their signed set records go first (controller/set_record.h): a record
    // present says its snapshots must be there (`cairnctl repo check`), so a
    // stop between the two leaves snapshots without a record (the set is
    // expired in the catalog, and the next turn removes them), never a record
    // naming snapshots that are gone.
    lock->check("removing set records");
    remove_set_records(*r, std::set<std::string>(job.set_ids.begin(), job.set_ids.end()));
    std::set<std::string> present;
    for (const auto& name : r->list(repo::FileType::snapshot)) present.insert(name);
    for (const auto& id : job.snapshot_ids) {
      if (!present.count(id)) continue;  // removed before (a forget interrupted after its removals)
      if (cancel_)
        throw Error(Errc::interrupted,
                    "stopped after removing " + std::to_string(out.snapshots_removed) + " snapshot(s); the rest stay until the next turn");
      lock->check("removing snapshots");
      r->backend().remove({repo::FileType::snapshot, id});
      ++out.snapshots_removed;
    }
    if (before_prune_) before_prune_(job);
    repo::PruneOptions po;
    po.warn = warn;
    po.cancel = &cancel_;
    po.check_lock = [&] { lock->check("pruning"); };
    pruning = true;
    auto pr = repo::prune(*r, po);
    out.packs_deleted = pr.deleted.packs + pr.repacked.packs + pr.unindexed.packs;
    out.packs_written = pr.written.packs;
    out.size_after = pack_bytes(r->backend());
    lock->release();
    out.ok = true;
  } catch (const Error& e) {
    out.locked = e.code() == Errc::locked;
    out.interrupted = e.code() == Errc::interrupted;
    out.error = e.what();
  } catch (const std::exception& e) {
    out.error = e.what();
  }
  // The prune's own words ("no pack or index was changed") are about the
  // packs; what came before it did change the repository.
  if (!out.ok && out.snapshots_removed && pruning)
    out.error = "removed " + std::to_string(out.snapshots_removed) + " snapshot(s), then: " + out.error;
  return out;
}

}  // namespace cairn::controller
