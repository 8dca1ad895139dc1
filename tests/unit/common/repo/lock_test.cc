#include "common/repo/lock.h"

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/repo/archiver.h"
#include "common/repo/prune.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "common/util/fs.h"

using namespace cairn;
using namespace cairn::repo;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct TestRepo {
  fs::path dir;
  std::string root;
  std::unique_ptr<Repository> repo;
  TestRepo() {
    std::string t = (fs::temp_directory_path() / "cairn-lock-XXXXXX").string();
    REQUIRE(mkdtemp(t.data()));
    dir = t;
    root = (dir / "repo").string();
    InitOptions io;
    io.kdf = KdfParams{.scrypt = {1024, 8, 1}};
    auto be = make_fs_backend(root);
    Repository::init(*be, Secret(Secret::Kind::passphrase, "pw"), io);
    repo = Repository::open(make_fs_backend(root), Secret(Secret::Kind::passphrase, "pw"));
  }
  ~TestRepo() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
  std::vector<std::string> lock_files() const {
    std::vector<std::string> out;
    if (fs::exists(fs::path(root) / "locks"))
      for (const auto& e : fs::directory_iterator(fs::path(root) / "locks"))
        if (e.path().filename().string()[0] != '.') out.push_back(e.path().filename().string());
    std::sort(out.begin(), out.end());
    return out;
  }
};

// A lock file as another process would write it.
nlohmann::json foreign_lock(const std::string& host, int pid, bool exclusive = true) {
  return {{"version", 2},
          {"exclusive", exclusive},
          {"hostname", host},
          {"username", "someone"},
          {"pid", pid},
          {"start_ticks", 12345},
          {"machine_id", "m-other"},
          {"boot_id", "b-other"},
          {"pidns", 4026531836ull},
          {"holder", "0123456789abcdef"},
          {"refresh_count", 0},
          {"purpose", "prune"},
          {"time", "2020-01-01T00:00:00Z"},
          {"refreshed", "2020-01-01T00:00:00Z"},
          {"nonce", "00"}};
}

nlohmann::json local_lock(int pid) {
  const auto& me = LocalIdentity::get();
  auto j = foreign_lock(me.hostname, pid);
  j["machine_id"] = me.machine_id;
  j["boot_id"] = me.boot_id;
  j["pidns"] = me.pidns;
  j["start_ticks"] = 0;
  j["time"] = j["refreshed"] = now_rfc3339();
  return j;
}

int dead_pid() {
  pid_t p = fork();
  if (p == 0) _exit(0);
  REQUIRE(p > 0);
  int st = 0;
  REQUIRE(waitpid(p, &st, 0) == p);
  return p;
}

LockTiming fast(int stale, int refresh) {
  LockTiming t;
  t.stale_after = std::chrono::seconds(stale);
  t.refresh_every = std::chrono::seconds(refresh);
  return t;
}

struct Warnings {
  std::mutex mu;
  std::vector<std::string> lines;
  std::function<void(const std::string&)> fn() {
    return [this](const std::string& m) {
      std::lock_guard g(mu);
      lines.push_back(m);
    };
  }
  std::string all() {
    std::lock_guard g(mu);
    std::string s;
    for (auto& l : lines) s += l + "\n";
    return s;
  }
};

std::string locked_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    REQUIRE(e.code() == Errc::locked);
    return e.what();
  }
  FAIL("expected Errc::locked");
  return "";
}

}  // namespace

TEST_CASE("lock: a foreign lock with an old wall-clock time that is still being refreshed is never broken") {
  TestRepo tr;
  std::atomic<bool> stop{false};
  auto j = foreign_lock("other-host", 4242);
  std::string name = tr.repo->save_json(FileType::lock, j);
  // The other host refreshes every 300 ms (rewrite, then delete the old file), with
  // its clock two years behind ours.
  std::thread holder([&] {
    auto r2 = Repository::open(make_fs_backend(tr.root), Secret(Secret::Kind::passphrase, "pw"));
    uint64_t n = 0;
    while (!stop) {
      std::this_thread::sleep_for(300ms);
      j["refresh_count"] = ++n;
      j["nonce"] = std::to_string(n);
      std::string fresh = r2->save_json(FileType::lock, j);
      r2->backend().remove({FileType::lock, name});
      name = fresh;
    }
  });
  Warnings w;
  std::string msg = locked_message([&] { Lock::acquire(*tr.repo, LockKind::shared, "backup", 4s, w.fn(), fast(2, 1)); });
  stop = true;
  holder.join();
  CHECK(msg.find("other-host") != std::string::npos);
  CHECK(msg.find("pid 4242") != std::string::npos);
  CHECK(msg.find("ago by its clock") != std::string::npos);
  CHECK(msg.find("another host") != std::string::npos);
  CHECK(w.all().find("removed") == std::string::npos);
  CHECK(tr.lock_files() == std::vector<std::string>{name});
}

