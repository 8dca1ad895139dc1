#pragma once
// Repository locks: shared (backup, restore, check) and exclusive (prune, forget,
// repair). A lock names its holder (host, pid, user, purpose, time) and the
// machine it runs on (machine id, boot id, PID namespace).
//
// Staleness (docs/repository-format.md § 11 has the full rules):
//  - same machine, same boot, same PID namespace: stale when the pid is gone or
//    belongs to another process (start time differs); removed with a warning;
//  - same machine (machine id), an earlier boot: stale; removed with a warning;
//  - anything else (another host, another PID namespace, an older lock without
//    these fields, an unreadable lock file): judged only by observation on our
//    monotonic clock: stale when the file stayed unchanged for `stale_after` while
//    this process watched it. Wall-clock times written by another host are never
//    trusted; without watching such a lock counts as held.
// A holder refreshes its lock every `refresh_every`; check() refuses to let it
// commit when it has not refreshed within stale_after - refresh_every, or when its
// lock file was removed by someone else.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/repo/repository.h"

namespace cairn::repo {

enum class LockKind { shared, exclusive };

struct LockTiming {
  std::chrono::seconds stale_after{30 * 60};   // unchanged this long while watched: stale
  std::chrono::seconds refresh_every{5 * 60};  // a holder rewrites its lock this often
  // A holder may commit while its last successful refresh began less than this long ago.
  std::chrono::seconds valid_for() const { return stale_after - refresh_every; }
  // For tests only: CAIRN_LOCK_TIMING_FOR_TESTS="STALE_SECONDS,REFRESH_SECONDS"
  // (refresh < stale) overrides the defaults; anything else leaves them.
  static LockTiming from_env();
};

struct LockInfo {
  std::string name;
  bool exclusive = false;
  std::string hostname, username, purpose, time, refreshed;
  int pid = 0;
  unsigned long long start_ticks = 0;
  // Written since lock format 2; empty / 0 in older locks.
  std::string machine_id, boot_id, holder;  // holder: random id, the same for every refresh of one lock
  uint64_t pidns = 0;
  uint64_t refresh_count = 0;
  int64_t apparent_age_s = 0;  // our wall clock minus its `refreshed` (another host's clock: a hint only)
  double watched_s = 0;        // how long this process has seen this file unchanged
  bool stale = false;
  bool same_process_space = false;  // same machine, boot and PID namespace: its pid can be checked here
  std::string stale_reason;
  std::string held_note;  // for a lock that is not stale: why we cannot call it stale
  bool readable = true;
  std::string error;  // why it is unreadable
  std::string describe() const;
};

// This machine's identity as recorded in locks (empty / 0 when unavailable).
struct LocalIdentity {
  std::string hostname, machine_id, boot_id;
  uint64_t pidns = 0;
  int64_t boot_time = 0;  // unix time this host booted ("btime" in /proc/stat), 0 when unknown
  static const LocalIdentity& get();
};

// Lists the locks, deciding staleness from what this host can check right now
// (dead process on this machine, earlier boot). Never throws for a bad lock file.
std::vector<LockInfo> list_locks(Repository& r, const LockTiming& t = {});

// Watches lock files over time: a file (content-addressed, so any refresh gives a
// new name) seen unchanged for t.stale_after on our monotonic clock is stale.
class LockWatcher {
 public:
  explicit LockWatcher(LockTiming t = {}) : t_(t) {}
  std::vector<LockInfo> list(Repository& r);

 private:
  LockTiming t_;
  std::map<std::string, std::chrono::steady_clock::time_point> first_seen_;
};

class Lock {
 public:
  // wait: how long to keep trying while a conflicting lock is held (and to watch
  // locks that may turn out stale). warn receives one line for each stale lock
  // removed and for each failed refresh; it may be called from the refresh thread.
  static std::unique_ptr<Lock> acquire(Repository& r, LockKind kind, const std::string& purpose,
                                       std::chrono::seconds wait = std::chrono::seconds(0),
                                       const std::function<void(const std::string&)>& warn = {},
                                       const LockTiming& timing = LockTiming::from_env());
  ~Lock();
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

  // True while the lock may be relied on: refreshed recently enough that no other
  // process can have judged it stale, and not removed by someone else.
  bool valid() const;
  // Throws Error(Errc::locked) naming the problem unless valid(). `what` names the
  // step refused ("writing the snapshot").
  void check(const std::string& what) const;
  // Removes the lock file now; throws when it cannot (the destructor only warns).
  void release();
  std::string file_name() const {
    std::lock_guard g(state_mu_);
    return name_;
  }

  // For tests: makes every later refresh fail as if the backend refused the write.
  void fail_refreshes_for_tests(bool on) { fail_refresh_ = on; }

 private:
  Lock(Repository& r, LockKind kind, std::string purpose, LockTiming t, std::function<void(const std::string&)> warn);
  std::string write();
  void refresh_once();
  void refresh_loop();

  struct Clock {  // CLOCK_BOOTTIME: counts time suspended
    using duration = std::chrono::nanoseconds;
    using rep = duration::rep;
    using period = duration::period;
    using time_point = std::chrono::time_point<Clock>;
    static constexpr bool is_steady = true;
    static time_point now() noexcept;
  };

  Repository& repo_;
  LockKind kind_;
  std::string purpose_;
  LockTiming timing_;
  std::function<void(const std::string&)> warn_;
  std::string holder_;
  std::string created_;
  uint64_t refresh_count_ = 0;

  mutable std::mutex state_mu_;  // guards the fields below
  std::string name_;
  std::vector<std::string> leftovers_;  // our older lock files whose removal failed
  Clock::time_point last_ok_;
  std::string broken_;  // set when our lock file was removed by someone else
  bool failing_ = false;

  std::mutex mu_;  // the refresher's sleep
  std::condition_variable cv_;
  bool stop_ = false;
  std::atomic<bool> fail_refresh_{false};
  std::thread refresher_;
};

// For commands that only read (check, restore): a shared lock as Lock::acquire takes
// it, or, when the repository cannot be written at all (a read-only filesystem or
// mount, no permission, a full disk or quota: EROFS, EACCES, EPERM, ENOSPC, EDQUOT),
// none, after warning that no lock was taken. A conflicting lock still refuses
// (Errc::locked) and any other failure still throws. Returns nullptr without a lock.
std::unique_ptr<Lock> lock_for_reading(Repository& r, const std::string& purpose, std::chrono::seconds wait = std::chrono::seconds(0),
                                       const std::function<void(const std::string&)>& warn = {},
                                       const LockTiming& timing = LockTiming::from_env());

// Removes stale locks (see list_locks); with watch > 0 also watches the others
// for up to that long (at most until they are all decided) and removes those that
// stay unchanged for t.stale_after. With all, removes every lock. Returns what was
// removed; `kept`, when given, receives the locks left in place.
std::vector<LockInfo> remove_locks(Repository& r, bool all, std::chrono::seconds watch = std::chrono::seconds(0), const LockTiming& t = {},
                                   std::vector<LockInfo>* kept = nullptr);

// "1h2m", "5m0s", "12s": for messages.
std::string lock_duration_text(int64_t seconds);

}  // namespace cairn::repo
