#include "agent/task_runner.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>

#include "agent/config.h"
#include "agent/drill_task.h"
#include "agent/drivers/repo_progress.h"
#include "agent/failpoint.h"
#include "agent/restore_verify.h"
#include "common/repo/archiver.h"
#include "common/repo/lock.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/storage/backend.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "common/util/terminal_text.h"

namespace cairn::agent {

namespace v1 = cairn::v1;

std::array<int, 2> stream_pipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw Error(Errc::io, std::string("cannot make a pipe: ") + std::strerror(errno));
  (void)::fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);  // best effort: the default size only costs time
  return {fds[0], fds[1]};
}

namespace {

int64_t now_s() { return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count(); }
int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

v1::ErrorCode code_for(Errc e, bool restore) {
  switch (e) {
    case Errc::io:
      return v1::ERROR_CODE_IO_ERROR;
    case Errc::not_found:
      return restore ? v1::ERROR_CODE_SNAPSHOT_NOT_FOUND : v1::ERROR_CODE_REPOSITORY_ERROR;
    case Errc::corrupt:
      return v1::ERROR_CODE_REPOSITORY_CORRUPT;
    case Errc::locked:
      return v1::ERROR_CODE_LOCKED;
    case Errc::no_space:
      return v1::ERROR_CODE_NO_SPACE;
    case Errc::interrupted:
      return v1::ERROR_CODE_CANCELLED;
    case Errc::wrong_key:
    case Errc::denied:
    case Errc::no_repo:
    case Errc::unsupported:
      return v1::ERROR_CODE_REPOSITORY_ERROR;
    default:
      return v1::ERROR_CODE_INTERNAL;
  }
}

// The restore a restore task belongs to: Task.restore_id; from an older
// controller, the cluster token (which names the restore), else the task
// itself (a whole restore runs in one task).
std::string restore_id_of(const v1::Task& task) {
  if (!task.restore_id().empty()) return task.restore_id();
  auto it = task.options().cluster_options().find("cluster_token");
  if (it != task.options().cluster_options().end() && !it->second.empty()) return it->second;
  return task.task_id();
}

struct OpenRepo {
  std::unique_ptr<repo::Repository> repo;
  std::unique_ptr<repo::Lock> lock;
};

// A backup into a remote store that keeps no earlier versions, with credentials
// that can replace and delete, is refused: one stolen agent credential could
// destroy every backup of every agent there (docs/configuration.md § Protecting
// the repository from its writers). The answer is asked of the store once an hour.
void require_protected_store(const RepositoryDecl& d, repo::Backend& be) {
  if (!be.caps().remote) return;
  static std::mutex mu;
  static std::map<std::string, std::pair<std::chrono::steady_clock::time_point, repo::StoreProtection>> known;
  repo::StoreProtection p;
  {
    std::lock_guard g(mu);
    auto it = known.find(d.name + '\n' + d.path);
    if (it != known.end() && std::chrono::steady_clock::now() - it->second.first < std::chrono::hours(1)) p = it->second.second;
  }
  if (p.state == repo::Protection::not_applicable) {
    p = be.protection();
    std::lock_guard g(mu);
    known[d.name + '\n' + d.path] = {std::chrono::steady_clock::now(), p};
  }
  if (repo::overwrite_safe(p.state)) return;
  const std::string what = "repository '" + d.name + "' is not protected from its writers (" + repo::protection_name(p.state) + ": " +
                           p.detail + "): one stolen agent credential could overwrite or delete every backup in it";
  if (d.accept_unprotected_store) {
    spdlog::warn("{}; backing up anyway (accept_unprotected_store = true)", what);
    return;
  }
  throw Error(Errc::denied, what +
                                ". Enable the bucket's versioning (or Object Lock), or give agents credentials that "
                                "may only create objects (docs/configuration.md § Protecting the repository from its "
                                "writers), or set accept_unprotected_store = true in this [[repository]] to accept the risk");
}

// A restore only reads the repository (its safety backup writes, and fails
// clearly on its own when it cannot): on a read-only repository (a mounted
// copy, a WORM target, a full disk) it goes on without a lock, with a warning.
OpenRepo open_repository(const RepositoryDecl& d, const std::string& purpose, bool reads_only) {
  // The mode is checked again: the file may have changed since the start.
  std::string why = check_secret_file_mode(d.password_file);
  if (!why.empty()) throw Error(Errc::invalid_input, "password file of repository '" + d.name + "': " + why);
  if (!d.credentials_file.empty()) {
    std::string cwhy = check_secret_file_mode(d.credentials_file);
    if (!cwhy.empty()) throw Error(Errc::invalid_input, "credentials file of repository '" + d.name + "': " + cwhy);
  }
  auto be = repo::open_backend(d.path, {.credentials_file = d.credentials_file});
  if (!be->size({repo::FileType::config, ""}))
    throw Error(Errc::no_repo, "no repository at '" + d.path + "' (declared as '" + d.name + "')");
  if (!reads_only) require_protected_store(d, *be);
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

// What a driver's snapshot() handed over, stored by the runner.
class RunnerSink final : public SnapshotSink {
 public:
  void add_path(const std::string& real_path, const std::string& snapshot_path) override {
    if (stream_) throw Error(Errc::invalid_input, "driver: a snapshot holds either one stream or paths, not both");
    std::string as = snapshot_path.empty() ? real_path : snapshot_path;
    paths_.push_back(as);
    if (as != real_path) map_[as] = real_path;
  }
  void exclude(const std::string& glob) override { excludes_.push_back(glob); }
  void immutable_links() override { immutable_ = true; }
  void changes_repaired_by_log() override { repaired_ = true; }
  void pages_under(const std::string& dir) override { page_dirs_.push_back(dir); }
  void shared_with_replicas(double walk_start) override {
    share_ = true;
    walk_start_ = walk_start;
  }
  void add_stream(const std::string& name, std::function<void(int)> producer) override {
    if (stream_ || !paths_.empty()) throw Error(Errc::invalid_input, "driver: a snapshot holds either one stream or paths, not both");
    stream_name_ = name;
    stream_ = std::move(producer);
  }
  void set_metadata(nlohmann::json metadata) override {
    if (!metadata.is_object()) throw Error(Errc::invalid_input, "driver: component metadata must be a JSON object");
    if (metadata.dump().size() > kMaxMetadataBytes)
      throw Error(Errc::invalid_input, "driver: component metadata is over " + std::to_string(kMaxMetadataBytes) + " bytes");
    meta_ = std::move(metadata);
  }
  void add_reason(v1::Reason reason) override { reasons_.push_back(std::move(reason)); }
  void on_done(std::function<void()> cleanup) override { cleanups_.push_back(std::move(cleanup)); }
  void after_store(std::function<std::vector<v1::Reason>()> fn) override { after_.push_back(std::move(fn)); }
  // Runs the after_store functions once; their reasons, and a throw as one.
  std::vector<v1::Reason> run_after_store() {
    std::vector<v1::Reason> out;
    for (auto& fn : after_) {
      try {
        for (auto& r : fn()) out.push_back(std::move(r));
      } catch (const std::exception& e) {
        out.push_back(make_reason(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, e.what()));
      }
    }
    after_.clear();
    return out;
  }

  bool empty() const { return paths_.empty() && !stream_; }
  // Runs the cleanups once, newest first; a failing one is logged, not thrown.
  void cleanup(const std::string& task_id) {
    for (auto it = cleanups_.rbegin(); it != cleanups_.rend(); ++it) {
      try {
        (*it)();
      } catch (const std::exception& e) {
        spdlog::warn("task '{}': cleanup after the snapshot failed: {}", task_id, e.what());
      }
    }
    cleanups_.clear();
  }
  ~RunnerSink() override {
    cleanup("?");
    for (auto& r : run_after_store()) spdlog::warn("after a failed snapshot: {}", r.detail());
  }

  static constexpr size_t kMaxMetadataBytes = 64 << 10;
  std::vector<std::string> paths_, excludes_, page_dirs_;
  std::map<std::string, std::string> map_;
  bool immutable_ = false;
  bool repaired_ = false;
  bool share_ = false;
  double walk_start_ = 0;
  std::string stream_name_;
  std::function<void(int)> stream_;
  nlohmann::json meta_;
  std::vector<v1::Reason> reasons_;
  std::vector<std::function<void()>> cleanups_;
  std::vector<std::function<std::vector<v1::Reason>()>> after_;
};

// Stores what the sink holds as one snapshot. A stream's producer runs on its
// own thread writing into a pipe the archiver reads; the snapshot is written
// only after the producer returned (its checks passed): a stream that ended
// early or failed its hash leaves no snapshot.
repo::BackupResult store(repo::Repository& r, RunnerSink& sink, repo::BackupOptions bo) {
  bo.paths = sink.paths_;
  bo.path_map = sink.map_;
  bo.excludes = sink.excludes_;
  bo.page_dirs = sink.page_dirs_;
  bo.ignore_ctime = sink.immutable_;
  bo.changes_repaired = sink.repaired_;
  bo.share_writes = sink.share_;
  bo.walk_start = sink.walk_start_;
  bo.component_metadata = sink.meta_;
  if (!sink.stream_) {
    auto lock_check = bo.check_lock;
    bo.check_lock = [&] {
      sink.run_before_seal();
      bo.component_metadata = sink.meta_;
      if (lock_check) lock_check();
    };
    return repo::backup(r, bo);
  }
  auto fds = stream_pipe();
  Fd rd(fds[0]);
  std::exception_ptr failed;
  std::thread producer([&, wfd = fds[1]] {
    try {
      sink.stream_(wfd);
    } catch (...) {
      failed = std::current_exception();
    }
    ::close(wfd);  // EOF for the archiver, whatever happened
  });
  auto join = [&] {
    if (producer.joinable()) producer.join();
  };
  bo.stdin_name = sink.stream_name_;
  bo.stdin_fd = rd.get();
  auto lock_check = bo.check_lock;
  bo.check_lock = [&] {
    join();
    if (failed) std::rethrow_exception(failed);
    sink.run_before_seal();
    // What the producer recorded at the stream's end (etcd: the hash, the size).
    bo.component_metadata = sink.meta_;
    if (lock_check) lock_check();
  };
  try {
    repo::BackupResult br = repo::backup(r, bo);
    join();
    return br;
  } catch (...) {
    rd.reset();  // a producer still writing gets EPIPE and stops
    join();
    if (failed) std::rethrow_exception(failed);  // the stream's own reason says more
    throw;
  }
}

// What a catalog rebuilt from the repository needs (docs/operations.md §
// Catalog rebuild): the set, the task, the component, who wrote it, and for a
// backup how many tasks its set has and which policy ran it.
std::vector<std::string> task_tags(const v1::Task& task, const std::string& plan_id, const std::string& set_id,
                                   const std::vector<std::string>& identity) {
  std::vector<std::string> tags = {"cairn", "component:" + task.component(), "task:" + task.task_id(), "plan:" + plan_id};
  if (!set_id.empty()) tags.push_back("set:" + set_id);
  tags.insert(tags.end(), identity.begin(), identity.end());
  if (task.kind() == v1::TASK_KIND_BACKUP && task.set_task_count() > 0)
    tags.push_back("set-tasks:" + std::to_string(task.set_task_count()));
  if (!task.policy().empty()) tags.push_back("policy:" + task.policy());
  if (task.kind() == v1::TASK_KIND_BACKUP && !task.cluster_id().empty()) {
    tags.push_back("cluster:" + task.cluster_id());
    for (const auto& m : task.cluster_members()) tags.push_back("member:" + m);
  }
  return tags;
}

bool has_tag(const repo::Snapshot& s, const std::string& tag) { return std::find(s.tags.begin(), s.tags.end(), tag) != s.tags.end(); }

// The plan's parent when it is a readable snapshot of this component; the
// archiver then checks that it holds the same paths. A parent not used is a
// note, not a failure: the backup reads every file instead.
std::string usable_parent(TaskContext& ctx, const std::string& id) {
  if (id.empty()) return {};
  if (!repo::is_snapshot_id(id)) {
    ctx.note("the named parent is not a snapshot id; every file is read");
    return {};
  }
  try {
    repo::Snapshot p = repo::load_snapshot(*ctx.repo, id);
    if (!has_tag(p, "component:" + ctx.component)) {
      ctx.note("the named parent '" + id.substr(0, 8) + "' is not a snapshot of component '" + ctx.component + "'; every file is read");
      return {};
    }
  } catch (const Error& e) {
    ctx.note("the named parent '" + id.substr(0, 8) + "' cannot be read (" + e.what() + "); every file is read");
    return {};
  }
  return id;
}

}  // namespace

std::string undo_from_safety_snapshot(const InPlaceRestore& r, const std::vector<RepositoryDecl>& repositories, uint64_t memory_budget,
                                      const SafetyRestore& restore) {
  const std::vector<std::string> want = {"safety", "component:" + r.component, "restore-task:" + r.task_id};
  std::string looked;
  for (const auto& decl : repositories) {
    OpenRepo o;
    std::string safety, of;
    std::vector<std::string> paths;
    try {
      o = open_repository(decl, "restore", true);
      for (const auto& s : repo::load_snapshots(*o.repo))
        if (std::all_of(want.begin(), want.end(),
                        [&](const std::string& t) { return std::find(s.tags.begin(), s.tags.end(), t) != s.tags.end(); })) {
          safety = s.id;
          paths = s.paths;
          for (const auto& t : s.tags)
            if (t.rfind("restore-of:", 0) == 0) of = t.substr(11);
        }
      // What the interrupted restore wrote: the paths of the snapshot it restored.
      if (!of.empty()) paths = repo::load_snapshot(*o.repo, repo::resolve_snapshot(*o.repo, of)).paths;
    } catch (const Error& e) {
      looked += "; repository '" + decl.name + "' could not be read: " + e.what();
      continue;
    }
    if (safety.empty()) {
      looked += "; repository '" + decl.name + "' holds none";
      continue;
    }
    TaskContext ctx;
    ctx.repo = o.repo.get();
    ctx.component = r.component;
    ctx.task_id = r.task_id + "-undo";
    ctx.restore_id = r.restore_id;
    ctx.plan_id = r.plan_id;
    ctx.memory_budget = memory_budget;
    DriverResult dr = restore(ctx, safety, paths);
    std::string why;
    for (const auto& x : dr.reasons) why += (why.empty() ? "" : "; ") + x.detail();
    const std::string what = "the safety snapshot '" + safety.substr(0, 8) + "' (repository '" + decl.name + "')";
    // Nothing written: tried again at the next start. Anything written: not
    // repeated (each try would put the paths back as they were at the
    // safety backup, over what was written since), and what it missed said.
    if (dr.outcome == v1::TASK_OUTCOME_FAILED && dr.files == 0)
      throw Error(Errc::io, "restoring " + what + " wrote nothing: " + (why.empty() ? "no reason given" : why));
    std::string done = what + " was restored over the paths this restore had begun to write (" + std::to_string(dr.files) + " files)";
    return dr.outcome == v1::TASK_OUTCOME_SUCCEEDED ? done + ", which now hold what they held before it"
                                                    : done + ", but not all of it came back: " + why +
                                                          " (the agent does not try again: restore the safety "
                                                          "snapshot by hand where needed)";
  }
  throw Error(Errc::not_found, "no safety snapshot of task '" + r.task_id + "' was found" +
                                   (looked.empty() ? std::string(" (no repository is declared)") : looked));
}

TaskRunner::TaskRunner(Emit emit, std::string own_snapshots_path) : emit_(std::move(emit)), own_(std::move(own_snapshots_path)) {}

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
      const auto every = std::chrono::seconds(set_aside_every_s_ > 0 ? set_aside_every_s_ : 3600);
      if (!cv_.wait_for(lk, every, [&] { return stop_ || !queue_.empty(); })) {
        // A while without a task: the set-aside rule again (an age reached, a safety snapshot pruned).
        lk.unlock();
        if (set_aside_) try {
            for (const auto& line : set_aside_->sweep()) spdlog::info("set aside: {}", line);
          } catch (const std::exception& e) {
            spdlog::error("set aside: the rule could not be applied: {}", e.what());
          }
        continue;
      }
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
    spdlog::warn(
        "task '{}': snapshot '{}' is not recorded as this agent's own ({}); the next backup of component '{}' "
        "reads every file",
        task.task_id(), id.substr(0, 8), why, task.component());
}