TEST_CASE("lock: a foreign lock counts as held without watching, and as stale once seen unchanged for the interval") {
  TestRepo tr;
  std::string name = tr.repo->save_json(FileType::lock, foreign_lock("other-host", 4242));
  auto ls = list_locks(*tr.repo);
  REQUIRE(ls.size() == 1);
  CHECK_FALSE(ls[0].stale);
  CHECK(ls[0].apparent_age_s > 365 * 86400);

  // Without waiting: reported as held, with holder and apparent age.
  std::string msg = locked_message([&] { Lock::acquire(*tr.repo, LockKind::shared, "backup", 0s, {}, fast(2, 1)); });
  CHECK(msg.find("other-host") != std::string::npos);
  CHECK(msg.find("ago by its clock") != std::string::npos);
  CHECK(msg.find("--retry-lock") != std::string::npos);
  // unlock without watching keeps it.
  std::vector<LockInfo> kept;
  CHECK(remove_locks(*tr.repo, false, 0s, fast(2, 1), &kept).empty());
  REQUIRE(kept.size() == 1);
  CHECK(tr.lock_files() == std::vector<std::string>{name});

  // Waiting longer than the stale interval: unchanged while watched, so stale and removed.
  Warnings w;
  auto start = std::chrono::steady_clock::now();
  auto lk = Lock::acquire(*tr.repo, LockKind::exclusive, "prune", 6s, w.fn(), fast(2, 1));
  CHECK(std::chrono::steady_clock::now() - start >= 2s);
  CHECK(w.all().find("removed stale") != std::string::npos);
  CHECK(w.all().find("other-host") != std::string::npos);
  CHECK(w.all().find("unchanged for") != std::string::npos);
  CHECK(tr.lock_files() == std::vector<std::string>{lk->file_name()});
}

TEST_CASE("lock: unlock --watch removes a foreign lock that stays unchanged") {
  TestRepo tr;
  tr.repo->save_json(FileType::lock, foreign_lock("other-host", 4242));
  std::vector<LockInfo> kept;
  auto removed = remove_locks(*tr.repo, false, 5s, fast(2, 1), &kept);
  REQUIRE(removed.size() == 1);
  CHECK(removed[0].stale_reason.find("unchanged") != std::string::npos);
  CHECK(kept.empty());
  CHECK(tr.lock_files().empty());
}

TEST_CASE("lock: same host and machine, an earlier boot: stale") {
  TestRepo tr;
  REQUIRE_FALSE(LocalIdentity::get().boot_id.empty());
  if (LocalIdentity::get().machine_id.empty()) {
    WARN("no /etc/machine-id here");
    return;
  }
  auto j = local_lock(::getpid());  // even a pid alive now: it is another boot's process
  j["boot_id"] = "00000000-0000-0000-0000-000000000000";
  SECTION("refreshed after this boot began (a clone of this machine, running now): held") {
    tr.repo->save_json(FileType::lock, j);
    auto ls = list_locks(*tr.repo);
    REQUIRE(ls.size() == 1);
    CHECK_FALSE(ls[0].stale);
    return;
  }
  // Last refreshed an hour before this host booted.
  j["time"] = j["refreshed"] = format_rfc3339(LocalIdentity::get().boot_time - 3600);
  tr.repo->save_json(FileType::lock, j);
  auto ls = list_locks(*tr.repo);
  REQUIRE(ls.size() == 1);
  CHECK(ls[0].stale);
  CHECK(ls[0].stale_reason.find("booted") != std::string::npos);
  Warnings w;
  auto lk = Lock::acquire(*tr.repo, LockKind::exclusive, "prune", 0s, w.fn(), fast(2, 1));
  CHECK(w.all().find("removed stale") != std::string::npos);
  CHECK(tr.lock_files().size() == 1);
}

TEST_CASE("lock: same host name, another machine (boot and machine id differ): held") {
  TestRepo tr;
  auto j = local_lock(dead_pid());
  j["boot_id"] = "00000000-0000-0000-0000-000000000000";
  j["machine_id"] = "another-machine";
  tr.repo->save_json(FileType::lock, j);
  auto ls = list_locks(*tr.repo);
  REQUIRE(ls.size() == 1);
  CHECK_FALSE(ls[0].stale);
  std::string msg = locked_message([&] { Lock::acquire(*tr.repo, LockKind::shared, "backup", 0s, {}, fast(2, 1)); });
  CHECK(msg.find("another machine") != std::string::npos);
}

