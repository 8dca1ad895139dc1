// The steps of an etcd restore on this member (driver.h RestoreStep): stop,
// data (the snapshot into a fresh data dir, swapped in, the old one kept
// aside), start, verify, rollback (the old data dir back). Step all runs
// stop, data, start and verify in one task and puts the old data back when
// the new data does not start.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <optional>

#include "agent/drivers/etcd/etcd_driver.h"
#include "agent/drivers/repo_progress.h"
#include "agent/platform/process.h"
#include "agent/platform/service.h"
#include "agent/restore_record.h"
#include "common/crypto/crypto.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::etcd {

namespace fs = std::filesystem;
using cairn::v1::Reason;

namespace {

std::string random_hex(size_t n) {
  Bytes b(n);
  crypto::random_bytes(b.data(), n);
  return to_hex(b);
}

// A name beside `base` that does not exist yet: base + suffix, or with -2, -3...
std::string unused_name(const std::string& base) {
  std::string p = base;
  for (int i = 2; ::access(p.c_str(), F_OK) == 0; ++i) p = base + "-" + std::to_string(i);
  return p;
}

// The restore's record beside the data dir (docs/protocol.md § Restore
// records; its format: agent/restore_record.h): written by the data step
// BEFORE it moves anything, so a rollback (a later task, maybe after the
// agent was killed mid-step) knows what this restore moved, and only this
// restore's rollback acts on it. Removed by the commit step (every member
// verified); the rollback leaves a tombstone in its place.
std::string marker_path(const std::string& data_dir) {
  fs::path p(data_dir);
  return (p.parent_path() / ("." + p.filename().string() + ".cairn-restore.json")).string();
}

struct Record {
  std::string restore;                    // the restore that wrote it
  std::string task_id;                    // the task that wrote it
  std::string member;                     // this member's name, as the agent's settings say
  std::string aside;                      // where the data dir found in place goes ("" when there was none)
  std::string work;                       // the restore's working directory beside the data dir
  uint64_t fresh_dev = 0, fresh_ino = 0;  // the data dir this restore puts in place
  std::string snapshot_id;
  std::string superseded;  // a record of another restore this one replaced
  // "data": this restore's data is (or is being put) in place; "rolled_back":
  // its rollback ran here (a tombstone: a late step of the same restore is
  // refused, another restore replaces it).
  std::string state = "data";
};

void write_record(const std::string& data_dir, const Record& r) {
  StepRecord sr;
  sr.restore_id = r.restore;
  sr.task_id = r.task_id;
  sr.member = r.member;
  sr.rolled_back = r.state == "rolled_back";
  sr.step = sr.rolled_back ? cairn::v1::RESTORE_STEP_ROLLBACK : cairn::v1::RESTORE_STEP_DATA;
  sr.payload = {
      {"aside", r.aside}, {"work", r.work}, {"fresh_dev", r.fresh_dev}, {"fresh_ino", r.fresh_ino}, {"snapshot_id", r.snapshot_id}};
  if (!r.superseded.empty()) sr.payload["superseded"] = r.superseded;
  write_step_record(marker_path(data_dir), sr);
}

// The record on disk; nullopt when there is none. Throws when one exists but
// cannot be read or names what no cairn restore of this data dir creates (it
// is a file on disk, not a plan).
std::optional<Record> read_record(const std::string& data_dir) {
  const std::string mp = marker_path(data_dir);
  std::optional<StepRecord> sr = read_step_record(mp);
  if (!sr) return std::nullopt;
  Record r;
  r.restore = sr->restore_id;
  r.task_id = sr->task_id;
  r.member = sr->member;
  r.state = sr->rolled_back ? "rolled_back" : "data";
  const nlohmann::json& j = sr->payload;
  try {
    r.aside = j.value("aside", "");
    r.work = j.value("work", "");
    r.fresh_dev = j.value("fresh_dev", uint64_t(0));
    r.fresh_ino = j.value("fresh_ino", uint64_t(0));
    r.snapshot_id = j.value("snapshot_id", "");
    r.superseded = j.value("superseded", "");
  } catch (const std::exception& e) {
    throw Error(Errc::corrupt, "the restore record '" + mp + "' cannot be read: " + e.what());
  }
  auto sibling = [&](const std::string& p, const std::string& kind) {
    return p.empty() || (p.rfind(data_dir + kind, 0) == 0 && p.find('/', data_dir.size()) == std::string::npos);
  };
  if (!sibling(r.aside, ".cairn-old-") || !sibling(r.work, ".cairn-restore-"))
    throw Error(Errc::corrupt, "the restore record '" + mp + "' names '" + r.aside + "' / '" + r.work +
                                   "', not directories a restore of '" + data_dir + "' makes");
  return r;
}

bool same_inode(const std::string& path, uint64_t dev, uint64_t ino) {
  struct stat st {};
  return ino != 0 && ::lstat(path.c_str(), &st) == 0 && uint64_t(st.st_dev) == dev && uint64_t(st.st_ino) == ino;
}

bool exists_path(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

// The working directory of one restore, beside the data dir (same file
// system: the new data dir is renamed into place). Removed at the end.
class WorkDir {
 public:
  explicit WorkDir(const std::string& data_dir) {
    path_ = unused_name(data_dir + ".cairn-restore-" + random_hex(4));
    if (::mkdir(path_.c_str(), 0700) != 0) throw_errno("create the restore's working directory", path_, errno);
  }
  ~WorkDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  WorkDir(const WorkDir&) = delete;
  WorkDir& operator=(const WorkDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string find_regular_file(const std::string& dir, const std::string& name) {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->path().filename() == name && it->is_regular_file(ec) && !it->is_symlink(ec)) return it->path().string();
  }
  return {};
}

// The new data dir gets the old one's owner (etcd may run as its own user
// while the agent runs as root) and etcd's mode 0700.
void adopt_owner(const std::string& dir, const struct stat& like) {
  if (::chmod(dir.c_str(), 0700) != 0) throw_errno("chmod", dir, errno);
  if (::geteuid() != 0) return;
  auto own = [&](const std::string& p) {
    if (::lchown(p.c_str(), like.st_uid, like.st_gid) != 0) throw_errno("chown", p, errno);
  };
  own(dir);
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
    own(it->path().string());
  if (ec) throw Error(Errc::io, "walk '" + dir + "': " + ec.message());
}

void rename_or_throw(const std::string& from, const std::string& to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw Error(Errc::io, "rename '" + from + "' to '" + to + "': " + std::strerror(errno), errno);
}

DriverResult succeeded(nlohmann::json meta = nlohmann::json::object()) {
  DriverResult r;
  r.outcome = cairn::v1::TASK_OUTCOME_SUCCEEDED;
  r.metadata = std::move(meta);
  return r;
}

DriverResult failed(cairn::v1::ErrorCode code, const std::string& detail, const std::string& item,
                    nlohmann::json meta = nlohmann::json::object()) {
  DriverResult r;
  r.outcome = cairn::v1::TASK_OUTCOME_FAILED;
  r.reasons.push_back(make_reason(code, detail, item));
  r.metadata = std::move(meta);
  return r;
}

void phase(TaskContext& ctx, cairn::v1::Phase ph, const std::string& current = {}) {
  if (ctx.progress) ctx.progress(WorkProgress{ph, 0, 0, 0, 0, current});
}

}  // namespace

nlohmann::json recorded_metadata(TaskContext& ctx, const std::string& snapshot_id) {
  if (!ctx.repo) return nlohmann::json::object();
  repo::Snapshot snap = repo::load_snapshot(*ctx.repo, repo::resolve_snapshot(*ctx.repo, snapshot_id));
  return snap.component.is_object() ? snap.component : nlohmann::json::object();
}

std::string EtcdDriver::initial_cluster_for(const RestoreSpec& spec, const nlohmann::json& recorded) const {
  if (auto it = spec.cluster_options.find("initial_cluster"); it != spec.cluster_options.end() && !it->second.empty()) return it->second;
  auto self = [&] {
    std::string s;
    for (const auto& u : settings_.peer_urls) s += (s.empty() ? "" : ",") + settings_.name + "=" + u;
    return s;
  };
  // A whole restore on one agent makes a one-member cluster of this member.
  if (spec.step == v1::RESTORE_STEP_ALL) return self();
  // A step of the controller's cluster restore: every member the snapshot
  // recorded is restored on its own agent from this same snapshot, so the
  // new cluster is those members, each at the peer URLs it had (this one at
  // the URLs its settings declare).
  std::string out, names;
  bool found = false;
  if (recorded.is_object() && recorded.contains("members") && recorded["members"].is_array()) {
    for (const auto& m : recorded["members"]) {
      std::string name = m.value("name", "");
      if (name.empty() || m.value("is_learner", false)) continue;  // unstarted members and learners are not restored
      names += (names.empty() ? "'" : ", '") + name + "'";
      if (name == settings_.name) {
        found = true;
        out += (out.empty() ? "" : ",") + self();
        continue;
      }
      for (const auto& u : m.value("peer_urls", std::vector<std::string>{})) out += (out.empty() ? "" : ",") + name + "=" + u;
    }
  }
  if (!found)
    throw Error(Errc::invalid_input, "member '" + settings_.name +
                                         "' (setting 'member_name') is not among the members the "
                                         "snapshot recorded (" +
                                         (names.empty() ? std::string("none") : names) + "): a cluster restore puts the same members back");
  return out;
}

DriverResult EtcdDriver::step_stop(TaskContext& ctx) {
  phase(ctx, cairn::v1::PHASE_STOP_SERVICE);
  if (settings_.service.empty())
    return failed(cairn::v1::ERROR_CODE_SERVICE_CONTROL_FAILED, "no 'service' declared: cannot stop etcd", component_);
  // Whether the member ran before the restore stopped it: a rollback starts
  // only a member that did (the controller passes this back to it).
  bool was_running = false;
  try {
    ClientOptions o = client_options();
    o.timeout = std::chrono::milliseconds(1500);
    o.user.clear();  // any answer counts, a refusal of credentials too
    o.password.clear();
    was_running = Client(o).answers();
  } catch (const Error&) {
  }
  try {
    platform::Service(settings_.service).stop(ctx.cancel);
  } catch (const Error& e) {
    return failed(cairn::v1::ERROR_CODE_SERVICE_CONTROL_FAILED, "stopping etcd (" + settings_.service.describe() + ") failed: " + e.what(),
                  component_);
  }
  return succeeded({{"step", "stop"}, {"was_running", was_running}});
}

DriverResult EtcdDriver::step_start(TaskContext& ctx) {
  phase(ctx, cairn::v1::PHASE_START_SERVICE);
  if (settings_.service.empty())
    return failed(cairn::v1::ERROR_CODE_SERVICE_CONTROL_FAILED, "no 'service' declared: cannot start etcd", component_);
  try {
    platform::Service(settings_.service).start(ctx.cancel);
  } catch (const Error& e) {
    return failed(cairn::v1::ERROR_CODE_SERVICE_CONTROL_FAILED, "starting etcd (" + settings_.service.describe() + ") failed: " + e.what(),
                  component_);
  }
  try {
    wait_until_answering(ctx);
  } catch (const Error& e) {
    return failed(cairn::v1::ERROR_CODE_SERVICE_CONTROL_FAILED, e.what(), component_);
  }
  return succeeded({{"step", "start"}});
}

DriverResult EtcdDriver::step_data(TaskContext& ctx, const RestoreSpec& spec) {
  const std::string& dd = settings_.data_dir;
  nlohmann::json meta = {{"step", "data"}, {"data_dir", dd}};
  // Never under a running member: it would keep its old files open and
  // write them back.
  try {
    ClientOptions o = client_options();
    o.timeout = std::chrono::milliseconds(1500);
    o.user.clear();  // any answer counts, a refusal of credentials too
    o.password.clear();
    if (Client(o).answers())
      return failed(cairn::v1::ERROR_CODE_IO_ERROR,
                    "etcd still answers at '" + settings_.endpoint + "': stop it before its data is replaced", component_, meta);
  } catch (const Error& e) {
    return failed(cairn::v1::ERROR_CODE_IO_ERROR, std::string("cannot tell whether etcd is stopped: ") + e.what(), component_, meta);
  }
  if (!ctx.repo) return failed(cairn::v1::ERROR_CODE_INTERNAL, "no repository to restore from", component_, meta);
  try {
    if (auto mine = read_record(dd); mine && mine->restore == ctx.restore_id)
      return failed(cairn::v1::ERROR_CODE_PREFLIGHT_FAILED,
                    mine->state == "rolled_back"
                        ? "restore '" + ctx.restore_id + "' was rolled back on this member: its data step does not run again"
                        : "restore '" + ctx.restore_id + "' already put its data in place on this member",
                    component_, meta);
  } catch (const Error& e) {
    return failed(cairn::v1::ERROR_CODE_IO_ERROR, e.what(), component_, meta);
  }

  try {
    // Working directories of restores whose agent was killed in their data
    // step (one restore step runs per component at a time: none is in use).
    // Each can hold a whole extracted snapshot.
    {
      auto gone = remove_leftovers(fs::path(dd).parent_path().string(), fs::path(dd).filename().string() + ".cairn-restore-");
      if (!gone.empty()) meta["removed_leftovers"] = gone;
    }
    WorkDir work(dd);
    phase(ctx, cairn::v1::PHASE_RESTORE, kSnapshotFileName);
    repo::RestoreOptions ro;
    ro.memory_budget = ctx.memory_budget;
    ro.target = work.path() + "/extracted";
    ro.cancel = ctx.cancel;
    if (ctx.progress)
      ro.progress = [&ctx](const repo::Progress& p) {
        ctx.progress(WorkProgress{cairn::v1::PHASE_RESTORE, p.bytes_done, p.bytes_total, p.files_done, p.files_total, kSnapshotFileName});
      };
    repo::RestoreResult rr = repo::restore(*ctx.repo, spec.snapshot_id, ro);
    if (!rr.failures.empty())
      return failed(cairn::v1::ERROR_CODE_REPOSITORY_CORRUPT,
                    "the snapshot could not be read back: " + rr.failures.front().path + ": " + rr.failures.front().reason, component_,
                    meta);
    const std::string fresh = work.path() + "/data";
    std::string file = find_regular_file(ro.target, kSnapshotFileName);
    if (!file.empty()) {
      auto run = [&](std::vector<std::string> args, const char* what) {
        platform::ProcessSpec ps;
        ps.argv = {settings_.etcdctl};
        ps.argv.insert(ps.argv.end(), args.begin(), args.end());
        ps.env = {"ETCDCTL_API=3"};
        ps.timeout = std::chrono::minutes(30);
        ps.cancel = ctx.cancel;
        platform::ProcessResult pr = platform::run_process(ps);
        if (!pr.ok()) throw Error(Errc::io, std::string("'") + settings_.etcdctl + " " + what + "' " + pr.describe());
        return pr.out;
      };
      // What the file holds, read by etcd's own code (it checks the hash too).
      auto st = nlohmann::json::parse(run({"snapshot", "status", file, "-w", "json"}, "snapshot status"), nullptr, false);
      if (st.is_object()) {
        meta["snapshot_revision"] = st.value("revision", int64_t(0));
        meta["snapshot_total_keys"] = st.value("totalKey", int64_t(0));
        meta["snapshot_hash"] = st.value("hash", int64_t(0));
      }
      std::string peers;
      for (const auto& u : settings_.peer_urls) peers += (peers.empty() ? "" : ",") + u;
      std::string initial_cluster = initial_cluster_for(spec, recorded_metadata(ctx, spec.snapshot_id));
      std::string token;
      if (auto it = spec.cluster_options.find("cluster_token"); it != spec.cluster_options.end() && !it->second.empty())
        token = it->second;
      else
        token = "cairn-" + random_hex(8);  // a new logical cluster: never the old token
      meta["initial_cluster"] = initial_cluster;
      meta["cluster_token"] = token;
      run({"snapshot", "restore", file, "--name", settings_.name, "--initial-cluster", initial_cluster, "--initial-cluster-token", token,
           "--initial-advertise-peer-urls", peers, "--data-dir", fresh},
          "snapshot restore");
      meta["kind"] = "snapshot";
    } else if (std::string saved = ro.target + dd; ::access((saved + "/member").c_str(), F_OK) == 0) {
      // A safety backup taken while etcd was stopped: the data dir as it was.
      rename_or_throw(saved, fresh);
      meta["kind"] = "data_dir";
    } else {
      return failed(cairn::v1::ERROR_CODE_SNAPSHOT_NOT_FOUND,
                    std::string("the snapshot holds neither '") + kSnapshotFileName + "' nor the data dir '" + dd + "'", component_, meta);
    }

    struct stat old {};
    bool had_old = ::lstat(dd.c_str(), &old) == 0;
    if (had_old && !S_ISDIR(old.st_mode))
      return failed(cairn::v1::ERROR_CODE_IO_ERROR, "'data_dir' " + dd + " is not a directory", component_, meta);
    if (had_old)
      adopt_owner(fresh, old);
    else if (::chmod(fresh.c_str(), 0700) != 0)
      throw_errno("chmod", fresh, errno);

    std::string parent = fs::path(dd).parent_path().string();
    // The record comes first: whatever moment the agent is killed at, a
    // rollback of this restore finds what it moved (and nothing else).
    Record rec;
    rec.restore = ctx.restore_id;
    rec.task_id = ctx.task_id;
    rec.member = settings_.name;
    rec.work = work.path();
    rec.snapshot_id = spec.snapshot_id;
    struct stat fst {};
    if (::lstat(fresh.c_str(), &fst) != 0) throw_errno("stat", fresh, errno);
    rec.fresh_dev = uint64_t(fst.st_dev);
    rec.fresh_ino = uint64_t(fst.st_ino);
    std::optional<Record> other = read_record(dd);
    if (other && other->restore == ctx.restore_id)
      // Never twice: a second run would set aside the data the first put in
      // place and lose the record of the data it set aside; and after this
      // restore's rollback the member must stay on its own data.
      return failed(cairn::v1::ERROR_CODE_PREFLIGHT_FAILED,
                    other->state == "rolled_back"
                        ? "restore '" + ctx.restore_id + "' was rolled back on this member: its data step does not run again"
                        : "restore '" + ctx.restore_id + "' already put its data in place on this member",
                    component_, meta);
    if (other) {
      // An earlier restore that never committed here (its agent was gone at
      // its end): nothing it names is moved; what it set aside stays.
      rec.superseded = other->restore;
      meta["superseded_restore"] = other->restore;
      if (!other->aside.empty()) meta["kept_from_superseded_restore"] = other->aside;
    }
    std::string aside;
    if (had_old) {
      aside = unused_name(dd + ".cairn-old-" + utc_stamp());
      rec.aside = aside;
    }
    write_record(dd, rec);
    fsync_dir(parent);
    if (had_old) {
      rename_or_throw(dd, aside);
      meta["old_data_dir"] = aside;
    }
    try {
      rename_or_throw(fresh, dd);
    } catch (...) {
      if (had_old) rename_or_throw(aside, dd);
      ::unlink(marker_path(dd).c_str());
      throw;
    }
    try {
      fsync_dir(parent);
    } catch (const Error&) {
      // The swap is done; a failed fsync of the directory must not report it undone.
    }
  } catch (const Error& e) {
    auto code = e.code() == Errc::interrupted ? cairn::v1::ERROR_CODE_CANCELLED
                : e.code() == Errc::no_space  ? cairn::v1::ERROR_CODE_NO_SPACE
                : e.code() == Errc::corrupt   ? cairn::v1::ERROR_CODE_REPOSITORY_CORRUPT
                                              : cairn::v1::ERROR_CODE_IO_ERROR;
    return failed(code, std::string("restoring etcd's data dir failed: ") + e.what(), component_, meta);
  }
  return succeeded(meta);
}

DriverResult EtcdDriver::step_verify(TaskContext& ctx, const RestoreSpec& spec) {
  nlohmann::json recorded;
  try {
    recorded = recorded_metadata(ctx, spec.snapshot_id);
  } catch (const Error& e) {
    return failed(cairn::v1::ERROR_CODE_REPOSITORY_ERROR, std::string("reading the snapshot's metadata: ") + e.what(), component_);
  }
  DriverResult r;
  r.reasons = verify(ctx, recorded);
  r.outcome = r.reasons.empty() ? cairn::v1::TASK_OUTCOME_SUCCEEDED : cairn::v1::TASK_OUTCOME_FAILED;
  r.metadata = {{"step", "verify"}, {"recorded", recorded}};
  return r;
}

DriverResult EtcdDriver::step_rollback(TaskContext& ctx, const std::map<std::string, std::string>& options) {
  const std::string& dd = settings_.data_dir;
  nlohmann::json meta = {{"step", "rollback"}, {"data_dir", dd}, {"restore", ctx.restore_id}};
  DriverResult stop = step_stop(ctx);
  if (stop.outcome != cairn::v1::TASK_OUTCOME_SUCCEEDED) return stop;
  try {
    std::optional<Record> rec = read_record(dd);
    if (!rec) {
      meta["note"] = "this restore replaced no data dir here; etcd is only started again";
    } else if (rec->restore != ctx.restore_id || ctx.restore_id.empty()) {
      // Another restore's record: never acted on. The data dir in place is
      // the one this member ran before this restore.
      meta["note"] = "the record beside the data dir is restore '" + rec->restore +
                     "''s, not this one's: left as it is; this restore replaced no data dir here";
      meta["other_restore"] = rec->restore;
    } else if (rec->state == "rolled_back") {
      meta["note"] = "this restore was rolled back here already; etcd is only started again";
    } else {
      const std::string parent = fs::path(dd).parent_path().string();
      const bool aside_there = !rec->aside.empty() && exists_path(rec->aside);
      const bool ours_in_place = same_inode(dd, rec->fresh_dev, rec->fresh_ino);
      if (!rec->aside.empty() && !aside_there && !ours_in_place && exists_path(dd)) {
        // Killed after the record, before the old data dir moved: it is in place.
        meta["note"] = "the data dir was never moved aside here; etcd is started on it";
      } else if (!rec->aside.empty() && !aside_there) {
        throw Error(Errc::not_found,
                    "the data dir this restore set aside, '" + rec->aside + "', is gone; the restored data dir is left in place");
      } else {
        // What is in place now is this restore's (or, killed mid-swap, nothing
        // or a dir etcd made while its data was away): kept aside as failed.
        if (exists_path(dd)) {
          std::string failed_dir = unused_name(dd + ".cairn-failed-" + utc_stamp());
          rename_or_throw(dd, failed_dir);
          meta["failed_data_dir"] = failed_dir;
        }
        if (aside_there) {
          rename_or_throw(rec->aside, dd);
          meta["restored_data_dir"] = rec->aside;
        }
      }
      if (!rec->work.empty() && exists_path(rec->work)) {
        std::error_code ec;
        fs::remove_all(rec->work, ec);
      }
      // A tombstone in place of the record: a late step of this restore (a
      // plan delivered after its rollback) is refused; another restore
      // replaces it.
      Record done;
      done.restore = rec->restore;
      done.task_id = ctx.task_id;
      done.member = rec->member;
      done.snapshot_id = rec->snapshot_id;
      done.state = "rolled_back";
      write_record(dd, done);
      fsync_dir(parent);
    }
  } catch (const std::exception& e) {
    return failed(cairn::v1::ERROR_CODE_IO_ERROR, std::string("putting the old data dir back failed: ") + e.what(), component_, meta);
  }
  // Started again only when it ran before the restore, and on data of its
  // own: etcd started on an empty data dir makes a new member with no keys
  // (on an empty host, beside members that have the cluster's data, a
  // cluster serving nothing under the backup's name).
  if (auto it = options.find("was_running"); it != options.end() && it->second == "false") {
    meta["started"] = false;
    meta["note"] =
        std::string(meta.value("note", "")) + (meta.contains("note") ? "; " : "") + "etcd did not run before this restore: left stopped";
    return succeeded(meta);
  }
  if (::access((dd + "/member").c_str(), F_OK) != 0) {
    meta["started"] = false;
    meta["note"] = std::string(meta.value("note", "")) + (meta.contains("note") ? "; " : "") + "'" + dd +
                   "' holds no data of this member's own: etcd is left stopped rather than started empty";
    return succeeded(meta);
  }
  DriverResult start = step_start(ctx);
  if (start.outcome != cairn::v1::TASK_OUTCOME_SUCCEEDED) {
    start.metadata = meta;
    return start;
  }
  meta["started"] = true;
  return succeeded(meta);
}

std::vector<Reason> EtcdDriver::restore_preflight(TaskContext& ctx, const RestoreSpec& spec) {
  std::vector<Reason> out;
  const std::string& dd = settings_.data_dir;
  const std::string parent = fs::path(dd).parent_path().string();
  // The data step writes its record and the new data dir beside the data
  // dir and renames them: the directory holding it must take writes.
  if (::access(parent.c_str(), W_OK | X_OK) != 0)
    out.push_back(make_reason(cairn::v1::ERROR_CODE_PREFLIGHT_FAILED,
                              "the directory holding the data dir, '" + parent + "', is not writable (" + std::strerror(errno) +
                                  "): the data step could not put the snapshot in place",
                              component_));
  else if (std::string probe = parent + "/.cairn-preflight-" + random_hex(4);
           ::mkdir(probe.c_str(), 0700) != 0)  // root passes access(); an immutable or read-only dir does not
    out.push_back(make_reason(
        cairn::v1::ERROR_CODE_PREFLIGHT_FAILED,
        "cannot create a directory in '" + parent + "' (" + std::strerror(errno) + "): the data step could not put the snapshot in place",
        component_));
  else
    ::rmdir(probe.c_str());
  // The data step extracts the snapshot beside the data dir and has etcdctl
  // make a new data dir from it there: room for both, weighed against this
  // snapshot (the live database's size, which the task's first check used,
  // can be far smaller than a backup taken before a compaction).
  if (auto p = restore_space_problem(ctx, spec.snapshot_id, parent, {dd}, 2); !p.empty())
    out.push_back(make_reason(cairn::v1::ERROR_CODE_NO_SPACE, p, component_));
  struct stat st {};
  if (::lstat(dd.c_str(), &st) == 0 && !S_ISDIR(st.st_mode))
    out.push_back(make_reason(cairn::v1::ERROR_CODE_PREFLIGHT_FAILED, "'data_dir' " + dd + " is not a directory", component_));
  const std::string& tool = settings_.etcdctl;
  bool found = tool.find('/') != std::string::npos ? ::access(tool.c_str(), X_OK) == 0 : false;
  if (tool.find('/') == std::string::npos)
    if (const char* path = std::getenv("PATH"))
      for (std::string_view rest = path; !found && !rest.empty();) {
        auto colon = rest.find(':');
        std::string dir(rest.substr(0, colon));
        found = !dir.empty() && ::access((dir + "/" + tool).c_str(), X_OK) == 0;
        rest = colon == std::string_view::npos ? std::string_view{} : rest.substr(colon + 1);
      }
  if (!found)
    out.push_back(make_reason(cairn::v1::ERROR_CODE_PREFLIGHT_FAILED,
                              "'" + tool + "' (setting 'etcdctl') is not an executable: the data step runs its 'snapshot restore'",
                              component_));
  // What the member's etcd needs to start in the restored cluster, before
  // any member stops: its name among the members the snapshot recorded
  // (the new cluster is made of them, each at its peer URLs).
  if (spec.step == v1::RESTORE_STEP_PREFLIGHT) {
    try {
      nlohmann::json recorded = recorded_metadata(ctx, spec.snapshot_id);
      if (recorded.value("kind", "") == "snapshot") (void)initial_cluster_for(spec, recorded);
    } catch (const Error& e) {
      out.push_back(make_reason(cairn::v1::ERROR_CODE_PREFLIGHT_FAILED, e.what(), component_));
    }
  }
  return out;
}

DriverResult EtcdDriver::restore_commit(TaskContext& ctx, const RestoreSpec& spec) {
  (void)spec;
  const std::string& dd = settings_.data_dir;
  nlohmann::json meta = {{"step", "commit"}, {"data_dir", dd}, {"restore", ctx.restore_id}, {"committed", false}};
  try {
    std::optional<Record> rec = read_record(dd);
    if (!rec || rec->restore != ctx.restore_id || ctx.restore_id.empty() || rec->state != "data") {
      meta["note"] = !rec                             ? "no record of this restore here: nothing to commit"
                     : rec->restore != ctx.restore_id ? "the record here is restore '" + rec->restore + "''s: left as it is"
                                                      : "this restore was rolled back here: nothing to commit";
      return succeeded(meta);
    }
    ::unlink(marker_path(dd).c_str());
    if (!rec->work.empty() && exists_path(rec->work)) {
      std::error_code ec;
      fs::remove_all(rec->work, ec);
    }
    fsync_dir(fs::path(dd).parent_path().string());
    meta["committed"] = true;
    if (!rec->aside.empty()) meta["kept"] = nlohmann::json::array({rec->aside});
  } catch (const std::exception& e) {
    return failed(cairn::v1::ERROR_CODE_IO_ERROR, std::string("committing the restore failed: ") + e.what(), component_, meta);
  }
  return succeeded(meta);
}

DriverResult EtcdDriver::restore_all(TaskContext& ctx, const RestoreSpec& spec) {
  // The runner verifies after this returns (Driver::verify with the
  // snapshot's metadata). The preflight's checks (the space for this
  // snapshot among them) come first: a refusal leaves etcd serving.
  if (auto bad = restore_preflight(ctx, spec); !bad.empty()) {
    DriverResult r;
    r.outcome = cairn::v1::TASK_OUTCOME_FAILED;
    r.reasons = std::move(bad);
    r.metadata = {{"step", "all"}};
    return r;
  }
  DriverResult stop = step_stop(ctx);
  if (stop.outcome != cairn::v1::TASK_OUTCOME_SUCCEEDED) return stop;
  DriverResult data = step_data(ctx, spec);
  nlohmann::json meta = data.metadata;
  meta["step"] = "all";
  if (data.outcome != cairn::v1::TASK_OUTCOME_SUCCEEDED) {
    // Nothing was swapped: etcd goes back up on its old data.
    DriverResult again = step_start(ctx);
    for (auto& r : again.reasons) data.reasons.push_back(r);
    data.metadata = meta;
    return data;
  }
  DriverResult start = step_start(ctx);
  if (start.outcome != cairn::v1::TASK_OUTCOME_SUCCEEDED) {
    // The new data does not come up: the old data dir goes back.
    DriverResult back = step_rollback(ctx);
    meta["rollback"] = back.metadata;
    for (auto& r : back.reasons) start.reasons.push_back(r);
    start.metadata = meta;
    return start;
  }
  // The one member runs on the restored data: the record goes, the old data
  // dir stays (the safety copy).
  DriverResult commit = restore_commit(ctx, spec);
  if (commit.outcome != cairn::v1::TASK_OUTCOME_SUCCEEDED) return commit;
  return succeeded(meta);
}

}  // namespace cairn::agent::etcd
