#include "agent/task_runner.h"

#include <chrono>

#include <spdlog/spdlog.h>

#include "agent/config.h"
#include "common/repo/backend.h"
#include "common/repo/lock.h"
#include "common/repo/repository.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/terminal_text.h"

namespace cairn::agent {

namespace v1 = cairn::v1;

namespace {

int64_t now_s() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}
int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

v1::ErrorCode code_for(Errc e, bool restore) {
  switch (e) {
    case Errc::io: return v1::ERROR_CODE_IO_ERROR;
    case Errc::not_found: return restore ? v1::ERROR_CODE_SNAPSHOT_NOT_FOUND : v1::ERROR_CODE_REPOSITORY_ERROR;
    case Errc::corrupt: return v1::ERROR_CODE_REPOSITORY_CORRUPT;
    case Errc::locked: return v1::ERROR_CODE_LOCKED;
    case Errc::no_space: return v1::ERROR_CODE_NO_SPACE;
    case Errc::interrupted: return v1::ERROR_CODE_CANCELLED;
    case Errc::wrong_key:
    case Errc::no_repo:
    case Errc::unsupported: return v1::ERROR_CODE_REPOSITORY_ERROR;
    default: return v1::ERROR_CODE_INTERNAL;
  }
}

struct OpenRepo {
  std::unique_ptr<repo::Repository> repo;
  std::unique_ptr<repo::Lock> lock;
};

// A restore only reads the repository (its safety backup writes, and fails
// clearly on its own when it cannot): on a read-only repository (a mounted
// copy, a WORM target, a full disk) it goes on without a lock, with a warning.
OpenRepo open_repository(const RepositoryDecl& d, const std::string& purpose, bool reads_only) {
  // The mode is checked again: the file may have changed since the start.
  std::string why = check_secret_file_mode(d.password_file);
  if (!why.empty()) throw Error(Errc::invalid_input, "password file of repository '" + d.name + "': " + why);
  auto be = repo::make_fs_backend(d.path);
  if (!be->size({repo::FileType::config, ""}))
    throw Error(Errc::no_repo, "no repository at '" + d.path + "' (declared as '" + d.name + "')");
  OpenRepo o;
  o.repo = repo::Repository::open(std::move(be), repo::Secret(repo::Secret::Kind::passphrase, read_secret_file(d.password_file)));
  for (const auto& p : o.repo->load_index())
    spdlog::warn("repository '{}': index file '{}' is unusable: {}", d.name, p.index_file, p.message);
  auto warn = [name = d.name](const std::string& m) { spdlog::warn("repository '{}': {}", name, m); };
  if (reads_only)
    o.lock = repo::lock_for_reading(*o.repo, purpose, std::chrono::seconds(60), warn);
  else
    o.lock = repo::Lock::acquire(*o.repo, repo::LockKind::shared, purpose, std::chrono::seconds(60), warn);
  return o;
}

}  // namespace

TaskRunner::TaskRunner(Emit emit, std::string own_snapshots_path)
    : emit_(std::move(emit)), own_(std::move(own_snapshots_path)) {}

TaskRunner::~TaskRunner() { stop(); }

void TaskRunner::start() {
  std::lock_guard g(mu_);
  if (worker_.joinable()) return;
  stop_ = false;
  worker_ = std::thread([this] { loop(); });
}

void TaskRunner::submit(AdmittedTask t) {
  {
    std::lock_guard g(mu_);
    queue_.push_back(std::move(t));
  }
  cv_.notify_one();
}