TEST_CASE("lock: same host and boot, another PID namespace: held even when the pid does not exist here") {
  TestRepo tr;
  int pid = dead_pid();
  auto j = local_lock(pid);
  j["pidns"] = LocalIdentity::get().pidns + 1;
  tr.repo->save_json(FileType::lock, j);
  auto ls = list_locks(*tr.repo);
  REQUIRE(ls.size() == 1);
  CHECK_FALSE(ls[0].stale);
  CHECK_FALSE(ls[0].same_process_space);
  std::string msg = locked_message([&] { Lock::acquire(*tr.repo, LockKind::shared, "backup", 0s, {}, fast(2, 1)); });
  CHECK(msg.find("PID namespace") != std::string::npos);
  CHECK(tr.lock_files().size() == 1);
}

TEST_CASE("lock: same host, boot and PID namespace, dead pid: stale, removed with a warning naming it") {
  TestRepo tr;
  int pid = dead_pid();
  tr.repo->save_json(FileType::lock, local_lock(pid));
  Warnings w;
  auto lk = Lock::acquire(*tr.repo, LockKind::exclusive, "prune", 0s, w.fn(), fast(2, 1));
  CHECK(w.all().find("removed stale") != std::string::npos);
  CHECK(w.all().find("pid " + std::to_string(pid)) != std::string::npos);
  CHECK(tr.lock_files() == std::vector<std::string>{lk->file_name()});
}

TEST_CASE("lock: same host, live pid with another start time: stale; with the same start time: held") {
  TestRepo tr;
  auto j = local_lock(::getpid());
  j["start_ticks"] = process_start_ticks(::getpid()) + 1;
  tr.repo->save_json(FileType::lock, j);
  auto ls = list_locks(*tr.repo);
  REQUIRE(ls.size() == 1);
  CHECK(ls[0].stale);

  TestRepo tr2;
  j["start_ticks"] = process_start_ticks(::getpid());
  tr2.repo->save_json(FileType::lock, j);
  locked_message([&] { Lock::acquire(*tr2.repo, LockKind::shared, "backup", 0s, {}, fast(2, 1)); });
  // A live process on this host is held even when its lock is not refreshed while we watch.
  std::string msg = locked_message([&] { Lock::acquire(*tr2.repo, LockKind::shared, "backup", 3s, {}, fast(2, 1)); });
  CHECK(msg.find("wait for it to finish") != std::string::npos);
  CHECK(tr2.lock_files().size() == 1);
}

TEST_CASE("lock: an old lock without boot id or PID namespace on this host name is held, not judged by pid") {
  TestRepo tr;
  nlohmann::json j = {{"exclusive", true},          {"hostname", LocalIdentity::get().hostname},
                      {"username", "root"},         {"pid", dead_pid()},
                      {"start_ticks", 1},           {"purpose", "prune"},
                      {"time", now_rfc3339()},      {"refreshed", now_rfc3339()},
                      {"nonce", "0123456789abcdef"}};
  tr.repo->save_json(FileType::lock, j);
  auto ls = list_locks(*tr.repo);
  REQUIRE(ls.size() == 1);
  CHECK(ls[0].readable);
  CHECK_FALSE(ls[0].stale);
  std::string msg = locked_message([&] { Lock::acquire(*tr.repo, LockKind::shared, "backup", 0s, {}, fast(2, 1)); });
  CHECK(msg.find("older cairn") != std::string::npos);
}

TEST_CASE("lock: an unreadable lock file neither throws from listing nor wedges for ever") {
  TestRepo tr;
  fs::create_directories(fs::path(tr.root) / "locks");
  std::ofstream(fs::path(tr.root) / "locks" / std::string(64, 'a')) << "garbage";
  // A malformed time is not an error either.
  auto j = foreign_lock("other-host", 1, false);
  j["refreshed"] = "not a time";
  tr.repo->save_json(FileType::lock, j);
  std::vector<LockInfo> ls;
  REQUIRE_NOTHROW(ls = list_locks(*tr.repo));
  REQUIRE(ls.size() == 2);
  std::string msg = locked_message([&] { Lock::acquire(*tr.repo, LockKind::shared, "backup", 0s, {}, fast(2, 1)); });
  CHECK(msg.find("unreadable") != std::string::npos);
  Warnings w;
  auto lk = Lock::acquire(*tr.repo, LockKind::exclusive, "prune", 6s, w.fn(), fast(2, 1));
  CHECK(tr.lock_files() == std::vector<std::string>{lk->file_name()});
}

