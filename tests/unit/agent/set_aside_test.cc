// What restores set aside beside a component's data (agent/set_aside.h):
// the rule keeps the newest copies, the young ones, the only copy of data the
// repository does not hold and everything of a restore still on record;
// nothing else beside the data is ever touched, and no link is followed.
#include "agent/set_aside.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <ctime>
#include <filesystem>

#include "agent/config.h"
#include "agent/driver.h"
#include "agent/restore_journal.h"
#include "agent_fixture.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::test;
namespace fs = std::filesystem;

namespace {

AsideCopy copy_at(const std::string& path, int64_t at, const std::string& restore, const std::string& held) {
  AsideCopy c;
  c.component = "etcd";
  c.data_path = "/var/lib/etcd";
  c.path = path;
  c.at = at;
  c.restore_id = restore;
  c.held_by = held;
  c.recorded = true;
  return c;
}

SnapshotCheck always(std::optional<bool> answer) {
  return [answer](const std::string&, const std::string&) { return answer; };
}

// A driver that declares one path; nothing else is called.
class PathDriver : public Driver {
 public:
  PathDriver(std::string path, std::string record) : path_(std::move(path)), record_(std::move(record)) {}
  std::string name() const override { return "fake"; }
  DriverCaps capabilities() const override { return {}; }
  bool has_restore_target(const std::string&) const override { return false; }
  std::vector<std::string> data_paths() const override { return {path_}; }
  std::vector<std::string> restore_record_files() const override { return {record_}; }
  std::vector<cairn::v1::Reason> preflight(const cairn::v1::Task&) const override { return {}; }
  void snapshot(TaskContext&, SnapshotSink&, const SnapshotPurpose&) override {}
  DriverResult restore(TaskContext&, const RestoreSpec&) override { return {}; }

 private:
  std::string path_, record_;
};

void put_tree(const std::string& dir, size_t bytes) {
  fs::create_directories(dir + "/member/snap");
  write_text(dir + "/member/snap/db", std::string(bytes, 'x'));
}

}  // namespace

TEST_CASE("set aside: the newest copies per path stay, older ones the repository holds go", "[set_aside]") {
  const int64_t now = 1'800'000'000, old = now - 30 * 86400;
  std::vector<AsideCopy> v = {copy_at("/var/lib/etcd.cairn-old-a", old, "r1", "s1"),
                              copy_at("/var/lib/etcd.cairn-old-b", old + 10, "r2", "s2"),
                              copy_at("/var/lib/etcd.cairn-old-c", old + 20, "r3", "s3")};
  SetAsideRule rule{.keep_last = 2, .keep_seconds = 86400};
  decide(v, rule, now, {}, false, always(true));
  CHECK(v[0].keep == "");
  CHECK(v[1].keep == "newest");
  CHECK(v[2].keep == "newest");
  rule.keep_last = 0;
  decide(v, rule, now, {}, false, always(true));
  for (const auto& c : v) CHECK(c.keep == "");
}

TEST_CASE("set aside: a copy younger than keep_days stays whatever its rank", "[set_aside]") {
  const int64_t now = 1'800'000'000;
  std::vector<AsideCopy> v = {copy_at("/x.cairn-old-a", now - 3600, "r1", "s1"), copy_at("/x.cairn-old-b", now - 60, "r2", "s2"),
                              copy_at("/x.cairn-old-c", now - 3 * 86400, "r3", "s3")};
  decide(v, SetAsideRule{.keep_last = 1, .keep_seconds = 2 * 86400}, now, {}, false, always(true));
  CHECK(v[1].keep == "newest");
  CHECK(v[0].keep == "young");
  CHECK(v[2].keep == "");
}

TEST_CASE("set aside: the only copy of data the repository does not hold is never removed by the rule", "[set_aside]") {
  const int64_t now = 1'800'000'000, old = now - 30 * 86400;
  std::vector<AsideCopy> v = {copy_at("/x.cairn-old-new", old + 100, "r9", "s9"),
                              copy_at("/x.cairn-old-skipped", old, "r1", ""),       // safety backup skipped
                              copy_at("/x.cairn-old-pruned", old + 1, "r2", "s2"),  // not in the repository any more
                              copy_at("/x.cairn-old-unknown", old + 2, "r3", "s3")};
  v[3].recorded = false;  // no restore this agent recorded made it
  SnapshotCheck held = [](const std::string&, const std::string& id) -> std::optional<bool> { return id != "s2"; };
  decide(v, SetAsideRule{.keep_last = 1, .keep_seconds = 0}, now, {}, false, held);
  CHECK(v[0].keep == "newest");
  CHECK(v[1].keep == "only-copy");
  CHECK(v[2].keep == "only-copy");
  CHECK(v[3].keep == "unrecorded");
  // The repository cannot be asked: kept.
  v[2].held_by = "s4";
  decide(v, SetAsideRule{.keep_last = 1, .keep_seconds = 0}, now, {}, false, always(std::nullopt));
  CHECK(v[2].keep == "only-copy");
}