void TaskRunner::stop() {
  {
    std::lock_guard g(mu_);
    stop_ = true;
    queue_.clear();
  }
  cancel_ = true;
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

std::vector<std::string> TaskRunner::task_ids() const {
  std::lock_guard g(mu_);
  std::vector<std::string> out;
  if (!running_.empty()) out.push_back(running_);
  for (const auto& t : queue_) out.push_back(t.task.task_id());
  return out;
}

void TaskRunner::loop() {
  for (;;) {
    AdmittedTask t;
    {
      std::unique_lock lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      t = std::move(queue_.front());
      queue_.pop_front();
      running_ = t.task.task_id();
    }
    run(t);
    std::lock_guard g(mu_);
    running_.clear();
  }
}

// The plan's parent, when it is a snapshot this agent wrote (own_snapshots.h).
std::string TaskRunner::own_parent(const RepositoryDecl& repository, const v1::Task& task) const {
  const std::string& id = task.parent_snapshot_id();
  return !id.empty() && own_.contains(repository.path, task.component(), id) ? id : std::string();
}

void TaskRunner::remember_own(const RepositoryDecl& repository, const v1::Task& task, const DriverResult& dr) {
  if (dr.outcome == v1::TASK_OUTCOME_FAILED) return;
  const std::string& id = task.kind() == v1::TASK_KIND_RESTORE ? dr.safety_snapshot_id : dr.snapshot_id;
  if (id.empty()) return;
  std::string why = own_.add(repository.path, task.component(), id);
  if (!why.empty())
    spdlog::warn("task '{}': snapshot '{}' is not recorded as this agent's own ({}); the next backup of component '{}' "
                 "reads every file",
                 task.task_id(), id.substr(0, 8), why, task.component());
}

v1::TaskResult TaskRunner::run(const AdmittedTask& t) {
  const v1::Task& task = t.task;
  const bool restore = task.kind() == v1::TASK_KIND_RESTORE;
  v1::TaskResult result;
  result.set_plan_id(t.plan_id);
  result.set_task_id(task.task_id());
  result.set_started_at(now_s());
  spdlog::info("task '{}': {} of component '{}' starts", task.task_id(), restore ? "restore" : "backup", task.component());

  auto send_progress = [&](const WorkProgress& w) {
    v1::AgentMessage m;
    auto* p = m.mutable_progress();
    p->set_plan_id(t.plan_id);
    p->set_task_id(task.task_id());
    p->set_phase(w.phase);
    p->set_bytes_done(w.bytes_done);
    p->set_bytes_total(w.bytes_total);
    p->set_files_done(w.files_done);
    p->set_files_total(w.files_total);
    p->set_current_item(utf8_or_escaped(w.current));  // file names are bytes; the wire wants UTF-8
    p->set_at(now_ms());
    if (emit_) emit_(std::move(m));
  };

  DriverResult dr;
  try {
    WorkProgress first;
    first.phase = v1::PHASE_PREFLIGHT;
    send_progress(first);
    auto refusals = t.component->driver->preflight(task.kind(), task.options().restore_target());
    if (!refusals.empty()) {
      dr.reasons = std::move(refusals);
    } else {
      OpenRepo o = open_repository(*t.repository, restore ? "restore" : "backup", restore);
      TaskContext ctx;
      ctx.plan_id = t.plan_id;
      ctx.task_id = task.task_id();
      ctx.backup_set_id = task.backup_set_id().empty() ? task.snapshot().backup_set_id() : task.backup_set_id();
      ctx.component = task.component();
      ctx.repo = o.repo.get();
      ctx.check_lock = [lock = o.lock.get(), name = t.repository->name] {
        // No lock: the repository could not be written when the task began.
        if (!lock)
          throw Error(Errc::locked, "no lock is held on repository '" + name +
                                        "' (it could not be written when the task began); no snapshot is written");
        lock->check("writing the snapshot");
      };
      ctx.progress = send_progress;
      ctx.cancel = &cancel_;
      // A note is no failure: logged, and shown as the task's current item.
      ctx.note = [&](const std::string& text) {
        spdlog::warn("task '{}': {}", task.task_id(), text);
        WorkProgress w;
        w.phase = restore ? v1::PHASE_SAFETY_BACKUP : v1::PHASE_PREFLIGHT;
        w.current = "note: " + text;
        send_progress(w);
      };
      ctx.parent_snapshot_id = own_parent(*t.repository, task);
      bool writes = !restore || !task.options().skip_safety_backup();
      if (writes && ctx.parent_snapshot_id.empty() && !task.parent_snapshot_id().empty())
        ctx.note("the parent '" + task.parent_snapshot_id().substr(0, 16) +
                 "' the plan names is not a snapshot this agent wrote to repository '" + t.repository->name +
                 "'; every file is read");
      if (restore) {
        RestoreSpec spec;
        spec.snapshot_id = task.snapshot().snapshot_id();
        spec.target_name = task.options().restore_target();
        spec.skip_safety_backup = task.options().skip_safety_backup();
        spec.safety_task_id = task.options().safety_backup_task_id();
        if (task.options().write_mode() == v1::RESTORE_WRITE_MODE_MERGE) spec.write_mode = v1::RESTORE_WRITE_MODE_MERGE;
        dr = t.component->driver->restore(ctx, spec);
      } else {
        dr = t.component->driver->backup(ctx);
      }
    }
  } catch (const Error& e) {
    dr.outcome = v1::TASK_OUTCOME_FAILED;
    dr.reasons.push_back(make_reason(code_for(e.code(), restore), e.what()));
  } catch (const std::exception& e) {
    dr.outcome = v1::TASK_OUTCOME_FAILED;
    dr.reasons.push_back(make_reason(v1::ERROR_CODE_INTERNAL, std::string("unexpected failure: ") + e.what()));
  }
  // Never report success with a reason attached: a reason means data is missing.
  if (dr.outcome == v1::TASK_OUTCOME_SUCCEEDED && !dr.reasons.empty()) dr.outcome = v1::TASK_OUTCOME_PARTIAL;
  if (dr.outcome == v1::TASK_OUTCOME_UNSPECIFIED) dr.outcome = v1::TASK_OUTCOME_FAILED;
  if (t.repository) remember_own(*t.repository, task, dr);

  result.set_outcome(dr.outcome);
  for (auto& r : dr.reasons) *result.add_reasons() = std::move(r);
  result.set_snapshot_id(dr.snapshot_id);
  result.set_manifest_digest(dr.manifest_digest);
  result.set_safety_snapshot_id(dr.safety_snapshot_id);
  result.set_safety_outcome(dr.safety_outcome);
  result.set_safety_detail(utf8_or_escaped(dr.safety_detail));  // may name a path: bytes, the wire wants UTF-8
  result.set_bytes(dr.bytes);
  result.set_files(dr.files);
  result.set_finished_at(now_s());
  spdlog::info("task '{}': {} ({} reasons){}", task.task_id(),
               dr.outcome == v1::TASK_OUTCOME_SUCCEEDED ? "succeeded" : dr.outcome == v1::TASK_OUTCOME_PARTIAL ? "partial" : "failed",
               result.reasons_size(), result.reasons_size() ? ": " + result.reasons(0).detail() : std::string());
  if (emit_) {
    v1::AgentMessage m;
    *m.mutable_task_result() = result;
    emit_(std::move(m));
  }
  return result;
}

}  // namespace cairn::agent