TEST_CASE("lock: shared locks coexist, exclusive excludes; a refresh rewrites the file; release removes it") {
  TestRepo tr;
  auto a = Lock::acquire(*tr.repo, LockKind::shared, "backup", 0s, {}, fast(3, 1));
  auto b = Lock::acquire(*tr.repo, LockKind::shared, "restore", 0s, {}, fast(3, 1));
  locked_message([&] { Lock::acquire(*tr.repo, LockKind::exclusive, "prune", 0s, {}, fast(3, 1)); });
  std::string first = a->file_name();
  std::this_thread::sleep_for(1500ms);
  CHECK(a->file_name() != first);
  CHECK(tr.lock_files().size() == 2);
  bool found = false;
  for (const auto& l : list_locks(*tr.repo))
    if (l.name == a->file_name()) {
      found = true;
      CHECK(l.refresh_count >= 1);
      CHECK(l.boot_id == LocalIdentity::get().boot_id);
      CHECK(l.pidns == LocalIdentity::get().pidns);
      CHECK(l.holder.size() == 16);
      CHECK(l.same_process_space);
      CHECK_FALSE(l.stale);
    }
  CHECK(found);
  CHECK(a->valid());
  a->release();
  b.reset();
  CHECK(tr.lock_files().empty());
  auto c = Lock::acquire(*tr.repo, LockKind::exclusive, "prune", 0s, {}, fast(3, 1));
}

TEST_CASE("lock: a holder whose refreshes fail refuses to commit") {
  TestRepo tr;
  Warnings w;
  auto lk = Lock::acquire(*tr.repo, LockKind::shared, "backup", 0s, w.fn(), fast(3, 1));
  REQUIRE_NOTHROW(lk->check("writing the snapshot"));
  lk->fail_refreshes_for_tests(true);
  std::this_thread::sleep_for(2500ms);  // valid for 3 - 1 = 2 s after the last good refresh
  CHECK_FALSE(lk->valid());
  std::string msg = locked_message([&] { lk->check("writing the snapshot"); });
  CHECK(msg.find("refusing writing the snapshot") != std::string::npos);
  CHECK(msg.find("not been refreshed") != std::string::npos);
  CHECK(w.all().find("could not refresh") != std::string::npos);

  // The archiver asks before it writes the snapshot.
  fs::path src = tr.dir / "src";
  fs::create_directories(src);
  std::ofstream(src / "f.txt") << "hello\n";
  BackupOptions o;
  o.paths = {src.string()};
  o.threads = 1;
  o.check_lock = [&] { lk->check("writing the snapshot"); };
  msg = locked_message([&] { backup(*tr.repo, o); });
  CHECK(msg.find("not been refreshed") != std::string::npos);
  CHECK(tr.repo->list(FileType::snapshot).empty());

  // Refreshes work again: the lock becomes valid and the backup commits.
  lk->fail_refreshes_for_tests(false);
  std::this_thread::sleep_for(1500ms);
  CHECK(lk->valid());
  CHECK_NOTHROW(backup(*tr.repo, o));
  CHECK(tr.repo->list(FileType::snapshot).size() == 1);
}

TEST_CASE("lock: a holder whose lock file was removed by someone else refuses to commit") {
  TestRepo tr;
  auto lk = Lock::acquire(*tr.repo, LockKind::exclusive, "prune", 0s, {}, fast(30, 10));
  REQUIRE_NOTHROW(lk->check("deleting data"));
  tr.repo->backend().remove({FileType::lock, lk->file_name()});
  std::string msg = locked_message([&] { lk->check("deleting data"); });
  CHECK(msg.find("removed by another process") != std::string::npos);
}

TEST_CASE("lock: prune deletes nothing when its lock is no longer valid") {
  TestRepo tr;
  fs::path src = tr.dir / "src";
  fs::create_directories(src);
  std::ofstream(src / "f.bin") << std::string(1 << 20, 'x');
  BackupOptions o;
  o.paths = {src.string()};
  o.threads = 1;
  auto snap = backup(*tr.repo, o).snapshot;
  tr.repo->backend().remove({FileType::snapshot, snap.id});  // forget: its pack is now unused
  auto packs = tr.repo->list(FileType::pack);
  auto index = tr.repo->list(FileType::index);
  REQUIRE_FALSE(packs.empty());

  auto lk = Lock::acquire(*tr.repo, LockKind::exclusive, "prune", 0s, {}, fast(30, 10));
  tr.repo->backend().remove({FileType::lock, lk->file_name()});  // someone ran unlock --remove-all
  PruneOptions po;
  po.check_lock = [&] { lk->check("deleting data"); };
  std::string msg = locked_message([&] { prune(*tr.repo, po); });
  CHECK(msg.find("refusing deleting data") != std::string::npos);
  CHECK(tr.repo->list(FileType::pack) == packs);
  CHECK(tr.repo->list(FileType::index) == index);

  po.check_lock = {};
  prune(*tr.repo, po);
  CHECK(tr.repo->list(FileType::pack).empty());
}