// A backup: the driver snapshots in place into a sink, the runner stores it.
DriverResult TaskRunner::run_backup(Driver& driver, TaskContext& ctx, const Storing& st) {
  DriverResult res;
  RunnerSink sink;
  driver.snapshot(ctx, sink, SnapshotPurpose{});
  res.reasons = sink.reasons_;
  if (sink.empty()) {
    res.outcome = v1::TASK_OUTCOME_FAILED;
    if (res.reasons.empty())
      res.reasons.push_back(make_reason(v1::ERROR_CODE_SNAPSHOT_FAILED,
                                        "driver '" + driver.name() + "' of component '" + ctx.component + "' found nothing to back up"));
    return res;
  }
  repo::BackupOptions bo;
  bo.tags = st.tags;
  bo.progress = repo_progress(ctx, v1::PHASE_STREAM);
  bo.cancel = ctx.cancel;
  bo.memory_budget = ctx.memory_budget;
  bo.check_lock = st.check_lock;
  bo.parent_rule = repo::BackupOptions::ParentRule::named_only;
  bo.parent = usable_parent(ctx, st.parent);
  repo::BackupResult br;
  try {
    br = store(*ctx.repo, sink, bo);
  } catch (...) {
    sink.cleanup(ctx.task_id);
    for (auto& r : sink.run_after_store()) ctx.note(r.detail());
    throw;
  }
  sink.cleanup(ctx.task_id);
  for (auto& r : sink.run_after_store()) res.reasons.push_back(std::move(r));
  if (!br.parent_note.empty()) ctx.note(br.parent_note);
  for (const auto& e : br.snapshot.errors)
    res.reasons.push_back(make_reason(v1::ERROR_CODE_ITEM_SKIPPED, repo::describe_item_error(e.path, e.reason), e.path));
  res.snapshot_id = br.snapshot.id;
  res.manifest_digest = br.snapshot.id;  // the snapshot id names the manifest by its content
  res.bytes = br.bytes_total;
  res.files = br.files_new + br.files_changed + br.files_unmodified;
  res.metadata = sink.meta_;
  res.outcome = res.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_PARTIAL;
  return res;
}

