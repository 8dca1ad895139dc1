// The record an in-place restore keeps while its service is stopped or its
// data swapped (agent/restore_journal.h): read back as written, a broken one
// named and left alone, and the undo safe to run at any point of the swap
// and again; a member's step record (agent/restore_record.h) in its one
// format, and an older agent's read too.
#include "agent/restore_journal.h"

#include <sys/statvfs.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "agent/driver.h"
#include "agent/drivers/repo_progress.h"
#include "agent_fixture.h"
#include "common/repo/archiver.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/storage/backend.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::test;
namespace fs = std::filesystem;

namespace {

void journal_test_put(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
}

std::string journal_test_get(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

InPlaceRestore journal_test_two_paths(const TempDir& d) {
  InPlaceRestore r;
  r.component = "pg/main";  // any name: the file name is its hex
  r.restore_id = "rs-1";
  r.task_id = "tk-1";
  r.plan_id = "pl-1";
  r.stamp = "20261127T000000Z";
  r.state = InPlaceRestore::State::swapping;
  r.moves = {{d.file("data"), d.file("data.cairn-old-20261127T000000Z")}, {d.file("tblspc"), ""}};  // nothing was there before
  r.scratch = {d.file("data.cairn-restore-20261127T000000Z")};
  return r;
}

}  // namespace

TEST_CASE("a restore record is read back as written, 0600, and a broken one is named and kept", "[restore_journal]") {
  TempDir d;
  RestoreJournal j(d.file("state/restores"));
  auto r = journal_test_two_paths(d);
  j.write(r);
  std::vector<std::string> problems;
  auto back = j.load(&problems);
  REQUIRE(problems.empty());
  REQUIRE(back.size() == 1);
  CHECK(back[0].component == "pg/main");
  CHECK(back[0].task_id == "tk-1");
  CHECK(back[0].plan_id == "pl-1");
  CHECK(back[0].state == InPlaceRestore::State::swapping);
  REQUIRE(back[0].moves.size() == 2);
  CHECK(back[0].moves[1].aside.empty());
  CHECK(back[0].scratch == r.scratch);
  for (const auto& e : fs::directory_iterator(d.file("state/restores")))
    CHECK((fs::status(e.path()).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));

  journal_test_put(d.file("state/restores/broken.json"), "{\"component\":");
  problems.clear();
  back = j.load(&problems);
  CHECK(back.size() == 1);
  REQUIRE(problems.size() == 1);
  CHECK(problems[0].find("broken.json") != std::string::npos);
  CHECK(fs::exists(d.file("state/restores/broken.json")));

  CHECK(j.clear("pg/main").empty());
  problems.clear();
  CHECK(j.load(&problems).empty());
}

TEST_CASE("an in-place restore's record is the one step-record format, and an older agent's is read", "[restore_journal]") {
  TempDir d;
  RestoreJournal j(d.file("state/restores"));
  auto r = journal_test_two_paths(d);
  j.write(r);
  std::string file;
  for (const auto& e : fs::directory_iterator(d.file("state/restores"))) file = e.path().string();
  auto rec = read_step_record(file);
  REQUIRE(rec);
  CHECK(rec->step == cairn::v1::RESTORE_STEP_ALL);
  CHECK(rec->member == "pg/main");
  CHECK(rec->restore_id == "rs-1");
  CHECK(rec->task_id == "tk-1");
  CHECK(rec->payload.at("phase") == "swapping");
  CHECK(rec->payload.at("moves").size() == 2);
  // What an agent before the one format wrote, in the same file: the same restore.
  journal_test_put(file, R"({"component": "pg/main", "restore_id": "rs-1", "task_id": "tk-1", "plan_id": "pl-1",
    "stamp": "20261127T000000Z", "state": "swapping",
    "moves": [{"path": "/d/data", "aside": "/d/data.cairn-old-20261127T000000Z"}], "scratch": []})");
  std::vector<std::string> problems;
  auto back = j.load(&problems);
  REQUIRE(problems.empty());
  REQUIRE(back.size() == 1);
  CHECK(back[0].component == "pg/main");
  CHECK(back[0].restore_id == "rs-1");
  CHECK(back[0].task_id == "tk-1");
  CHECK(back[0].plan_id == "pl-1");
  CHECK(back[0].state == InPlaceRestore::State::swapping);
  REQUIRE(back[0].moves.size() == 1);
  CHECK(back[0].moves[0].aside == "/d/data.cairn-old-20261127T000000Z");
}

