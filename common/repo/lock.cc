#include "common/repo/lock.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo {

using nlohmann::json;

namespace {
constexpr int64_t kStaleAfter = 30 * 60;
constexpr auto kRefreshEvery = std::chrono::minutes(5);

bool same_host_dead(const LockInfo& l, std::string& why) {
  if (l.hostname != hostname()) return false;
  if (::kill(l.pid, 0) != 0 && errno == ESRCH) {
    why = "process " + std::to_string(l.pid) + " on this host is gone";
    return true;
  }
  unsigned long long st = process_start_ticks(l.pid);
  if (l.start_ticks && st && st != l.start_ticks) {
    why = "process id " + std::to_string(l.pid) + " now belongs to another process";
    return true;
  }
  return false;
}
}  // namespace

std::string LockInfo::describe() const {
  if (!readable) return "an unreadable lock '" + name.substr(0, 12) + "'";
  return std::string(exclusive ? "exclusive" : "shared") + " lock held by pid " + std::to_string(pid) + " on '" + hostname +
         "' (user '" + username + "', " + purpose + ", since " + time + ")";
}

std::vector<LockInfo> list_locks(Repository& r) {
  std::vector<LockInfo> out;
  int64_t now = ::time(nullptr);
  for (const auto& name : r.list(FileType::lock)) {
    LockInfo l;
    l.name = name;
    try {
      json j = r.load_json(FileType::lock, name);
      l.exclusive = j.at("exclusive").get<bool>();
      l.hostname = j.at("hostname").get<std::string>();
      l.username = j.value("username", "");
      l.purpose = j.value("purpose", "");
      l.time = j.at("time").get<std::string>();
      l.refreshed = j.value("refreshed", l.time);
      l.pid = j.at("pid").get<int>();
      l.start_ticks = j.value("start_ticks", 0ull);
    } catch (const Error& e) {
      if (e.code() == Errc::not_found) continue;  // released while we looked
      l.readable = false;
      out.push_back(l);
      continue;
    } catch (const std::exception&) {
      l.readable = false;
      out.push_back(l);
      continue;
    }
    std::string why;
    if (same_host_dead(l, why)) {
      l.stale = true;
      l.stale_reason = why;
    } else if (l.hostname != hostname() && now - parse_rfc3339(l.refreshed) > kStaleAfter) {
      l.stale = true;
      l.stale_reason = "not refreshed since " + l.refreshed;
    }
    out.push_back(l);
  }
  return out;
}

std::vector<LockInfo> remove_locks(Repository& r, bool all) {
  std::vector<LockInfo> removed;
  for (const auto& l : list_locks(r)) {
    if (all || l.stale) {
      r.backend().remove({FileType::lock, l.name});
      removed.push_back(l);
    }
  }
  return removed;
}

std::string Lock::write() {
  std::string now = now_rfc3339();
  if (created_.empty()) created_ = now;
  json j = {{"exclusive", kind_ == LockKind::exclusive},
            {"hostname", hostname()},
            {"username", username()},
            {"pid", int(::getpid())},
            {"start_ticks", process_start_ticks(::getpid())},
            {"purpose", purpose_},
            {"time", created_},
            {"refreshed", now},
            {"nonce", to_hex(crypto::random_array<8>())}};
  return repo_.save_json(FileType::lock, j);
}

std::unique_ptr<Lock> Lock::acquire(Repository& r, LockKind kind, const std::string& purpose, std::chrono::seconds wait,
                                    const std::function<void(const std::string&)>& warn) {
  std::unique_ptr<Lock> lk(new Lock(r, kind, purpose));
  auto deadline = std::chrono::steady_clock::now() + wait;
  auto conflict = [&](const std::string& own) -> std::optional<LockInfo> {
    for (const auto& l : list_locks(r)) {
      if (l.name == own) continue;
      if (l.stale) {
        if (l.hostname == hostname() && l.readable) {
          r.backend().remove({FileType::lock, l.name});
          if (warn) warn("removed stale lock of pid " + std::to_string(l.pid) + " (" + l.stale_reason + ")");
        } else if (warn) {
          warn("ignoring stale " + l.describe() + ": " + l.stale_reason + " (remove it with 'cairnctl repo unlock')");
        }
        continue;
      }
      if (kind == LockKind::exclusive || l.exclusive || !l.readable) return l;
    }
    return std::nullopt;
  };
  for (int attempt = 0;; ++attempt) {
    auto c = conflict("");
    if (!c) {
      lk->name_ = lk->write();
      c = conflict(lk->name_);  // another process may have locked at the same moment
      if (!c) break;
      r.backend().remove({FileType::lock, lk->name_});
      lk->name_.clear();
    }
    if (std::chrono::steady_clock::now() >= deadline)
      throw Error(Errc::locked, "repository is locked: " + c->describe() +
                                    (c->readable ? "; wait for it to finish (or use --retry-lock)" : "; inspect it with 'cairnctl repo unlock'"));
    std::this_thread::sleep_for(std::chrono::milliseconds(200 + (attempt % 10) * 100));
  }
  lk->refresher_ = std::thread([p = lk.get()] { p->refresh_loop(); });
  return lk;
}

void Lock::refresh_loop() {
  std::unique_lock g(mu_);
  while (!cv_.wait_for(g, kRefreshEvery, [&] { return stop_; })) {
    try {
      std::string old = name_;
      name_ = write();
      repo_.backend().remove({FileType::lock, old});
    } catch (const std::exception&) {
      // the next refresh tries again; a lock that is not refreshed becomes stale for other hosts only
    }
  }
}

Lock::~Lock() {
  {
    std::lock_guard g(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (refresher_.joinable()) refresher_.join();
  try {
    if (!name_.empty()) repo_.backend().remove({FileType::lock, name_});
  } catch (...) {
  }
}

}  // namespace cairn::repo