TEST_CASE("set aside: what a restore on record set aside stays, and so do working dirs while one is", "[set_aside]") {
  const int64_t now = 1'800'000'000, old = now - 30 * 86400;
  std::vector<AsideCopy> v = {copy_at("/x.cairn-old-a", old + 5, "r1", "s1"), copy_at("/x.cairn-old-b", old, "r2", "s2"),
                              copy_at("/x.cairn-restore-ff", old, "", "")};
  v[2].kind = AsideCopy::Kind::work;
  decide(v, SetAsideRule{.keep_last = 0, .keep_seconds = 0}, now, {"r2"}, true, always(true));
  CHECK(v[0].keep == "");
  CHECK(v[1].keep == "in-progress");
  CHECK(v[2].keep == "in-progress");
  decide(v, SetAsideRule{.keep_last = 0, .keep_seconds = 0}, now, {}, false, always(true));
  CHECK(v[1].keep == "");
  CHECK(v[2].keep == "");
  // A record that names no restore: nothing of the component goes.
  decide(v, SetAsideRule{.keep_last = 0, .keep_seconds = 0}, now, {"*"}, true, always(true));
  CHECK(v[0].keep == "in-progress");
}

TEST_CASE("set aside: the keeper removes only copies named after a declared path, never through a link", "[set_aside]") {
  TempDir d;
  const std::string data = d.file("etcd");
  put_tree(data, 10);
  put_tree(data + ".cairn-old-20260101T000000Z", 1000);
  put_tree(data + ".cairn-old-20260102T000000Z", 2000);
  for (const char* n : {".cairn-old-20260101T000000Z", ".cairn-old-20260102T000000Z"})
    fs::last_write_time(data + n, fs::file_time_type::clock::now() - std::chrono::hours(24 * 30));
  put_tree(data + ".cairn-restore-ab12", 300);  // a working dir no record names
  put_tree(d.file("etcd-copy"), 7);             // a sibling of another name
  put_tree(d.file("etcd.cairn-oldest"), 7);     // not <path>.cairn-old-<stamp>
  put_tree(d.file("etcd2.cairn-old-20260101T000000Z"), 7);
  put_tree(d.file("outside"), 7);
  fs::create_directory_symlink(d.file("outside"), data + ".cairn-old-20250101T000000Z");
  PathDriver driver(data, d.file(".etcd.cairn-restore.json"));
  RestoreJournal journal(d.file("state/restores"));
  SetAsideKeeper keeper(d.file("state/set-aside.json"), SetAsideRule{.keep_last = 1, .keep_seconds = 0}, {{"etcd", &driver}}, &journal);
  keeper.set_snapshot_check(always(true));

  // Found by name, bytes counted, the link skipped.
  auto found = find_set_aside("etcd", {data});
  REQUIRE(found.size() == 3);
  CHECK(found[0].bytes == 1000);
  CHECK(found[2].kind == AsideCopy::Kind::work);

  // At start nothing says who made the two copies: kept as unrecorded; the stale working dir goes.
  auto lines = keeper.sweep();
  CHECK(lines.size() == 1);
  CHECK_FALSE(fs::exists(data + ".cairn-restore-ab12"));
  CHECK(fs::exists(data + ".cairn-old-20260101T000000Z"));

  // Two restores, each with its safety snapshot: the older recorded copy goes, the newest stays.
  fs::rename(data, data + ".cairn-old-20260103T000000Z");
  put_tree(data, 10);
  keeper.after_restore("etcd", "r1", true, "safety1", "snap");
  ::sleep(1);
  fs::rename(data, data + ".cairn-old-20260104T000000Z");
  put_tree(data, 10);
  lines = keeper.after_restore("etcd", "r2", true, "safety2", "snap");
  CHECK_FALSE(fs::exists(data + ".cairn-old-20260103T000000Z"));
  CHECK(fs::exists(data + ".cairn-old-20260104T000000Z"));
  // A restore whose safety backup was skipped: its copy stays, as the only copy, beside the newest rule.
  ::sleep(1);
  fs::rename(data, data + ".cairn-old-20260105T000000Z");
  put_tree(data, 10);
  keeper.after_restore("etcd", "r3", true, "", "snap");
  ::sleep(1);
  fs::rename(data, data + ".cairn-old-20260106T000000Z");
  put_tree(data, 10);
  keeper.after_restore("etcd", "r4", true, "safety4", "snap");
  CHECK(fs::exists(data + ".cairn-old-20260105T000000Z"));
  CHECK(fs::exists(data + ".cairn-old-20260106T000000Z"));
  CHECK_FALSE(fs::exists(data + ".cairn-old-20260104T000000Z"));

  // Never touched: the link, what it points to, the other names, the live data.
  CHECK(fs::is_symlink(data + ".cairn-old-20250101T000000Z"));
  CHECK(fs::exists(d.file("outside/member/snap/db")));
  for (const char* n : {"etcd-copy", "etcd.cairn-oldest", "etcd2.cairn-old-20260101T000000Z", "etcd/member/snap/db"})
    CHECK(fs::exists(d.file(n)));

  // Removal by hand: an only copy needs force; an unknown path is refused.
  bool failed = false;
  keeper.remove(data + ".cairn-old-20260105T000000Z", false, &failed);
  CHECK(failed);
  CHECK(fs::exists(data + ".cairn-old-20260105T000000Z"));
  keeper.remove(d.file("etcd-copy"), true, &failed);
  CHECK(failed);
  CHECK(fs::exists(d.file("etcd-copy")));
  keeper.remove(data + ".cairn-old-20250101T000000Z", true, &failed);  // the link is no copy
  CHECK(failed);
  CHECK(fs::exists(d.file("outside/member/snap/db")));
  keeper.remove("", false, &failed);  // --all: what the repository holds
  CHECK(failed);                      // the only copies were refused
  CHECK_FALSE(fs::exists(data + ".cairn-old-20260106T000000Z"));
  CHECK(fs::exists(data + ".cairn-old-20260105T000000Z"));
  keeper.remove("", true, &failed);
  CHECK_FALSE(failed);
  CHECK(find_set_aside("etcd", {data}).empty());
  CHECK(fs::exists(data + "/member/snap/db"));
}