TEST_CASE("a member's step record is read back as written, 0600, in its one format", "[restore_journal]") {
  TempDir d;
  const std::string path = d.file("member.json");
  CHECK_FALSE(read_step_record(path).has_value());
  StepRecord r;
  r.restore_id = "r-1";
  r.task_id = "tk-1";
  r.member = "etcd";
  r.step = cairn::v1::RESTORE_STEP_DATA;
  r.payload = {{"aside", "/data.cairn-old-x"}, {"swaps", {{"/a", "/a.cairn-old-x"}}}};
  write_step_record(path, r);
  CHECK((fs::status(path).permissions() & fs::perms::all) == (fs::perms::owner_read | fs::perms::owner_write));
  auto j = nlohmann::json::parse(journal_test_get(path));
  CHECK(j["format"] == 1);
  CHECK(j["restore_id"] == "r-1");
  CHECK(j["step"] == "data");
  CHECK(j["state"] == "data");
  CHECK(j["payload"]["aside"] == "/data.cairn-old-x");
  auto back = read_step_record(path);
  REQUIRE(back);
  CHECK(back->restore_id == "r-1");
  CHECK(back->task_id == "tk-1");
  CHECK(back->member == "etcd");
  CHECK(back->step == cairn::v1::RESTORE_STEP_DATA);
  CHECK_FALSE(back->rolled_back);
  CHECK(back->payload == r.payload);

  r.rolled_back = true;
  r.step = cairn::v1::RESTORE_STEP_ROLLBACK;
  write_step_record(path, r);
  back = read_step_record(path);
  REQUIRE(back);
  CHECK(back->rolled_back);
  CHECK(back->step == cairn::v1::RESTORE_STEP_ROLLBACK);

  remove_step_record(path);
  CHECK_FALSE(fs::exists(path));
  remove_step_record(path);  // none there: fine
}

TEST_CASE("a step record an older agent wrote is read: its keys are the payload", "[restore_journal]") {
  TempDir d;
  const std::string path = d.file("legacy.json");
  // etcd's record before the one format.
  journal_test_put(path, R"({"restore": "r-0", "step": "data", "member": "m1", "aside": "/d.cairn-old-1", "state": "data", "time": "t"})");
  auto back = read_step_record(path);
  REQUIRE(back);
  CHECK(back->restore_id == "r-0");
  CHECK(back->member == "m1");
  CHECK_FALSE(back->rolled_back);
  CHECK(back->payload == nlohmann::json({{"aside", "/d.cairn-old-1"}}));
  // Kafka's: the swaps at the top.
  journal_test_put(path, R"({"restore": "r-2", "stamp": "s", "swaps": [["/l", "/l.cairn-old-s"]]})");
  back = read_step_record(path);
  REQUIRE(back);
  CHECK(back->restore_id == "r-2");
  CHECK(back->payload["swaps"][0][1] == "/l.cairn-old-s");
  // An etcd tombstone.
  journal_test_put(path, R"({"restore": "r-3", "state": "rolled_back"})");
  back = read_step_record(path);
  REQUIRE(back);
  CHECK(back->rolled_back);
}

TEST_CASE("a step record that cannot be read is never taken for none", "[restore_journal]") {
  TempDir d;
  const std::string path = d.file("bad.json");
  for (const char* text :
       {"{\"restore\":", "[1, 2]", R"({"format": 2, "restore_id": "r"})", R"({"format": 1, "restore_id": "r", "step": "sideways"})",
        R"({"format": 1, "restore_id": "r", "payload": [1]})", R"({"format": 1})"}) {
    journal_test_put(path, text);
    CHECK_THROWS_AS(read_step_record(path), Error);
  }
}