// Saves what a restore will overwrite, through the driver's own snapshot. False
// when the restore must not go on (res says why); nothing has been written then.
bool TaskRunner::safety_backup(Driver& driver, TaskContext& ctx, const RestoreSpec& spec, const repo::Snapshot& snap, const Storing& st,
                               DriverResult& res) {
  RunnerSink sink;
  SnapshotPurpose purpose;
  purpose.safety = true;
  purpose.target_name = spec.target_name;
  purpose.restoring = &snap;
  res.safety_outcome = v1::TASK_OUTCOME_SUCCEEDED;
  auto refuse = [&](const std::string& detail, const std::string& why) {
    res.safety_outcome = v1::TASK_OUTCOME_FAILED;
    res.safety_detail = detail;
    res.reasons.push_back(make_reason(v1::ERROR_CODE_SNAPSHOT_FAILED, why));
    return false;
  };
  try {
    driver.snapshot(ctx, sink, purpose);
  } catch (const Error& e) {
    return refuse(e.what(), std::string("the safety backup failed: ") + e.what() + "; nothing was overwritten");
  }
  if (sink.empty() && sink.reasons_.empty()) {
    res.safety_detail = "nothing existed at the restore's destination to save";
    return true;
  }
  if (!sink.reasons_.empty()) {
    for (auto& r : sink.reasons_)
      res.reasons.push_back(make_reason(v1::ERROR_CODE_SNAPSHOT_FAILED, "safety backup: " + r.detail(), r.item()));
    return refuse("incomplete: " + std::to_string(sink.reasons_.size()) + " item(s) could not be read",
                  "the safety backup is incomplete; nothing was overwritten (skip it explicitly to force)");
  }
  repo::BackupOptions bo;
  bo.tags = {"cairn", "safety", "component:" + ctx.component, "task:" + (spec.safety_task_id.empty() ? ctx.task_id : spec.safety_task_id),
             "restore-of:" + spec.snapshot_id,
             // The restore task it was taken for: an interrupted files restore finds it by this.
             "restore-task:" + ctx.task_id};
  if (!spec.target_name.empty()) bo.tags.push_back("restore-target:" + spec.target_name);
  if (!ctx.backup_set_id.empty()) bo.tags.push_back("set:" + ctx.backup_set_id);
  bo.tags.insert(bo.tags.end(), identity_tags_.begin(), identity_tags_.end());
  bo.progress = repo_progress(ctx, v1::PHASE_SAFETY_BACKUP);
  bo.cancel = ctx.cancel;
  bo.memory_budget = ctx.memory_budget;
  bo.check_lock = st.check_lock;
  bo.parent_rule = repo::BackupOptions::ParentRule::named_only;
  bo.parent = usable_parent(ctx, st.parent);
  repo::BackupResult sb;
  try {
    sb = store(*ctx.repo, sink, bo);
  } catch (const Error& e) {
    return refuse(e.what(), std::string("the safety backup failed: ") + e.what() + "; nothing was overwritten");
  }
  sink.cleanup(ctx.task_id);
  if (!sb.parent_note.empty()) ctx.note(sb.parent_note);
  // A safety copy that misses files would make the restore irreversible for
  // them. A file that changed while it was read (a live log, a running
  // database) is in the copy as read: that does not stop the restore.
  size_t unreadable = 0, changed = 0;
  for (const auto& e : sb.snapshot.errors) (e.reason.rfind(repo::kChangedWhileRead, 0) == 0 ? changed : unreadable)++;
  if (sb.snapshot.partial && (unreadable > 0 || changed == 0)) {
    for (const auto& e : sb.snapshot.errors)
      if (e.reason.rfind(repo::kChangedWhileRead, 0) != 0)
        res.reasons.push_back(
            make_reason(v1::ERROR_CODE_SNAPSHOT_FAILED, "safety backup could not read '" + e.path + "': " + e.reason, e.path));
    return refuse("incomplete: " + std::to_string(unreadable) + " item(s) could not be read",
                  "the safety backup is incomplete; nothing was overwritten (skip it explicitly to force)");
  }
  if (changed > 0)
    res.safety_detail = std::to_string(changed) + " file(s) changed while the safety backup read them; they are saved as read";
  res.safety_snapshot_id = sb.snapshot.id;
  res.safety_metadata = sb.snapshot.component;
  return true;
}

