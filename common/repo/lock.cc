#include "common/repo/lock.h"

#include <signal.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <random>

#include "common/repo/json_int.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo {

using nlohmann::json;
using Steady = std::chrono::steady_clock;

namespace {

constexpr int kLockFormat = 2;

std::string read_first_line(const char* path) {
  std::ifstream f(path);
  std::string s;
  if (f) std::getline(f, s);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

int64_t read_boot_time() {
  std::ifstream f("/proc/stat");
  std::string key;
  int64_t v = 0;
  while (f >> key) {
    if (key == "btime" && (f >> v)) return v;
    f.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return 0;
}

// Decides what this host can decide right now; sets l.stale / l.same_process_space / l.held_note.
void judge_locally(LockInfo& l, const LocalIdentity& me) {
  if (!l.readable) {
    l.held_note = "its holder cannot be read (" + l.error + ")";
    return;
  }
  if (l.hostname != me.hostname) {
    l.held_note = "it comes from another host";
    return;
  }
  if (l.boot_id.empty() || me.boot_id.empty()) {
    l.held_note = l.boot_id.empty() ? "it was written by an older cairn that does not record the boot id and PID namespace"
                                    : "this host's boot id cannot be read";
    return;
  }
  if (l.boot_id != me.boot_id) {
    // Same machine id and an earlier boot: stale, but only when the lock was
    // last refreshed before this boot began — a cloned VM (same machine id
    // and host name, running now) refreshes after it and is judged by
    // observation instead.
    int64_t refreshed = parse_rfc3339(l.refreshed);
    int64_t booted = me.boot_time;
    if (!l.machine_id.empty() && l.machine_id == me.machine_id && refreshed > 0 && booted > 0 && refreshed < booted - 300) {
      l.stale = true;
      l.stale_reason = "written before this host last booted (boot id " + l.boot_id.substr(0, 8) + ", now " + me.boot_id.substr(0, 8) + ")";
    } else if (!l.machine_id.empty() && l.machine_id == me.machine_id) {
      l.held_note = "it comes from another boot of a machine with this machine id, refreshed since this host booted (a clone?)";
    } else {
      l.held_note = "it comes from another machine with the same host name (different boot and machine id)";
    }
    return;
  }
  if (l.pidns == 0 || me.pidns == 0 || l.pidns != me.pidns) {
    l.held_note = "its process runs in another PID namespace (a container sharing this host name)";
    return;
  }
  unsigned long long st = l.pid > 0 ? process_start_ticks(l.pid) : 0;
  // Only a process we can identify (pid and start time) decides; otherwise
  // (no start time recorded, /proc hidden) the lock is judged by observation.
  if (l.pid > 0 && (!l.start_ticks || !st)) {
    if (::kill(l.pid, 0) != 0 && errno == ESRCH) {
      l.stale = true;
      l.stale_reason = "process " + std::to_string(l.pid) + " on this host is gone";
    } else {
      l.held_note = "process " + std::to_string(l.pid) + " exists but its start time cannot be compared";
    }
    return;
  }
  l.same_process_space = true;
  if (l.pid <= 0) {
    l.stale = true;
    l.stale_reason = "it names no valid process id";
    return;
  }
  if (::kill(l.pid, 0) != 0 && errno == ESRCH) {
    l.stale = true;
    l.stale_reason = "process " + std::to_string(l.pid) + " on this host is gone";
    return;
  }
  if (st != l.start_ticks) {
    l.stale = true;
    l.stale_reason = "process id " + std::to_string(l.pid) + " now belongs to another process";
  }
}

LockInfo read_lock(Repository& r, const std::string& name, bool& gone) {
  LockInfo l;
  l.name = name;
  gone = false;
  try {
    json j = r.load_json(FileType::lock, name);
    l.exclusive = j.at("exclusive").get<bool>();
    l.hostname = j.at("hostname").get<std::string>();
    l.username = j.value("username", "");
    l.purpose = j.value("purpose", "");
    l.time = j.at("time").get<std::string>();
    l.refreshed = j.value("refreshed", l.time);
    l.pid = json_int_at<int>(j, "pid");
    l.start_ticks = json_int(j, "start_ticks", 0ull);
    l.machine_id = j.value("machine_id", "");
    l.boot_id = j.value("boot_id", "");
    l.pidns = json_int(j, "pidns", uint64_t(0));
    l.holder = j.value("holder", "");
    l.refresh_count = j.value("refresh_count", uint64_t(0));
    int64_t t = parse_rfc3339(l.refreshed);
    l.apparent_age_s = t ? int64_t(::time(nullptr)) - t : 0;
  } catch (const Error& e) {
    if (e.code() == Errc::not_found) {
      gone = true;  // released or refreshed while we looked
      return l;
    }
    l.readable = false;
    l.error = e.what();
  } catch (const std::exception& e) {
    l.readable = false;
    l.error = std::string("malformed: ") + e.what();
  }
  return l;
}

std::string random_hex8() { return to_hex(crypto::random_array<8>()); }

}  // namespace

// The holder's clock: CLOCK_BOOTTIME keeps counting while the machine is
// suspended (observers elsewhere keep watching meanwhile); steady_clock does not.
Lock::Clock::time_point Lock::Clock::now() noexcept {
  timespec ts{};
  if (::clock_gettime(CLOCK_BOOTTIME, &ts) != 0) return time_point(std::chrono::steady_clock::now().time_since_epoch());
  return time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
}

namespace {}  // namespace

LockTiming LockTiming::from_env() {
  LockTiming t;
  const char* e = std::getenv("CAIRN_LOCK_TIMING_FOR_TESTS");
  if (!e) return t;
  long stale = 0, refresh = 0;
  if (std::sscanf(e, "%ld,%ld", &stale, &refresh) == 2 && refresh > 0 && stale > refresh) {
    t.stale_after = std::chrono::seconds(stale);
    t.refresh_every = std::chrono::seconds(refresh);
  }
  return t;
}

const LocalIdentity& LocalIdentity::get() {
  static const LocalIdentity id = [] {
    LocalIdentity i;
    i.hostname = cairn::hostname();
    i.machine_id = read_first_line("/etc/machine-id");
    i.boot_id = read_first_line("/proc/sys/kernel/random/boot_id");
    struct stat st {};
    if (::stat("/proc/self/ns/pid", &st) == 0) i.pidns = uint64_t(st.st_ino);
    i.boot_time = read_boot_time();
    return i;
  }();
  return id;
}

std::string lock_duration_text(int64_t s) {
  bool neg = s < 0;
  if (neg) s = -s;
  std::string out;
  if (s >= 86400) out += std::to_string(s / 86400) + "d";
  if (s >= 3600) out += std::to_string(s / 3600 % 24) + "h";
  if (s >= 60) out += std::to_string(s / 60 % 60) + "m";
  out += std::to_string(s % 60) + "s";
  return neg ? "-" + out : out;
}

std::string LockInfo::describe() const {
  if (!readable) return "an unreadable lock file 'locks/" + name.substr(0, 12) + "…' (" + error + ")";
  std::string s = std::string(exclusive ? "exclusive" : "shared") + " lock held by pid " + std::to_string(pid) + " on '" + hostname +
                  "' (user '" + username + "', " + purpose + ", since " + time;
  if (apparent_age_s > 60)
    s += "; last refreshed " + lock_duration_text(apparent_age_s) + " ago by its clock";
  else if (apparent_age_s < -60)
    s += "; its clock is " + lock_duration_text(-apparent_age_s) + " ahead of ours";
  return s + ")";
}

std::vector<LockInfo> list_locks(Repository& r, const LockTiming&) {
  std::vector<LockInfo> out;
  const auto& me = LocalIdentity::get();
  for (const auto& name : r.list(FileType::lock)) {
    bool gone = false;
    LockInfo l = read_lock(r, name, gone);
    if (gone) continue;
    judge_locally(l, me);
    out.push_back(std::move(l));
  }
  return out;
}

std::vector<LockInfo> LockWatcher::list(Repository& r) {
  auto now = Steady::now();
  auto locks = list_locks(r, t_);
  std::map<std::string, Steady::time_point> seen;
  for (auto& l : locks) {
    auto it = first_seen_.find(l.name);
    auto first = it == first_seen_.end() ? now : it->second;
    seen[l.name] = first;
    l.watched_s = std::chrono::duration<double>(now - first).count();
    // A process this host can see alive is never judged by observation: it is live
    // (if it is hung, stopping it frees the lock; its own check() refuses to commit).
    if (!l.stale && !l.same_process_space && now - first >= t_.stale_after) {
      l.stale = true;
      l.stale_reason = "unchanged for " + lock_duration_text(int64_t(l.watched_s)) + " while watched from this host (" + l.held_note +
                       "; a live holder rewrites its lock every " + lock_duration_text(t_.refresh_every.count()) + ")";
    }
  }
  first_seen_ = std::move(seen);  // files that went away are forgotten: a name never comes back
  return locks;
}

std::vector<LockInfo> remove_locks(Repository& r, bool all, std::chrono::seconds watch, const LockTiming& t, std::vector<LockInfo>* kept) {
  std::vector<LockInfo> removed;
  auto remove = [&](const LockInfo& l) {
    try {
      r.backend().remove({FileType::lock, l.name});
    } catch (const Error& e) {
      if (e.code() != Errc::not_found) throw;
    }
    removed.push_back(l);
  };
  LockWatcher w(t);
  auto start = Steady::now();
  std::vector<std::string> initial;
  for (bool first = true;; first = false) {
    auto locks = w.list(r);
    std::vector<LockInfo> left;
    for (const auto& l : locks) {
      if (all || l.stale)
        remove(l);
      else
        left.push_back(l);
    }
    if (first)
      for (const auto& l : left) initial.push_back(l.name);
    // Done when no lock we started watching is still there unchanged (the rest proved alive).
    bool undecided = false;
    for (const auto& l : left)
      if (std::find(initial.begin(), initial.end(), l.name) != initial.end()) undecided = true;
    if (!undecided || all || Steady::now() - start >= watch) {
      if (kept) *kept = std::move(left);
      return removed;
    }
    auto pause = std::min<Steady::duration>(std::chrono::seconds(2), t.stale_after / 10);
    std::this_thread::sleep_for(std::min<Steady::duration>(pause, watch - (Steady::now() - start) + std::chrono::milliseconds(1)));
  }
}

Lock::Lock(Repository& r, LockKind kind, std::string purpose, LockTiming t, std::function<void(const std::string&)> warn)
    : repo_(r), kind_(kind), purpose_(std::move(purpose)), timing_(t), warn_(std::move(warn)), holder_(random_hex8()) {}

std::string Lock::write() {
  if (fail_refresh_ && !name_.empty()) throw Error(Errc::io, "refresh failure injected for tests");
  const auto& me = LocalIdentity::get();
  std::string now = now_rfc3339();
  if (created_.empty()) created_ = now;
  json j = {{"version", kLockFormat},
            {"exclusive", kind_ == LockKind::exclusive},
            {"hostname", me.hostname},
            {"username", username()},
            {"pid", int(::getpid())},
            {"start_ticks", process_start_ticks(::getpid())},
            {"machine_id", me.machine_id},
            {"boot_id", me.boot_id},
            {"pidns", me.pidns},
            {"holder", holder_},
            {"refresh_count", refresh_count_},
            {"purpose", purpose_},
            {"time", created_},
            {"refreshed", now},
            {"nonce", random_hex8()}};
  return repo_.save_json(FileType::lock, j);
}

std::unique_ptr<Lock> Lock::acquire(Repository& r, LockKind kind, const std::string& purpose, std::chrono::seconds wait,
                                    const std::function<void(const std::string&)>& warn, const LockTiming& timing) {
  std::unique_ptr<Lock> lk(new Lock(r, kind, purpose, timing, warn));
  auto deadline = Steady::now() + wait;
  LockWatcher watcher(timing);
  std::mt19937 rng(std::random_device{}());
  auto conflict = [&](const std::string& own) -> std::optional<LockInfo> {
    std::optional<LockInfo> found;
    for (const auto& l : watcher.list(r)) {
      if (l.name == own) continue;
      if (l.stale) {
        try {
          r.backend().remove({FileType::lock, l.name});
          if (warn) warn("removed stale " + l.describe() + ": " + l.stale_reason);
        } catch (const std::exception& e) {
          // Stale either way; a file we may not delete (another user's) must not wedge us.
          if (warn) warn("ignoring stale " + l.describe() + ": " + l.stale_reason + " (could not remove it: " + e.what() + ")");
        }
        continue;
      }
      if (!found && (kind == LockKind::exclusive || l.exclusive || !l.readable)) found = l;
    }
    return found;
  };
  for (int attempt = 0;; ++attempt) {
    auto c = conflict("");
    if (!c) {
      auto started = Clock::now();
      try {
        lk->name_ = lk->write();
        lk->last_ok_ = started;
        c = conflict(lk->name_);  // another process may have locked at the same moment
      } catch (...) {
        if (!lk->name_.empty()) {
          try {
            r.backend().remove({FileType::lock, lk->name_});
          } catch (...) {
          }
          lk->name_.clear();
        }
        throw;
      }
      if (!c) break;
      r.backend().remove({FileType::lock, lk->name_});
      lk->name_.clear();
    }
    if (Steady::now() >= deadline) {
      std::string msg = "repository is locked: " + c->describe();
      if (!c->readable)
        msg += "; an unreadable lock counts as held until it stays unchanged for " + lock_duration_text(timing.stale_after.count()) +
               " while watched: use --retry-lock, or remove it with 'cairnctl repo unlock --remove-all' if no cairnctl is running";
      else if (!c->same_process_space)
        msg += "; " + c->held_note + ", so it counts as held until it stays unchanged for " +
               lock_duration_text(timing.stale_after.count()) + " while watched" +
               (c->watched_s >= 1 ? " (watched " + lock_duration_text(int64_t(c->watched_s)) + " so far)" : "") +
               ": wait with --retry-lock " + lock_duration_text(timing.stale_after.count() + timing.refresh_every.count()) +
               ", or if you know its holder is gone, 'cairnctl repo unlock --remove-all'";
      else
        msg += "; wait for it to finish (or use --retry-lock)";
      throw Error(Errc::locked, msg);
    }
    // Jitter keeps two processes that collided from colliding again in step.
    auto pause = std::chrono::milliseconds(200 + std::uniform_int_distribution<int>(0, 300 + (attempt % 10) * 100)(rng));
    auto left = deadline - Steady::now();
    std::this_thread::sleep_for(std::min<Steady::duration>(pause, left + std::chrono::milliseconds(1)));
  }
  lk->refresher_ = std::thread([p = lk.get()] { p->refresh_loop(); });
  return lk;
}

std::unique_ptr<Lock> lock_for_reading(Repository& r, const std::string& purpose, std::chrono::seconds wait,
                                       const std::function<void(const std::string&)>& warn, const LockTiming& timing) {
  try {
    return Lock::acquire(r, LockKind::shared, purpose, wait, warn, timing);
  } catch (const Error& e) {
    int err = e.sys_errno();
    // A remote store that refuses the lock's write (Errc::denied: read-only
    // credentials, an S3 reader role or an Azure SAS of read and list) is read-only
    // to us just as a read-only mount is.
    bool read_only = e.code() == Errc::denied || err == EROFS || err == EACCES || err == EPERM || err == ENOSPC || err == EDQUOT;
    if (e.code() == Errc::locked || !read_only) throw;
    if (warn)
      warn("no lock was taken: the repository cannot be written (" + std::string(e.what()) + "); the " + purpose +
           " goes on reading without one, so a prune or forget run meanwhile from elsewhere could remove what it reads");
    return nullptr;
  }
}

void Lock::refresh_once() {
  auto started = Clock::now();
  std::string current;
  {
    std::lock_guard g(state_mu_);
    if (!broken_.empty()) return;
    current = name_;
  }
  ++refresh_count_;
  std::string fresh;
  try {
    // Someone may have removed our lock (unlock --remove-all, or judged it stale):
    // then we do not silently take it again; check() refuses to commit.
    if (!repo_.backend().size({FileType::lock, current})) {
      {
        std::lock_guard g(state_mu_);
        broken_ = "our lock file 'locks/" + current.substr(0, 12) + "…' was removed by another process (cairnctl repo unlock?)";
        name_.clear();
      }
      if (warn_) warn_("the repository lock was removed by another process; the " + purpose_ + " will not commit");
      return;
    }
    fresh = write();
  } catch (const std::exception& e) {
    bool first;
    {
      std::lock_guard g(state_mu_);
      first = !failing_;
      failing_ = true;
    }
    if (first && warn_)
      warn_(std::string("could not refresh the repository lock: ") + e.what() + "; retrying (the " + purpose_ +
            " will refuse to commit if the lock is not refreshed within " + lock_duration_text(timing_.valid_for().count()) + ")");
    return;
  }
  std::string old;
  {
    std::lock_guard g(state_mu_);
    old = name_;
    name_ = fresh;
    last_ok_ = started;
    failing_ = false;
    leftovers_.push_back(old);
  }
  std::vector<std::string> still;
  std::vector<std::string> todo;
  {
    std::lock_guard g(state_mu_);
    todo.swap(leftovers_);
  }
  bool taken_away = false;
  for (const auto& n : todo) {
    try {
      repo_.backend().remove({FileType::lock, n});
    } catch (const Error& e) {
      // The file we just replaced vanished between the check and the write:
      // someone removed our lock meanwhile, and the fresh file must not
      // quietly take it again.
      if (e.code() == Errc::not_found) {
        taken_away |= n == old;
        continue;
      }
      still.push_back(n);
    } catch (const std::exception&) {
      still.push_back(n);
    }
  }
  if (taken_away) {
    try {
      repo_.backend().remove({FileType::lock, fresh});
    } catch (const std::exception&) {
      still.push_back(fresh);
    }
    {
      std::lock_guard g(state_mu_);
      broken_ = "our lock file was removed by another process while it was being refreshed (cairnctl repo unlock?)";
      name_.clear();
    }
    if (warn_) warn_("the repository lock was removed by another process; the " + purpose_ + " will not commit");
  }
  std::lock_guard g(state_mu_);
  leftovers_.insert(leftovers_.end(), still.begin(), still.end());
}

void Lock::refresh_loop() {
  std::unique_lock g(mu_);
  for (;;) {
    bool failing;
    {
      std::lock_guard s(state_mu_);
      failing = failing_;
    }
    // After a failed refresh, retry sooner: the lock must be refreshed within valid_for().
    auto pause = failing ? std::min<std::chrono::seconds>(timing_.refresh_every, std::chrono::seconds(30)) : timing_.refresh_every;
    if (cv_.wait_for(g, pause, [&] { return stop_; })) return;
    g.unlock();
    refresh_once();
    g.lock();
  }
}

bool Lock::valid() const {
  std::lock_guard g(state_mu_);
  return broken_.empty() && !name_.empty() && Clock::now() - last_ok_ < timing_.valid_for();
}

void Lock::check(const std::string& what) const {
  std::lock_guard g(state_mu_);
  if (!broken_.empty()) throw Error(Errc::locked, "refusing " + what + ": " + broken_ + "; nothing was committed");
  if (name_.empty()) throw Error(Errc::locked, "refusing " + what + ": the repository lock was released");
  auto age = Clock::now() - last_ok_;
  if (age >= timing_.valid_for())
    throw Error(Errc::locked, "refusing " + what + ": the repository lock has not been refreshed for " +
                                  lock_duration_text(std::chrono::duration_cast<std::chrono::seconds>(age).count()) +
                                  " (refreshes are failing), so another process may already treat it as stale; nothing was committed");
  // Our current file must still be there: someone may have removed it (unlock --remove-all).
  std::optional<uint64_t> sz;
  try {
    sz = repo_.backend().size({FileType::lock, name_});
  } catch (const std::exception&) {
    return;  // cannot tell: the refresh state above is what we rely on
  }
  if (!sz)
    throw Error(Errc::locked, "refusing " + what + ": our lock file 'locks/" + name_.substr(0, 12) +
                                  "…' was removed by another process (cairnctl repo unlock?); nothing was committed");
}

void Lock::release() {
  {
    std::lock_guard g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  std::vector<std::string> names;
  {
    std::lock_guard g(state_mu_);
    names = leftovers_;
    if (!name_.empty()) names.push_back(name_);
    leftovers_.clear();
    name_.clear();
  }
  std::string failed;
  for (const auto& n : names) {
    try {
      repo_.backend().remove({FileType::lock, n});
    } catch (const Error& e) {
      if (e.code() == Errc::not_found) continue;
      failed = e.what();
    } catch (const std::exception& e) {
      failed = e.what();
    }
  }
  if (!failed.empty())
    throw Error(Errc::io, "could not remove the repository lock: " + failed +
                              "; it will be removed as stale by the next cairnctl on this host, or with 'cairnctl repo unlock'");
}

Lock::~Lock() {
  try {
    release();
  } catch (const std::exception& e) {
    if (warn_) {
      try {
        warn_(e.what());
      } catch (...) {
      }
    }
  }
}

}  // namespace cairn::repo