TEST_CASE("undoing a swap works from any point of it, and again", "[restore_journal]") {
  TempDir d;
  auto r = journal_test_two_paths(d);
  const std::string old = d.file("data.cairn-old-20261127T000000Z");
  const std::string failed = d.file("data.cairn-failed-20261127T000000Z");

  SECTION("killed before the first rename: nothing moves") {
    journal_test_put(d.file("data/PG_VERSION"), "live");
    journal_test_put(d.file("data.cairn-restore-20261127T000000Z/x"), "staged");
    CHECK(put_back_moves(r).empty());
    CHECK(journal_test_get(d.file("data/PG_VERSION")) == "live");
    CHECK_FALSE(fs::exists(failed));
    CHECK(remove_scratch(r).empty());
    CHECK_FALSE(fs::exists(d.file("data.cairn-restore-20261127T000000Z")));
  }
  SECTION("killed between moving the live data aside and renaming the restored copy in") {
    journal_test_put(old + "/PG_VERSION", "live");
    CHECK(put_back_moves(r).empty());
    CHECK(journal_test_get(d.file("data/PG_VERSION")) == "live");
    CHECK_FALSE(fs::exists(old));
    CHECK_FALSE(fs::exists(failed));
  }
  SECTION("killed after every move: the restored copies go aside, the live data back") {
    journal_test_put(old + "/PG_VERSION", "live");
    journal_test_put(d.file("data/PG_VERSION"), "restored");
    journal_test_put(d.file("tblspc/16384"), "restored tablespace");
    CHECK(put_back_moves(r).empty());
    CHECK(journal_test_get(d.file("data/PG_VERSION")) == "live");
    CHECK(journal_test_get(failed + "/PG_VERSION") == "restored");
    CHECK_FALSE(fs::exists(d.file("tblspc")));  // there was none before
    CHECK(journal_test_get(d.file("tblspc.cairn-failed-20261127T000000Z/16384")) == "restored tablespace");
    // Run again (killed during the first undo, say): nothing changes.
    CHECK(put_back_moves(r).empty());
    CHECK(journal_test_get(d.file("data/PG_VERSION")) == "live");
    CHECK(journal_test_get(failed + "/PG_VERSION") == "restored");
  }
}

TEST_CASE("at the agent's start a record is handed to its driver and reported on its task", "[restore_journal]") {
  TempDir d;
  RestoreJournal j(d.file("restores"));
  auto r = journal_test_two_paths(d);
  j.write(r);
  auto other = r;
  other.component = "gone";
  other.task_id = "tk-2";
  j.write(other);
  auto results = recover_in_place_restores(j, [](const std::string&) -> Driver* { return nullptr; });
  REQUIRE(results.size() == 2);
  for (const auto& res : results) {
    CHECK(res.outcome() == cairn::v1::TASK_OUTCOME_FAILED);
    REQUIRE(res.reasons_size() == 1);
    CHECK(res.reasons(0).code() == cairn::v1::ERROR_CODE_SERVICE_CONTROL_FAILED);
    CHECK(res.reasons(0).detail().find("no longer declared") != std::string::npos);
  }
  // Not put right: kept for the next start.
  std::vector<std::string> problems;
  CHECK(j.load(&problems).size() == 2);
}

