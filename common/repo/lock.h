#pragma once
// Repository locks: shared (backup, restore, check) and exclusive (prune, forget,
// repair). A lock names its holder. A lock of a dead process on this host is
// removed; a lock from another host that has not been refreshed for 30 minutes is
// ignored with a warning; a live lock is never broken.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "common/repo/repository.h"

namespace cairn::repo {

enum class LockKind { shared, exclusive };

struct LockInfo {
  std::string name;
  bool exclusive = false;
  std::string hostname, username, purpose, time, refreshed;
  int pid = 0;
  unsigned long long start_ticks = 0;
  bool stale = false;
  std::string stale_reason;
  bool readable = true;
  std::string describe() const;
};

std::vector<LockInfo> list_locks(Repository& r);

class Lock {
 public:
  // wait: how long to keep trying while a conflicting lock is held.
  // warn receives one line for each stale lock met.
  static std::unique_ptr<Lock> acquire(Repository& r, LockKind kind, const std::string& purpose,
                                       std::chrono::seconds wait = std::chrono::seconds(0),
                                       const std::function<void(const std::string&)>& warn = {});
  ~Lock();
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;

 private:
  Lock(Repository& r, LockKind kind, std::string purpose) : repo_(r), kind_(kind), purpose_(std::move(purpose)) {}
  std::string write();
  void refresh_loop();

  Repository& repo_;
  LockKind kind_;
  std::string purpose_;
  std::string name_;
  std::string created_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread refresher_;
};

// Removes locks that are stale (dead process on this host, or unrefreshed for
// 30 minutes); with all, removes every lock. Returns what was removed.
std::vector<LockInfo> remove_locks(Repository& r, bool all);

}  // namespace cairn::repo