TEST_CASE("set aside: nothing of a restore whose record is on disk is removed", "[set_aside]") {
  TempDir d;
  const std::string data = d.file("etcd");
  put_tree(data, 10);
  PathDriver driver(data, d.file(".etcd.cairn-restore.json"));
  SetAsideKeeper keeper(d.file("state/set-aside.json"), SetAsideRule{.keep_last = 0, .keep_seconds = 0}, {{"etcd", &driver}}, nullptr);
  keeper.set_snapshot_check(always(true));
  fs::rename(data, data + ".cairn-old-1");
  put_tree(data, 10);
  put_tree(data + ".cairn-restore-99", 10);
  write_text(d.file(".etcd.cairn-restore.json"), R"({"restore": "r1", "step": "data"})");
  keeper.after_restore("etcd", "r1", true, "safety1", "snap");
  CHECK(fs::exists(data + ".cairn-old-1"));
  CHECK(fs::exists(data + ".cairn-restore-99"));
  // Rolled back (a tombstone) or committed (the record gone): the rule applies.
  write_text(d.file(".etcd.cairn-restore.json"), R"({"restore": "r1", "state": "rolled_back"})");
  keeper.after_restore("etcd", "r1", false, "", "");
  CHECK_FALSE(fs::exists(data + ".cairn-old-1"));
  CHECK_FALSE(fs::exists(data + ".cairn-restore-99"));
}

TEST_CASE("set aside: the rule is read from [set_aside]", "[set_aside]") {
  TempDir d;
  auto c = parse_config(base_config(d) + "\n[set_aside]\nkeep_last = 3\nkeep_days = 0\n", "agent.toml");
  CHECK(c.set_aside.keep_last == 3);
  CHECK(c.set_aside.keep_seconds == 0);
  CHECK(parse_config(base_config(d), "agent.toml").set_aside.keep_last == 1);
  CHECK(parse_config(base_config(d), "agent.toml").set_aside.keep_seconds == 0);
  CHECK_THROWS_AS(parse_config(base_config(d) + "\n[set_aside]\nkeep = 3\n", "agent.toml"), ConfigError);
}