// A restore, or one step of a cluster restore: the snapshot must be this
// component's; the safety backup is taken before anything is stopped or
// written; after a whole restore the driver verifies the running component
// against what the snapshot recorded.
DriverResult TaskRunner::run_restore(Driver& driver, TaskContext& ctx, const v1::Task& task, const Storing& st) {
  DriverResult res;
  RestoreSpec spec;
  spec.target_name = task.options().restore_target();
  spec.skip_safety_backup = task.options().skip_safety_backup();
  spec.safety_task_id = task.options().safety_backup_task_id();
  if (task.options().write_mode() == v1::RESTORE_WRITE_MODE_MERGE) spec.write_mode = v1::RESTORE_WRITE_MODE_MERGE;
  spec.step = proto::restore_step_from_name(task.options().restore_step()).value_or(v1::RESTORE_STEP_ALL);
  for (const auto& [k, v] : task.options().cluster_options()) spec.cluster_options[k] = v;
  spec.force_identity = task.options().force_identity();
  spec.recovery_target = task.options().recovery_target();
  if (spec.recovery_target.kind() != v1::RecoveryTarget::KIND_UNSPECIFIED && !driver.capabilities().replays_to_target) {
    res.reasons.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK, "component '" + ctx.component + "' (" + driver.name() +
                                                                           ") cannot replay to a recovery target; nothing was changed"));
    return res;
  }
  // What this restore set aside on the member's disk is put back or kept,
  // and a halt stops the service, whatever the repository's state: no
  // snapshot is read for these.
  if (spec.step == v1::RESTORE_STEP_ROLLBACK || spec.step == v1::RESTORE_STEP_HALT) return driver.restore(ctx, spec);
  if (spec.step == v1::RESTORE_STEP_COMMIT) return driver.restore_commit(ctx, spec);
  repo::Snapshot snap;
  try {
    spec.snapshot_id = repo::resolve_snapshot(*ctx.repo, task.snapshot().snapshot_id());
    snap = repo::load_snapshot(*ctx.repo, spec.snapshot_id);
  } catch (const Error& e) {
    res.reasons.push_back(
        make_reason(v1::ERROR_CODE_SNAPSHOT_NOT_FOUND, "snapshot '" + task.snapshot().snapshot_id() + "' cannot be read: " + e.what()));
    return res;
  }
  if (!has_tag(snap, "component:" + ctx.component)) {
    res.reasons.push_back(make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK, "snapshot '" + spec.snapshot_id.substr(0, 8) +
                                                                           "' is not a snapshot of component '" + ctx.component + "'"));
    return res;
  }
  if (auto bad = driver.check_snapshot(snap); !bad.empty()) {
    res.reasons = std::move(bad);
    return res;
  }
  // The first step of a restore takes the safety backup: preflight (the
  // controller's cluster restore), stop (older controllers), or all.
  const bool takes_safety =
      spec.step == v1::RESTORE_STEP_ALL || spec.step == v1::RESTORE_STEP_PREFLIGHT || spec.step == v1::RESTORE_STEP_STOP;
  // The preflight's own checks (read-only: tools, writable directories, the
  // space the snapshot needs) before the safety backup, so that a member
  // refused for them has not written a safety copy into the repository first.
  std::vector<v1::Reason> ready;
  if (spec.step == v1::RESTORE_STEP_PREFLIGHT || (spec.step == v1::RESTORE_STEP_ALL && driver.capabilities().preflight_whole_restore)) {
    ready = driver.restore_preflight(ctx, spec);
    if (!ready.empty()) {
      res.reasons = std::move(ready);
      if (spec.step == v1::RESTORE_STEP_PREFLIGHT) res.metadata = {{"step", "preflight"}};
      return res;
    }
  }
  // The whole snapshot read back and checked (every tree and data blob the
  // restore reads) before anything stops: damage in the repository refuses
  // the restore while every member still runs on its own data, and before the
  // safety backup wrote anything (docs/protocol.md § The cluster restore,
  // invariant 1). A whole restore of a driver that stops its service inside
  // restore() reads first too: the snapshot is read twice, but only the second
  // read happens while the service is down, and damage no longer costs an
  // outage and a rollback.
  repo::VerifyResult read_back;
  const bool reads_first =
      spec.step == v1::RESTORE_STEP_PREFLIGHT || (spec.step == v1::RESTORE_STEP_ALL && driver.capabilities().restore_stops_service);
  if (reads_first) {
    if (auto damaged = verify_restore_snapshot(ctx, spec.snapshot_id, &read_back); !damaged.empty()) {
      res.reasons = std::move(damaged);
      if (spec.step == v1::RESTORE_STEP_PREFLIGHT) res.metadata = {{"step", "preflight"}};
      return res;
    }
  }
  if (takes_safety && !spec.skip_safety_backup && driver.capabilities().safety_backup) {
    DriverResult safety;
    if (!safety_backup(driver, ctx, spec, snap, st, safety)) return safety;
    res.safety_outcome = safety.safety_outcome;
    res.safety_detail = safety.safety_detail;
    res.safety_snapshot_id = safety.safety_snapshot_id;
    res.safety_metadata = std::move(safety.safety_metadata);
  }
  DriverResult dr;
  if (spec.step == v1::RESTORE_STEP_PREFLIGHT) {
    // Read-only, checked above: the member is ready; nothing is stopped before every member is.
    dr.outcome = v1::TASK_OUTCOME_SUCCEEDED;
    dr.metadata = {{"step", "preflight"},
                   {"stop_wave", driver.stop_wave()},
                   {"rollback_halt", driver.rollback_needs_halt()},
                   {"read_back", read_back_json(read_back)}};
  } else if (spec.step == v1::RESTORE_STEP_VERIFY) {
    dr.reasons = driver.verify(ctx, snap.component);
    dr.outcome = dr.reasons.empty() ? v1::TASK_OUTCOME_SUCCEEDED : v1::TASK_OUTCOME_FAILED;
  } else {
    // A whole restore of a driver restored in steps elsewhere (one etcd,
    // ZooKeeper or Kafka member alone) stops its service inside restore():
    // its record (restore_journal.h) is on disk until the restore ends, and
    // an agent killed in between runs the driver's rollback step at its next
    // start. Drivers restored in one task only keep their own, but for the
    // files driver, which writes over the live paths one file at a time with
    // no service around it: its record is the runner's too, written once the
    // safety backup holds what it overwrites (none: nothing to undo with), and
    // an agent killed mid-restore restores that safety snapshot at its start
    // (undo_from_safety_snapshot).
    std::optional<JournalGuard> journal;
    // (Not for a snapshot of an alternative target's contents, restored in
    // place there: the safety backup holds the declared paths, not those.)
    const bool in_place_files =
        driver.name() == "files" && spec.target_name.empty() && !res.safety_snapshot_id.empty() &&
        std::none_of(snap.tags.begin(), snap.tags.end(), [](const std::string& t) { return t.rfind("restore-target:", 0) == 0; });
    if (spec.step == v1::RESTORE_STEP_ALL && ctx.journal && (driver.capabilities().scope != "node" || in_place_files)) {
      journal.emplace(ctx.journal, in_place_restore(ctx, utc_stamp(),
                                                    in_place_files ? InPlaceRestore::State::swapping : InPlaceRestore::State::stopping));
      try {
        journal->write();
      } catch (const Error& e) {
        res.reasons.push_back(make_reason(v1::ERROR_CODE_IO_ERROR, e.what()));
        return res;
      }
    }
    dr = driver.restore(ctx, spec);
    if (reads_first && (dr.metadata.is_null() || dr.metadata.is_object())) dr.metadata["read_back"] = read_back_json(read_back);
    if (spec.step == v1::RESTORE_STEP_ALL && dr.outcome != v1::TASK_OUTCOME_FAILED) {
      WorkProgress w;
      w.phase = v1::PHASE_VERIFY;
      if (ctx.progress) ctx.progress(w);
      auto bad = driver.verify(ctx, snap.component);
      if (!bad.empty()) {
        dr.outcome = v1::TASK_OUTCOME_FAILED;
        for (auto& r : bad) dr.reasons.push_back(std::move(r));
      }
    }
  }
  dr.safety_outcome = res.safety_outcome;
  dr.safety_detail = res.safety_detail;
  dr.safety_snapshot_id = res.safety_snapshot_id;
  dr.safety_metadata = std::move(res.safety_metadata);
  return dr;
}