TEST_CASE("a restore that would leave the live service's filesystem without its reserve is refused first", "[restore_journal]") {
  TempDir d;
  struct statvfs sv {};
  REQUIRE(::statvfs(d.path().c_str(), &sv) == 0);
  const uint64_t free_bytes = uint64_t(sv.f_bavail) * sv.f_frsize, size = uint64_t(sv.f_blocks) * sv.f_frsize;
  const uint64_t reserve = std::min<uint64_t>(size / 20, 1ull << 30);
  // More than is free: refused, naming the directory, both figures and that nothing changed.
  std::string why = staging_space_problem(d.path(), free_bytes + 1);
  CHECK_THAT(why, Catch::Contains("not enough space in '" + d.path() + "'") && Catch::Contains("needed") &&
                      Catch::Contains("must stay free") && Catch::Contains("nothing was changed"));
  // What fits but eats into the reserve: refused too.
  if (free_bytes > reserve) CHECK_FALSE(staging_space_problem(d.path(), free_bytes - reserve / 2).empty());
  // What leaves the reserve free: taken.
  if (free_bytes > reserve + (1 << 20)) CHECK(staging_space_problem(d.path(), 1 << 20).empty());
  // What earlier restores kept beside the data is named, for the operator to free.
  CHECK(kept_copies_hint(d.file("data")).empty());
  fs::create_directories(d.file("data.cairn-old-20261127T000000Z"));
  fs::create_directories(d.file("data.cairn-failed-20261127T010000Z"));
  fs::create_directories(d.file("database.cairn-old-x"));  // another path's
  std::string hint = kept_copies_hint(d.file("data"));
  CHECK_THAT(hint, Catch::Contains("kept 2 copies") && Catch::Contains("data.cairn-old-20261127T000000Z") &&
                       Catch::Contains("data.cairn-failed-20261127T010000Z") && !Catch::Contains("database"));
  repo::Snapshot s;
  s.summary = {{"bytes_total", 12345}};
  CHECK(snapshot_bytes(s) == 12345);
  CHECK(snapshot_bytes(repo::Snapshot{}) == 0);
}

// The check a cluster restore's preflight makes (Kafka, ZooKeeper) before
// any member is stopped: the snapshot's size read from the repository, the
// staging directory's filesystem found even before the directory exists, and
// the copies earlier restores kept named. On a tmpfs of its own (root).
TEST_CASE("the preflight's space check weighs the snapshot against the staging filesystem", "[restore_journal]") {
  TempDir d;
  const std::string small = d.file("small");
  fs::create_directories(small);
  if (std::system(("mount -t tmpfs -o size=8m cairn-test " + small + " 2>/dev/null").c_str()) != 0) {
    WARN("skipped: cannot mount a tmpfs here (not root?)");
    return;
  }
  struct Unmount {
    std::string at;
    ~Unmount() { (void)!std::system(("umount " + at).c_str()); }
  } unmount{small};
  auto be = repo::make_fs_backend(d.file("repo"));
  repo::InitOptions io;
  io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
  repo::Repository::init(*be, repo::Secret(repo::Secret::Kind::passphrase, "space check"), io);
  auto r = repo::Repository::open(repo::make_fs_backend(d.file("repo")), repo::Secret(repo::Secret::Kind::passphrase, "space check"));
  (void)r->load_index();
  std::string six_mib;
  for (int i = 0; six_mib.size() < (6u << 20); ++i) six_mib += std::to_string(i * 2654435761u) + "\n";
  six_mib.resize(6u << 20);
  journal_test_put(d.file("source/data.bin"), six_mib);
  repo::BackupOptions bo;
  bo.paths = {d.file("source")};
  const std::string id = repo::backup(*r, bo).snapshot.id;
  TaskContext ctx;
  ctx.repo = r.get();
  const std::string staging = small + "/staging/not-made-yet", live = small + "/log-dir";

  // 6 MiB into 8 MiB with 0.4 MiB to keep: fits.
  CHECK(restore_space_problem(ctx, id, staging, {live}) == "");
  // 3 MiB written there first: no longer, named with the copy a restore kept.
  journal_test_put(small + "/filler", std::string(3u << 20, 'f'));
  fs::create_directories(live + ".cairn-old-20261127T000000Z");
  std::string why = restore_space_problem(ctx, id, staging, {live});
  CHECK_THAT(why, Catch::Contains("not enough space in '" + staging + "'") && Catch::Contains("6.0 MiB needed") &&
                      Catch::Contains("log-dir.cairn-old-20261127T000000Z") && Catch::Contains("nothing was changed"));
  // A snapshot this repository does not hold: the data step says why, not the preflight.
  CHECK(restore_space_problem(ctx, std::string(64, 'e'), staging, {live}) == "");
  ctx.repo = nullptr;
  CHECK(restore_space_problem(ctx, id, staging, {live}) == "");
}
