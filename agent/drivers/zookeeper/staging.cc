#include "agent/drivers/zookeeper/staging.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "agent/restore_record.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::zookeeper {

namespace {

constexpr const char* kStateFile = ".cairn-restore-state.json";

std::string base_name(const std::string& p) { return p.substr(p.find_last_of('/') + 1); }

bool exists(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0;
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

uint64_t size_of(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
}

// A directory like `like` (mode, owner when permitted).
void make_dir_like(const std::string& dir, const std::string& like) {
  struct stat st {};
  mode_t mode = 0755;
  bool have = ::stat(like.c_str(), &st) == 0;
  if (have) mode = st.st_mode & 07777;
  if (::mkdir(dir.c_str(), mode) != 0) throw_errno("create directory", dir, errno);
  if (have) {
    if (::geteuid() == 0) (void)::lchown(dir.c_str(), st.st_uid, st.st_gid);
    (void)::chmod(dir.c_str(), mode);
  }
}

// Moves a file; across filesystems by copying (then removing the source).
void move_file(const std::string& src, const std::string& dst) {
  if (::rename(src.c_str(), dst.c_str()) == 0) return;
  int e = errno;
  if (e != EXDEV) throw_errno("rename '" + src + "' to", dst, e);
  copy_file_sparse(src, dst);
  ::unlink(src.c_str());
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (!d) throw_errno("open directory", dir, errno);
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(n);
  }
  ::closedir(d);
  return out;
}

// Links a finished file; across filesystems it is copied instead.
void link_or_copy(const std::string& src, const std::string& dst, Staged& st, bool* crossed) {
  if (::link(src.c_str(), dst.c_str()) == 0) {
    st.files_linked++;
  } else {
    int e = errno;
    if (e != EXDEV && e != EPERM) throw_errno("hard-link '" + src + "' as", dst, e);
    copy_file_sparse(src, dst);
    st.files_copied++;
    if (crossed) *crossed = true;
  }
  st.bytes += size_of(dst);
}

void copy_small(const std::string& src, const std::string& dst, Staged& st) {
  copy_file_sparse(src, dst);
  st.files_copied++;
  st.bytes += size_of(dst);
}

std::string trimmed_file(const std::string& path) {
  Bytes b = read_file(path, 4096);
  std::string s(b.begin(), b.end());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t')) s.pop_back();
  size_t i = 0;
  while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  return s.substr(i);
}

// Removes what it names unless released.
struct TreeGuard {
  std::vector<std::string> dirs;
  bool armed = true;
  ~TreeGuard() {
    if (armed)
      for (auto& d : dirs) remove_tree(d);
  }
};

// Every regular file of version-2 (and of the log directory's), linked; the
// newest log copied.
void stage_raw(const std::string& data_v2, const std::string& s_data_v2, const std::string& log_v2, const std::string& s_log_v2,
               Staged& st) {
  Staged fresh;
  fresh.data_staging = st.data_staging;
  fresh.log_staging = st.log_staging;
  st = fresh;
  st.raw = true;
  std::string newest_log;
  uint64_t newest = 0;
  for (const auto& dir : {log_v2}) {
    if (!is_dir(dir)) continue;
    for (const auto& n : list_dir(dir))
      if (auto z = zxid_from_name(n, "log"); z && (newest_log.empty() || *z >= newest)) newest = *z, newest_log = n;
  }
  auto take = [&](const std::string& from, const std::string& to) {
    if (!is_dir(from)) return;
    for (const auto& n : list_dir(from)) {
      if (n == "currentEpoch" || n == "acceptedEpoch") continue;  // copied with the rest below
      struct stat sb {};
      if (::lstat((from + "/" + n).c_str(), &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
      if (from == log_v2 && n == newest_log)
        copy_small(from + "/" + n, to + "/" + n, st);
      else
        link_or_copy(from + "/" + n, to + "/" + n, st, nullptr);
    }
  };
  take(data_v2, s_data_v2);
  if (log_v2 != data_v2) take(log_v2, s_log_v2);
}

}  // namespace

Staged stage(const StageSpec& spec) {
  Staged st;
  const bool separate = spec.data_log_dir != spec.data_dir;
  const std::string data_v2 = spec.data_dir + "/version-2";
  const std::string log_v2 = spec.data_log_dir + "/version-2";
  st.data_staging = spec.data_dir + "/.cairn-staging-" + spec.task;
  if (separate) st.log_staging = spec.data_log_dir + "/.cairn-staging-" + spec.task;

  TreeGuard guard;
  guard.dirs.push_back(st.data_staging);
  if (separate) guard.dirs.push_back(st.log_staging);
  for (auto& d : guard.dirs) remove_tree(d);  // a leftover of a crashed run of this task

  make_dir_like(st.data_staging, spec.data_dir);
  (void)::chmod(st.data_staging.c_str(), 0700);
  if (separate) {
    make_dir_like(st.log_staging, spec.data_log_dir);
    (void)::chmod(st.log_staging.c_str(), 0700);
  }
  const std::string s_data_v2 = st.data_staging + "/version-2";
  const std::string s_log_v2 = separate ? st.log_staging + "/version-2" : s_data_v2;

  // The purge task may remove an old file between listing and linking:
  // start over with a fresh listing (it keeps the newest snapshots, so this
  // settles).
  for (int attempt = 1;; ++attempt) {
    remove_tree(s_data_v2);
    if (separate) remove_tree(s_log_v2);
    Staged fresh;
    fresh.data_staging = st.data_staging;
    fresh.log_staging = st.log_staging;
    st = fresh;
    make_dir_like(s_data_v2, data_v2);
    if (separate) make_dir_like(s_log_v2, log_v2);
    try {
      st.selection = select_files(data_v2, log_v2);
      const Selection& sel = st.selection;
      link_or_copy(sel.snapshot, s_data_v2 + "/" + base_name(sel.snapshot), st, nullptr);
      for (size_t i = 0; i < sel.logs.size(); ++i) {
        std::string dst = s_log_v2 + "/" + base_name(sel.logs[i]);
        if (i + 1 < sel.logs.size()) {
          link_or_copy(sel.logs[i], dst, st, &st.logs_copied_across_filesystems);
        } else {
          copy_small(sel.logs[i], dst, st);  // the live log: appended to while we read
        }
      }
      break;
    } catch (const Error& e) {
      if (e.sys_errno() == ENOENT && attempt < 3) continue;
      if (e.code() == Errc::not_found && e.sys_errno() == 0 && spec.raw_when_no_snapshot) {
        stage_raw(data_v2, s_data_v2, log_v2, s_log_v2, st);
        break;
      }
      throw;
    }
  }

  for (const char* name : {"currentEpoch", "acceptedEpoch"}) {
    std::string src = data_v2 + "/" + name;
    if (exists(src)) copy_small(src, s_data_v2 + "/" + name, st);
  }
  st.current_epoch = read_epoch_file(s_data_v2 + "/currentEpoch");
  st.accepted_epoch = read_epoch_file(s_data_v2 + "/acceptedEpoch");
  if (exists(spec.data_dir + "/myid")) {
    copy_small(spec.data_dir + "/myid", st.data_staging + "/myid", st);
    st.myid = trimmed_file(st.data_staging + "/myid");
  }
  const std::string conf = st.data_staging + "/conf";
  make_dir_like(conf, st.data_staging);
  copy_small(spec.config_file, conf + "/" + base_name(spec.config_file), st);
  if (!spec.dynamic_config_file.empty() && exists(spec.dynamic_config_file) &&
      base_name(spec.dynamic_config_file) != base_name(spec.config_file))
    copy_small(spec.dynamic_config_file, conf + "/" + base_name(spec.dynamic_config_file), st);

  // The position the backup reaches: the last transaction of the newest log
  // that holds any (a log just rolled may hold none yet).
  const auto& logs = st.selection.logs;
  for (size_t i = logs.size(); i-- > 0;) {
    LogScan s = scan_log(s_log_v2 + "/" + base_name(logs[i]));
    st.log_txns += s.txns;
    if (s.txns > 0 && st.last_zxid == 0) st.last_zxid = s.last_zxid;
    if (st.last_zxid != 0) break;
  }
  guard.armed = false;
  return st;
}

Placed place_restored(const PlaceSpec& spec) {
  Placed out;
  const bool separate_here = spec.data_log_dir != spec.data_dir;
  const std::string src_data_v2 = spec.data_root + "/version-2";
  const std::string src_log_v2 = spec.log_root.empty() ? src_data_v2 : spec.log_root + "/version-2";
  if (!is_dir(src_data_v2))
    throw Error(Errc::corrupt,
                "the snapshot holds no 'version-2' directory under '" + spec.data_root + "'; it is not a ZooKeeper backup of this driver");
  // Nothing is moved unless the restored files make a state ZooKeeper loads.
  Selection sel = select_files(src_data_v2, src_log_v2);
  out.snapshot_zxid = sel.snapshot_zxid;
  out.zxid = sel.snapshot_zxid;
  for (size_t i = sel.logs.size(); i-- > 0;) {
    LogScan s = scan_log(sel.logs[i]);
    if (s.txns > 0) {
      out.zxid = std::max(out.zxid, s.last_zxid);
      break;
    }
  }

  const std::string new_data = spec.data_dir + "/version-2.cairn-new-" + spec.stamp;
  const std::string new_log = spec.data_log_dir + "/version-2.cairn-new-" + spec.stamp;
  TreeGuard fresh;
  fresh.dirs.push_back(new_data);
  if (separate_here) fresh.dirs.push_back(new_log);
  for (auto& d : fresh.dirs) remove_tree(d);

  if (::rename(src_data_v2.c_str(), new_data.c_str()) != 0) throw_errno("move '" + src_data_v2 + "' to", new_data, errno);
  // Logs go where this server keeps them.
  const std::string log_dest = separate_here ? new_log : new_data;
  if (separate_here) make_dir_like(new_log, new_data);
  auto move_logs_from = [&](const std::string& dir) {
    for (const auto& n : list_dir(dir))
      if (zxid_from_name(n, "log")) move_file(dir + "/" + n, log_dest + "/" + n);
  };
  if (separate_here) move_logs_from(new_data);
  if (!spec.log_root.empty() && is_dir(src_log_v2)) move_logs_from(src_log_v2);
  for (const std::string& d : {new_data, log_dest}) {
    for (const auto& n : list_dir(d)) {
      out.files++;
      out.bytes += size_of(d + "/" + n);
    }
    if (!separate_here) break;
  }

  // Swap: the old directories are renamed, never removed.
  const std::string data_v2 = spec.data_dir + "/version-2";
  const std::string log_v2 = spec.data_log_dir + "/version-2";
  const std::string old_data = spec.data_dir + "/" + kOldPrefix + spec.stamp;
  const std::string old_log = spec.data_log_dir + "/" + kOldPrefix + spec.stamp;
  if (exists(old_data) || (separate_here && exists(old_log)))
    throw Error(Errc::exists, "'" + old_data + "' already exists; run the restore again (a new name is chosen each second)");
  // What a rollback puts back, next to the data it describes (the one
  // format of a member's record: agent/restore_record.h), written before
  // the first rename: an agent killed between the renames leaves it, and
  // the rollback puts back what had moved (a directory whose restored copy
  // still waits under its -new- name was never set aside).
  const bool has_data = exists(data_v2), has_log = separate_here && exists(log_v2);
  StepRecord rec;
  rec.restore_id = spec.restore_id;
  rec.task_id = spec.task_id;
  rec.member = spec.member;
  rec.payload = {{"stamp", spec.stamp},
                 {"old_data_v2", has_data ? old_data : ""},
                 {"old_log_v2", has_log ? old_log : ""},
                 {"new_data_v2", new_data},
                 {"new_log_v2", separate_here ? new_log : ""},
                 {"data_log_dir", spec.data_log_dir},
                 {"snapshot_zxid", zxid_hex(out.snapshot_zxid)},
                 {"zxid", zxid_hex(out.zxid)}};
  write_step_record(spec.data_dir + "/" + kStateFile, rec);
  bool moved_data = false, moved_log = false, placed_data = false;
  try {
    if (exists(data_v2)) {
      if (::rename(data_v2.c_str(), old_data.c_str()) != 0) throw_errno("set aside '" + data_v2 + "' as", old_data, errno);
      moved_data = true;
      out.old_data_v2 = old_data;
    }
    if (::rename(new_data.c_str(), data_v2.c_str()) != 0) throw_errno("move '" + new_data + "' to", data_v2, errno);
    placed_data = true;
    if (separate_here) {
      if (exists(log_v2)) {
        if (::rename(log_v2.c_str(), old_log.c_str()) != 0) throw_errno("set aside '" + log_v2 + "' as", old_log, errno);
        moved_log = true;
        out.old_log_v2 = old_log;
      }
      if (::rename(new_log.c_str(), log_v2.c_str()) != 0) throw_errno("move '" + new_log + "' to", log_v2, errno);
    }
  } catch (...) {
    if (placed_data) (void)::rename(data_v2.c_str(), new_data.c_str());
    if (moved_data) (void)::rename(old_data.c_str(), data_v2.c_str());
    if (moved_log) (void)::rename(old_log.c_str(), log_v2.c_str());
    try {
      remove_step_record(spec.data_dir + "/" + kStateFile);  // everything is where it was
    } catch (const Error&) {
      // Left: this restore's rollback reads it and finds nothing moved.
    }
    throw;
  }
  fresh.armed = false;
  return out;
}

namespace {

// The record's payload with its restore as "restore"; throws cairn::Error
// when it cannot be read, an empty object when there is none.
nlohmann::json read_state_or_throw(const std::string& data_dir) {
  auto rec = read_step_record(data_dir + "/" + kStateFile);
  if (!rec) return nlohmann::json::object();
  nlohmann::json j = rec->payload;
  j["restore"] = rec->restore_id;
  return j;
}

}  // namespace

nlohmann::json read_restore_state(const std::string& data_dir) {
  try {
    return read_state_or_throw(data_dir);
  } catch (const std::exception&) {
    return nlohmann::json::object();
  }
}

nlohmann::json commit_restore(const std::string& data_dir, const std::string& restore_id) {
  nlohmann::json state = read_restore_state(data_dir);
  if (restore_id.empty() || state.value("restore", "") != restore_id) return nlohmann::json::object();
  const std::string path = data_dir + "/" + kStateFile;
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) throw_errno("remove the restore's record", path, errno);
  fsync_dir(data_dir);
  return state;
}

RolledBack rollback(const std::string& data_dir, const std::string& data_log_dir, const std::string& stamp, const std::string& restore_id) {
  const std::string state_path = data_dir + "/" + kStateFile;
  RolledBack rb;
  if (!exists(state_path)) {
    rb.nothing = true;
    return rb;
  }
  nlohmann::json state;
  try {
    state = read_state_or_throw(data_dir);
  } catch (const std::exception& e) {
    throw Error(Errc::corrupt, "'" + state_path + "' cannot be read: " + e.what() + "; put the '" + kOldPrefix +
                                   "*' directory back as 'version-2' by hand");
  }
  if (!state.is_object() || state.value("restore", "") != restore_id) {
    rb.nothing = true;
    return rb;
  }
  rb.old_data_v2 = state.value("old_data_v2", "");
  rb.old_log_v2 = state.value("old_log_v2", "");
  // The restored copies' names before the swap (a record of an older agent,
  // written after the swap, names none).
  const std::string new_data_v2 = state.value("new_data_v2", ""), new_log_v2 = state.value("new_log_v2", "");
  const bool separate = data_log_dir != data_dir;
  const std::string data_v2 = data_dir + "/version-2";
  const std::string log_v2 = data_log_dir + "/version-2";
  // A directory whose restored copy is still under its -new- name was never
  // touched (the agent stopped before the swap reached it): it stays.
  const bool data_untouched = !new_data_v2.empty() && is_dir(new_data_v2) && (rb.old_data_v2.empty() || !is_dir(rb.old_data_v2));
  const bool log_untouched = !separate || (!new_log_v2.empty() && is_dir(new_log_v2) && (rb.old_log_v2.empty() || !is_dir(rb.old_log_v2)));
  for (const auto& [old, untouched] : {std::pair{rb.old_data_v2, data_untouched}, std::pair{rb.old_log_v2, log_untouched}})
    if (!untouched && !old.empty() && !is_dir(old))
      throw Error(Errc::not_found, "'" + old + "', the data set aside by the restore, is gone; nothing was changed");
  if (data_untouched && log_untouched) {  // stopped before the first rename: nothing moved
    for (const std::string& n : {new_data_v2, new_log_v2})
      if (!n.empty() && is_dir(n)) remove_tree(n);
    ::unlink(state_path.c_str());
    RolledBack none;
    none.nothing = true;
    return none;
  }
  rb.restored_aside = data_dir + "/version-2.cairn-failed-" + stamp;
  if (!data_untouched) {
    if (exists(data_v2) && ::rename(data_v2.c_str(), rb.restored_aside.c_str()) != 0)
      throw_errno("set aside '" + data_v2 + "' as", rb.restored_aside, errno);
    if (!rb.old_data_v2.empty() && ::rename(rb.old_data_v2.c_str(), data_v2.c_str()) != 0)
      throw_errno("put '" + rb.old_data_v2 + "' back as", data_v2, errno);
  } else {
    rb.old_data_v2.clear();  // nothing was put back: it never moved
  }
  if (separate && !log_untouched) {
    std::string failed_log = data_log_dir + "/version-2.cairn-failed-" + stamp;
    if (exists(log_v2) && ::rename(log_v2.c_str(), failed_log.c_str()) != 0)
      throw_errno("set aside '" + log_v2 + "' as", failed_log, errno);
    if (!rb.old_log_v2.empty() && ::rename(rb.old_log_v2.c_str(), log_v2.c_str()) != 0)
      throw_errno("put '" + rb.old_log_v2 + "' back as", log_v2, errno);
  } else {
    rb.old_log_v2.clear();
  }
  // The restored copies a swap never reached go with the restore.
  for (const std::string& n : {new_data_v2, new_log_v2})
    if (!n.empty() && is_dir(n)) remove_tree(n);
  ::unlink(state_path.c_str());
  return rb;
}

}  // namespace cairn::agent::zookeeper