DriverResult TaskRunner::run_drill_task(const AdmittedTask& t, const std::function<void(const WorkProgress&)>& progress,
                                        repo::StorageCounters& storage) {
  if (!drill_) throw Error(Errc::unsupported, "this agent declares no [drill] section");
  // Read-only: a drill writes nothing to the repository, and needs no lock
  // that could keep a prune or a backup waiting.
  OpenRepo o;
  try {
    o = open_repository(*t.repository, "drill", true);
  } catch (const Error& e) {
    return drill_ended_early(t.task.drill_driver(), {make_reason(code_for(e.code(), true), e.what())});
  }
  TaskContext ctx;
  ctx.plan_id = t.plan_id;
  ctx.task_id = t.task.task_id();
  ctx.backup_set_id = t.task.snapshot().backup_set_id();
  ctx.restore_id = t.task.restore_id();
  ctx.component = t.task.component();
  ctx.repo = o.repo.get();
  ctx.progress = progress;
  ctx.cancel = &cancel_;
  ctx.memory_budget = memory_budget_;
  DriverResult dr = run_drill(*drill_, ctx, t.task);
  if (o.repo && o.repo->backend().caps().remote) storage = o.repo->backend().counters();
  return dr;
}

v1::TaskResult TaskRunner::run(const AdmittedTask& t) {
  const v1::Task& task = t.task;
  const bool restore = task.kind() == v1::TASK_KIND_RESTORE;
  v1::TaskResult result;
  result.set_plan_id(t.plan_id);
  result.set_task_id(task.task_id());
  result.set_started_at(now_s());
  spdlog::info("task '{}': {} of component '{}' starts", task.task_id(),
               task.kind() == v1::TASK_KIND_DRILL ? "drill"
               : restore                          ? "restore"
                                                  : "backup",
               task.component());

  // The open repository while its store is remote: each progress report
  // carries what the store was asked so far, retries included.
  std::atomic<repo::Repository*> live_repo{nullptr};
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
    if (auto* r = live_repo.load()) {
      auto c = r->backend().counters();
      p->set_storage_requests(c.requests);
      p->set_storage_retries(c.retries);
    }
    if (emit_) emit_(std::move(m));
  };

  DriverResult dr;
  repo::StorageCounters storage;  // the repository store's, when it is remote
  try {
    WorkProgress first;
    first.phase = v1::PHASE_PREFLIGHT;
    send_progress(first);
    if (task.kind() == v1::TASK_KIND_DRILL) {
      dr = run_drill_task(t, send_progress, storage);
    } else {
      auto refusals = t.component->driver->preflight(task);
      // A step this agent does not know (a newer controller's) is refused,
      // never run as a whole restore.
      if (restore && !task.options().restore_step().empty() && !proto::restore_step_from_name(task.options().restore_step()))
        refusals.insert(refusals.begin(),
                        make_reason(v1::ERROR_CODE_UNSUPPORTED_TASK,
                                    "unknown restore step '" + task.options().restore_step() +
                                        "': this agent is older than the controller; upgrade it before a cluster restore"));
      if (!refusals.empty()) {
        dr.reasons = std::move(refusals);
      } else {
        // A rollback or a commit acts on what this restore left on the
        // member's own disk: it must work when the repository does not (the
        // disk holding it full, its server down).
        const auto step_of_task = proto::restore_step_from_name(task.options().restore_step()).value_or(v1::RESTORE_STEP_ALL);
        const bool local_only = restore && (step_of_task == v1::RESTORE_STEP_ROLLBACK || step_of_task == v1::RESTORE_STEP_COMMIT);
        OpenRepo o;
        if (!local_only) o = open_repository(*t.repository, restore ? "restore" : "backup", restore);
        // What the repository's store was asked, whatever way the task ends (before o closes it).
        struct KeepCounters {
          repo::Repository* r;
          repo::StorageCounters* out;
          std::atomic<repo::Repository*>* live;
          ~KeepCounters() {
            live->store(nullptr);
            if (r && r->backend().caps().remote) *out = r->backend().counters();
          }
        } keep{o.repo.get(), &storage, &live_repo};
        if (o.repo && o.repo->backend().caps().remote) live_repo.store(o.repo.get());
        TaskContext ctx;
        ctx.plan_id = t.plan_id;
        ctx.task_id = task.task_id();
        ctx.backup_set_id = task.backup_set_id().empty() ? task.snapshot().backup_set_id() : task.backup_set_id();
        if (restore) ctx.restore_id = restore_id_of(task);
        ctx.component = task.component();
        DriverCaps caps = t.component->driver->capabilities();
        ctx.mode = task.options().mode().empty() && !caps.modes.empty() ? caps.modes.front() : task.options().mode();
        ctx.repo = o.repo.get();
        ctx.progress = send_progress;
        ctx.cancel = &cancel_;
        ctx.memory_budget = memory_budget_;
        ctx.journal = journal_;
        // A note is no failure: logged, and shown as the task's current item.
        ctx.note = [&](const std::string& text) {
          spdlog::warn("task '{}': {}", task.task_id(), text);
          WorkProgress w;
          w.phase = restore ? v1::PHASE_SAFETY_BACKUP : v1::PHASE_PREFLIGHT;
          w.current = "note: " + text;
          send_progress(w);
        };
        Storing st;
        st.check_lock = [lock = o.lock.get(), name = t.repository->name] {
          // No lock: the repository could not be written when the task began.
          if (!lock)
            throw Error(Errc::locked, "no lock is held on repository '" + name +
                                          "' (it could not be written when the task began); no snapshot is written");
          lock->check("writing the snapshot");
        };
        st.parent = own_parent(*t.repository, task);
        bool writes = !restore || !task.options().skip_safety_backup();
        if (writes && st.parent.empty() && !task.parent_snapshot_id().empty())
          ctx.note("the parent '" + task.parent_snapshot_id().substr(0, 16) +
                   "' the plan names is not a snapshot this agent wrote to repository '" + t.repository->name + "'; every file is read");
        st.tags = task_tags(task, t.plan_id, ctx.backup_set_id, identity_tags_);
        if (!restore) {
          dr = run_backup(*t.component->driver, ctx, st);
        } else {
          // The HAProxy servers in front of the component go to maint for the
          // restore (a cluster restore: from its stop step to its start or
          // rollback step), and back to their state after, whatever happened.
          auto step = proto::restore_step_from_name(task.options().restore_step()).value_or(v1::RESTORE_STEP_ALL);
          const bool maint = maintenance_ && t.component->maintenance;
          if (maint && (step == v1::RESTORE_STEP_ALL || step == v1::RESTORE_STEP_STOP || step == v1::RESTORE_STEP_HALT))
            maintenance_->enter(task.component(), *t.component->maintenance);
          const std::string point = "restore." + std::string(proto::step_label(step)) + ".";
          try {
            if (failpoint(point + "before") == FailAction::fail)
              throw Error(Errc::io, "failpoint '" + point + "before' (CAIRN_FAILPOINTS_FILE): the step fails before it starts");
            dr = run_restore(*t.component->driver, ctx, task, st);
            if (failpoint(point + "after") == FailAction::fail) {
              dr.outcome = v1::TASK_OUTCOME_FAILED;
              dr.reasons.push_back(
                  make_reason(v1::ERROR_CODE_IO_ERROR,
                              "failpoint '" + point + "after' (CAIRN_FAILPOINTS_FILE): the step is reported failed after its work"));
            }
          } catch (...) {
            if (maint && (step == v1::RESTORE_STEP_ALL || step == v1::RESTORE_STEP_START || step == v1::RESTORE_STEP_ROLLBACK))
              if (auto p = maintenance_->leave(task.component()); !p.empty()) spdlog::error("task '{}': {}", task.task_id(), p);
            throw;
          }
          if (maint && (step == v1::RESTORE_STEP_ALL || step == v1::RESTORE_STEP_START || step == v1::RESTORE_STEP_ROLLBACK))
            if (auto p = maintenance_->leave(task.component()); !p.empty()) {
              dr.reasons.push_back(make_reason(v1::ERROR_CODE_SERVICE_CONTROL_FAILED, p));
              if (dr.outcome == v1::TASK_OUTCOME_SUCCEEDED) dr.outcome = v1::TASK_OUTCOME_PARTIAL;
            }
        }
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
  // A drill proves or it does not: nothing in between.
  if (task.kind() == v1::TASK_KIND_DRILL && dr.outcome == v1::TASK_OUTCOME_PARTIAL) dr.outcome = v1::TASK_OUTCOME_FAILED;
  if (t.repository && task.kind() != v1::TASK_KIND_DRILL) remember_own(*t.repository, task, dr);
  // What the restore set aside: recorded as its own, then the rule applied (set_aside.h).
  if (restore && set_aside_) {
    const auto step = proto::restore_step_from_name(task.options().restore_step()).value_or(v1::RESTORE_STEP_ALL);
    const bool took_safety = step == v1::RESTORE_STEP_ALL || step == v1::RESTORE_STEP_PREFLIGHT || step == v1::RESTORE_STEP_STOP;
    try {
      for (const auto& line : set_aside_->after_restore(task.component(), restore_id_of(task), took_safety, dr.safety_snapshot_id,
                                                        task.snapshot().snapshot_id()))
        spdlog::info("task '{}': set aside: {}", task.task_id(), line);
    } catch (const std::exception& e) {
      spdlog::error("task '{}': the set-aside rule could not be applied: {}", task.task_id(), e.what());
    }
  }

  result.set_outcome(dr.outcome);
  for (auto& r : dr.reasons) *result.add_reasons() = std::move(r);
  result.set_snapshot_id(dr.snapshot_id);
  result.set_manifest_digest(dr.manifest_digest);
  result.set_safety_snapshot_id(dr.safety_snapshot_id);
  result.set_safety_outcome(dr.safety_outcome);
  result.set_safety_detail(utf8_or_escaped(dr.safety_detail));  // may name a path: bytes, the wire wants UTF-8
  if (dr.metadata.is_object()) result.set_component_metadata(dr.metadata.dump());
  if (dr.safety_metadata.is_object()) result.set_safety_component_metadata(dr.safety_metadata.dump());
  result.set_bytes(dr.bytes);
  result.set_files(dr.files);
  result.set_storage_requests(storage.requests);
  result.set_storage_retries(storage.retries);
  if (storage.retries)
    spdlog::warn("task '{}': the repository's store needed {} retries in {} requests", task.task_id(), storage.retries, storage.requests);
  result.set_finished_at(now_s());
  spdlog::info("task '{}': {} ({} reasons){}", task.task_id(),
               dr.outcome == v1::TASK_OUTCOME_SUCCEEDED ? "succeeded"
               : dr.outcome == v1::TASK_OUTCOME_PARTIAL ? "partial"
                                                        : "failed",
               result.reasons_size(), result.reasons_size() ? ": " + result.reasons(0).detail() : std::string());
  if (emit_) {
    v1::AgentMessage m;
    *m.mutable_task_result() = result;
    emit_(std::move(m));
  }
  return result;
}

}  // namespace cairn::agent

namespace cairn::agent {

std::optional<bool> TaskRunner::holds_snapshot(const RepositoryDecl& repository, const std::string& id) {
  try {
    OpenRepo o = open_repository(repository, "set-aside check", true);
    repo::load_snapshot(*o.repo, repo::resolve_snapshot(*o.repo, id));
    return true;
  } catch (const Error& e) {
    if (e.code() == Errc::not_found) return false;
    spdlog::warn("set aside: cannot tell whether repository '{}' holds snapshot '{}': {}", repository.name, id.substr(0, 8), e.what());
    return std::nullopt;
  }
}

void TaskRunner::read_repository(const RepositoryDecl& repository, const std::string& purpose,
                                 const std::function<void(repo::Repository&)>& fn) {
  OpenRepo o = open_repository(repository, purpose, true);
  fn(*o.repo);
}

std::string TaskRunner::store_file(const RepositoryDecl& repository, const std::string& path, const std::string& read_from,
                                   std::vector<std::string> tags) {
  // Opened for each file: the index is the repository's as it is now (a prune
  // may have rewritten packs since the last one).
  OpenRepo o = open_repository(repository, "wal-archive", false);
  repo::BackupOptions bo;
  bo.paths = {path};
  if (read_from != path) bo.path_map[path] = read_from;
  tags.insert(tags.end(), identity_tags_.begin(), identity_tags_.end());
  bo.tags = std::move(tags);
  bo.memory_budget = memory_budget_;
  bo.check_lock = [lock = o.lock.get(), name = repository.name] { lock->check("writing the snapshot"); };
  repo::BackupResult br = repo::backup(*o.repo, bo);
  if (br.snapshot.partial || !br.snapshot.errors.empty()) {
    std::string why = br.snapshot.errors.empty() ? "partial" : br.snapshot.errors.front().reason;
    throw Error(Errc::io, "'" + path + "' was not stored whole in repository '" + repository.name + "': " + why);
  }
  return br.snapshot.id;
}

}  // namespace cairn::agent
