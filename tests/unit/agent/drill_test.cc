// Restore drills fed backups whose bytes are intact in the repository but
// wrong for the component (issue 35): the drill fails with the component's
// own reason, not "proven": an etcd snapshot truncated before it was
// stored, a Prometheus backup missing a block, a ZooKeeper backup without
// the transaction logs it needs. Each snapshot is written into a real repository
// with the metadata the driver would have recorded, then drilled by
// run_drill as the agent runs it (root: a network namespace of its own).
#include <openssl/sha.h>
#include <pwd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <random>

#include "agent/drill_paths.h"
#include "agent/drill_task.h"
#include "agent/drivers/etcd/etcd_driver.h"
#include "agent/drivers/zookeeper/layout.h"
#include "agent/drivers/zookeeper/staging.h"
#include "agent/platform/process.h"
#include "agent_fixture.h"
#include "common/repo/archiver.h"
#include "common/repo/repository.h"
#include "common/repo/storage/backend.h"
#include "common/util/fs.h"
#include "tests/unit/agent/zookeeper/real_server.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::test;
namespace fs = std::filesystem;
namespace v1 = cairn::v1;

namespace {

struct Rig {
  TempDir d;
  std::unique_ptr<repo::Repository> repo;
  DrillDecl decl;

  Rig() {
    auto be = repo::make_fs_backend(d.file("repo"));
    repo::InitOptions io;
    io.kdf = repo::KdfParams{.scrypt = {1024, 8, 1}};
    repo::Repository::init(*be, repo::Secret(repo::Secret::Kind::passphrase, "drill"), io);
    repo = repo::Repository::open(repo::make_fs_backend(d.file("repo")), repo::Secret(repo::Secret::Kind::passphrase, "drill"));
    (void)repo->load_index();
    decl.root = d.file("drills");
    decl.memory_max = std::nullopt;  // no cgroup needed here
    decl.start_timeout_seconds = 60;
    decl.deadline_seconds = 300;
  }

  std::string store(const std::string& path, const nlohmann::json& metadata) {
    repo::BackupOptions bo;
    bo.paths = {path};
    bo.component_metadata = metadata;
    return repo::backup(*repo, bo).snapshot.id;
  }

  DriverResult drill(const std::string& driver, const std::string& snapshot_id) {
    v1::Task t;
    t.set_task_id("tk-drill-test");
    t.set_kind(v1::TASK_KIND_DRILL);
    t.set_drill_driver(driver);
    t.mutable_snapshot()->set_snapshot_id(snapshot_id);
    TaskContext ctx;
    ctx.repo = repo.get();
    return run_drill(decl, ctx, t);
  }
};

std::string reasons_of(const DriverResult& r) {
  std::string s;
  for (const auto& x : r.reasons) s += x.detail() + "\n";
  return s;
}

const nlohmann::json* check_named(const DriverResult& r, const std::string& name) {
  for (const auto& c : r.metadata["drill"]["checks"])
    if (c.value("name", "") == name) return &c;
  return nullptr;
}

void write_file(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

}  // namespace

TEST_CASE("an etcd snapshot truncated before it was stored fails its drill at the stream's own hash, nothing started") {
  if (::geteuid() != 0) {
    WARN("not root: a drill needs a network namespace of its own; skipped");
    return;
  }
  Rig rig;
  // What the driver streams: the database, then its SHA-256. Cut short, as
  // a stream that ended early and was stored anyway.
  std::string db(3 << 20, '\0');
  std::mt19937_64 rng(7);
  for (auto& c : db) c = char(rng());
  unsigned char h[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(db.data()), db.size(), h);
  const std::string stream = db + std::string(reinterpret_cast<const char*>(h), sizeof h);
  const std::string dir = rig.d.file("etcd-backup");
  write_file(dir + "/" + agent::etcd::kSnapshotFileName, stream.substr(0, stream.size() * 2 / 3));
  nlohmann::json meta = {{"revision", 1234}, {"key_count", 100}};
  DriverResult r = rig.drill("etcd", rig.store(dir, meta));
  INFO(reasons_of(r));
  CHECK(r.outcome == v1::TASK_OUTCOME_FAILED);
  auto* c = check_named(r, "etcd snapshot's trailing sha256 matches its database");
  REQUIRE(c);
  CHECK_FALSE((*c)["ok"].get<bool>());
  CHECK(reasons_of(r).find("trailing sha256") != std::string::npos);
  CHECK_FALSE(r.metadata["drill"]["phases"].contains("start"));  // no server was started
  CHECK(r.metadata["drill"]["verdict"] == "failed");             // the backup is bad, not the drill host
  CHECK(fs::is_empty(rig.decl.root));                            // the sandbox is gone
}

namespace {

// `hours` of `series` series written by promtool as persisted blocks, as a
// server leaves them, and the metadata the prometheus driver records from
// them; `blocks` gets the blocks' directories, sorted. Empty when promtool
// failed.
nlohmann::json make_tsdb(Rig& rig, const std::string& tsdb, int series, int hours, std::vector<std::string>* blocks = nullptr) {
  fs::create_directories(tsdb);
  const int64_t start = (int64_t(std::time(nullptr)) - 8 * 3600) / 60 * 60;
  {
    std::ofstream om(rig.d.file("samples.om"));
    // Two metrics with the same labels, as a server scraping itself has (up
    // and scrape_duration_seconds): a query that drops the names collides.
    for (const char* name : {"cairn_drill", "cairn_drill_twin"}) {
      om << "# TYPE " << name << " gauge\n";
      for (int s = 0; s < series; ++s)
        for (int64_t t = 0; t < hours * 3600; t += 60) om << name << "{series=\"" << s << "\"} " << t + s << " " << start + t << "\n";
    }
    om << "# EOF\n";
  }
  platform::ProcessSpec ps;
  ps.argv = {"promtool", "tsdb", "create-blocks-from", "openmetrics", rig.d.file("samples.om"), tsdb};
  ps.timeout = std::chrono::seconds(120);
  auto made = platform::run_process(ps);
  if (!made.ok()) {
    WARN(made.describe());
    return {};
  }
  std::vector<std::string> found;
  int64_t min_time = INT64_MAX, max_time = 0;
  for (const auto& e : fs::directory_iterator(tsdb))
    if (fs::exists(e.path() / "meta.json")) {
      found.push_back(e.path().string());
      std::ifstream in(e.path() / "meta.json");
      auto m = nlohmann::json::parse(in);
      min_time = std::min(min_time, m.value("minTime", int64_t(0)));
      max_time = std::max(max_time, m.value("maxTime", int64_t(0)));
    }
  std::sort(found.begin(), found.end());
  if (blocks) *blocks = found;
  return {{"data_dir", tsdb}, {"blocks", found.size()}, {"min_time", min_time}, {"max_time", max_time}};
}

}  // namespace

TEST_CASE("a Prometheus backup missing one of its blocks fails its drill at the blocks loaded, and whole it is proven") {
  if (::geteuid() != 0 || !platform::find_program("prometheus") || !platform::find_program("promtool")) {
    WARN("not root, or prometheus/promtool not installed: skipped");
    return;
  }
  Rig rig;
  // Six hours of 20 series, as a server leaves them.
  const std::string tsdb = rig.d.file("prometheus/data");
  std::vector<std::string> blocks;
  nlohmann::json meta = make_tsdb(rig, tsdb, 20, 6, &blocks);
  REQUIRE(!meta.empty());
  REQUIRE(blocks.size() >= 3);

  DriverResult whole = rig.drill("prometheus", rig.store(tsdb, meta));
  INFO(reasons_of(whole));
  CHECK(whole.outcome == v1::TASK_OUTCOME_SUCCEEDED);
  // Every series of both metrics answers, though their labels are the same.
  auto* answered = check_named(whole, "series answering a query in the newest recorded hour");
  REQUIRE(answered);
  CHECK((*answered)["found"] == 40);
  CHECK(whole.metadata["drill"]["verdict"] == "proven");

  // A middle block left out of the backup: the oldest sample is still there,
  // the bytes stored are intact, the TSDB opens, and one block is missing.
  fs::remove_all(blocks[blocks.size() / 2]);
  DriverResult partial = rig.drill("prometheus", rig.store(tsdb, meta));
  INFO(reasons_of(partial));
  CHECK(partial.outcome == v1::TASK_OUTCOME_FAILED);
  auto* c = check_named(partial, "blocks loaded");
  REQUIRE(c);
  CHECK((*c)["expected"] == blocks.size());
  CHECK((*c)["found"] == blocks.size() - 1);
  CHECK(reasons_of(partial).find("'blocks loaded' failed") != std::string::npos);
  CHECK(fs::is_empty(rig.decl.root));
}

TEST_CASE("a ZooKeeper backup stored without the transaction logs it needs fails its drill at the zxid, and whole it is proven") {
  if (::geteuid() != 0 || !zk::have_zookeeper()) {
    WARN("not root, or ZooKeeper/java not installed: skipped");
    return;
  }
  Rig rig;
  zookeeper::ServerStatus st;
  {
    // A real server's data: snapshots every 10 to 20 writes, the writes
    // after the newest snapshot only in its transaction log.
    zk::Server a(rig.d.path(), rig.d.file("zk-live"), 20);
    std::string script = "create /app root\n";
    for (int i = 0; i < 45; ++i) script += "create /app/n" + std::to_string(i) + " value-" + std::to_string(i) + "\n";
    zk::cli(a.port, script, rig.d.path());
    st = a.status();
    REQUIRE(st.has_zxid);
  }
  // Stored as the driver stores it: a staged copy under the data dir.
  const std::string data_dir = rig.d.file("zk-data");
  const std::string v2 = data_dir + "/" + zookeeper::kDataRootName + "/version-2";
  fs::create_directories(v2);
  fs::copy(rig.d.file("zk-live") + "/version-2", v2, fs::copy_options::recursive);
  nlohmann::json meta = {{"data_dir", data_dir}, {"zxid", zookeeper::zxid_hex(st.zxid)}};

  DriverResult whole = rig.drill("zookeeper", rig.store(data_dir, meta));
  INFO(reasons_of(whole));
  CHECK(whole.outcome == v1::TASK_OUTCOME_SUCCEEDED);

  // The logs left out: only the snapshots, the newest older than the last write.
  uint64_t newest_snapshot = 0;
  for (const auto& e : fs::directory_iterator(v2)) {
    const std::string name = e.path().filename().string();
    if (name.rfind("log.", 0) == 0)
      fs::remove(e.path());
    else if (auto z = zookeeper::zxid_from_name(name, "snapshot"))
      newest_snapshot = std::max<uint64_t>(newest_snapshot, *z);
  }
  REQUIRE(newest_snapshot < st.zxid);  // the test can only fail the drill when writes followed the snapshot
  DriverResult partial = rig.drill("zookeeper", rig.store(data_dir, meta));
  INFO(reasons_of(partial));
  CHECK(partial.outcome == v1::TASK_OUTCOME_FAILED);
  auto* c = check_named(partial, "zxid reached");
  REQUIRE(c);
  CHECK_FALSE((*c)["ok"].get<bool>());
  CHECK((*c)["expected"] == zookeeper::zxid_hex(st.zxid));
  CHECK(fs::is_empty(rig.decl.root));
}

TEST_CASE("a drill takes a recorded path only inside its sandbox, and finds the links that lead out of it") {
  namespace fs = std::filesystem;
  char tmpl[] = "/tmp/cairn-drill-paths-XXXXXX";
  REQUIRE(::mkdtemp(tmpl));
  const std::string root = std::string(tmpl) + "/restored", host = std::string(tmpl) + "/host";
  fs::create_directories(root + "/var/lib/prometheus/wal");
  fs::create_directories(host);
  std::string why;
  auto at = sandboxed_path(root, "/var/lib/prometheus", &why);
  REQUIRE(at);
  CHECK(*at == root + "/var/lib/prometheus");
  // Climbing out by '..' (a forged log_dirs[0].path, data_dir).
  CHECK_FALSE(sandboxed_path(root, "/../../../../../../../../../../../../../../../../../../../../../../../.." + host, &why));
  CHECK_THAT(why, Catch::Contains("without '..'"));
  CHECK_FALSE(sandboxed_path(root, "var/lib", &why));
  // A link on the way (the restored 'var' pointing at the host).
  fs::create_directory_symlink(host, root + "/opt");
  CHECK_FALSE(sandboxed_path(root, "/opt/data", &why));
  CHECK_THAT(why, Catch::Contains("'/opt'") && Catch::Contains("symbolic link"));
  CHECK(links_out_of(root).size() == 1);
  fs::remove(root + "/opt");
  CHECK(links_out_of(root).empty());

  // Links that stay inside are fine; absolute ones, climbing ones, one that
  // climbs through another link, a dangling one through a link, and a loop
  // lead out.
  fs::create_directory_symlink("../prometheus", root + "/var/lib/prometheus/self");
  fs::create_symlink("wal", root + "/var/lib/prometheus/wal-link");
  CHECK(links_out_of(root).empty());
  fs::create_directory_symlink(host, root + "/var/lib/prometheus/wal/abs");
  fs::create_directory_symlink(".", root + "/dot");
  fs::create_directories(root + "/k/m");
  fs::create_directory_symlink("../../dot/..", root + "/k/m/through");  // lexically root, really its parent
  fs::create_symlink("../dot/../host-file", root + "/k/dangling");
  fs::create_symlink("loop-b", root + "/loop-a");
  fs::create_symlink("loop-a", root + "/loop-b");
  auto out = links_out_of(root);
  std::string all;
  for (const auto& l : out) all += l + "\n";
  CHECK(out.size() == 5);
  CHECK_THAT(all, Catch::Contains("var/lib/prometheus/wal/abs -> " + host) && Catch::Contains("k/m/through") &&
                      Catch::Contains("k/dangling") && Catch::Contains("loop-a") && Catch::Contains("loop-b"));
  CHECK(links_out_of(root, 2).size() == 2);
  fs::remove_all(tmpl);
}

namespace {

std::vector<std::string> listing(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) out.push_back(e.path().string());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("a forged snapshot cannot steer a Prometheus drill out of its sandbox: by a recorded path or by a link") {
  if (::geteuid() != 0 || !platform::find_program("prometheus") || !platform::find_program("promtool")) {
    WARN("not root, or prometheus/promtool not installed: skipped");
    return;
  }
  Rig rig;
  const std::string tsdb = rig.d.file("prometheus/data");
  nlohmann::json meta = make_tsdb(rig, tsdb, 5, 4);
  REQUIRE(!meta.empty());
  // A directory of the host the attacker wants written: a TSDB too, so that
  // a server would open it happily.
  const std::string host = rig.d.file("host/tsdb");
  fs::create_directories(host);
  fs::copy(tsdb, host, fs::copy_options::recursive);
  const auto host_before = listing(host);

  SECTION("a recorded data_dir that climbs out of the sandbox") {
    // As any node holding the repository's password can write it.
    nlohmann::json forged = meta;
    std::string up;
    for (int i = 0; i < 24; ++i) up += "/..";
    forged["data_dir"] = up + host;
    DriverResult r = rig.drill("prometheus", rig.store(tsdb, forged));
    INFO(reasons_of(r));
    CHECK(r.outcome == v1::TASK_OUTCOME_FAILED);
    CHECK_THAT(reasons_of(r), Catch::Contains("which the drill does not use") && Catch::Contains("without '..'") &&
                                  Catch::Contains("nothing was started"));
  }
  SECTION("a wal directory that is a link to the host") {
    fs::create_directory_symlink(rig.d.file("host/tsdb"), tsdb + "/wal");
    DriverResult r = rig.drill("prometheus", rig.store(tsdb, meta));
    INFO(reasons_of(r));
    CHECK(r.outcome == v1::TASK_OUTCOME_FAILED);
    CHECK_THAT(reasons_of(r), Catch::Contains("leading out of the drill's sandbox") && Catch::Contains("wal -> " + host) &&
                                  Catch::Contains("nothing was started"));
    auto* c = check_named(r, "blocks loaded");
    CHECK(c == nullptr);  // no server ran
  }
  SECTION("a data_dir reached through a link of the restored tree") {
    // The restored tree's parent of the data directory is a link to the host.
    const std::string alt = rig.d.file("alt");
    fs::create_directories(alt);
    fs::create_directory_symlink(rig.d.file("host"), alt + "/prom");
    nlohmann::json forged = meta;
    forged["data_dir"] = alt + "/prom/tsdb";
    DriverResult r = rig.drill("prometheus", rig.store(alt, forged));
    INFO(reasons_of(r));
    CHECK(r.outcome == v1::TASK_OUTCOME_FAILED);
    CHECK_THAT(reasons_of(r), Catch::Contains("symbolic link") && Catch::Contains("nothing was started"));
  }
  // Nothing of a drill's server was written on the host.
  CHECK(listing(host) == host_before);
  CHECK(fs::is_empty(rig.decl.root));
}

TEST_CASE("the agent's clean-up of the drill root removes only the sandboxes a drill made") {
  TempDir d;
  DrillDecl decl;
  decl.root = d.file("drills");
  fs::create_directories(decl.root);
  // A sandbox a drill made (as Sandbox makes it: 0700, its marker naming it).
  const std::string made = decl.root + "/drill-tk-0001";
  fs::create_directories(made + "/restored/data");
  ::chmod(made.c_str(), 0700);
  write_file(made + "/.cairn-drill-sandbox", "cairn drill sandbox tk-0001\n");
  // What else a root overlapping live data holds: a live directory named like
  // a sandbox, one with another sandbox's marker, and a link to the host.
  const std::string live = decl.root + "/drill-live";
  write_file(live + "/keep.txt", "live data");
  ::chmod(live.c_str(), 0700);
  const std::string other = decl.root + "/drill-tk-0002";
  write_file(other + "/.cairn-drill-sandbox", "cairn drill sandbox tk-0001\n");
  ::chmod(other.c_str(), 0700);
  write_file(d.file("host/keep.txt"), "host data");
  fs::create_directory_symlink(d.file("host"), decl.root + "/drill-link");

  auto removed = clean_drill_root(decl);
  CHECK(std::find(removed.begin(), removed.end(), made) != removed.end());
  CHECK_FALSE(fs::exists(made));
  CHECK(fs::exists(live + "/keep.txt"));
  CHECK(fs::exists(other + "/.cairn-drill-sandbox"));
  CHECK(fs::is_symlink(decl.root + "/drill-link"));
  CHECK(fs::exists(d.file("host/keep.txt")));
}

TEST_CASE("a drill the drill host could not run says so, apart from a backup that is bad, naming why first") {
  Rig rig;
  const std::string dir = rig.d.file("data");
  write_file(dir + "/a.txt", std::string(100000, 'a'));
  const std::string snap = rig.store(dir, nlohmann::json::object());
  SECTION("over the disk budget: nothing restored") {
    rig.decl.disk_budget = 4096;
    DriverResult r = rig.drill("files", snap);
    CHECK(r.outcome == v1::TASK_OUTCOME_FAILED);
    CHECK(r.metadata["drill"]["verdict"] == "not_run");
    REQUIRE(!r.reasons.empty());
    CHECK(r.reasons[0].code() == v1::ERROR_CODE_NO_SPACE);
    CHECK_THAT(r.reasons[0].detail(), Catch::Contains("over the [drill] disk_budget"));
  }
  SECTION("a driver this agent cannot drill") {
    DriverResult r = rig.drill("no-such-driver", snap);
    CHECK(r.metadata["drill"]["verdict"] == "not_run");
  }
  SECTION("whole, within the budget: proven") {
    rig.decl.disk_budget = 64 << 20;
    DriverResult r = rig.drill("files", snap);
    INFO(reasons_of(r));
    CHECK(r.outcome == v1::TASK_OUTCOME_SUCCEEDED);
    CHECK(r.metadata["drill"]["verdict"] == "proven");
  }
}

namespace {

// A Prometheus drill of a small TSDB whose server is a shell script (body),
// put in bin where the drill's user can run it (a test's own directory is
// root's alone, and out of a drill server's sight).
DriverResult drill_with_stand_in(Rig& rig, TempDir& bin, const std::string& body) {
  fs::permissions(bin.path(), fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
  const std::string server = bin.file("prometheus");
  write_file(server, "#!/bin/sh\n" + body);
  fs::permissions(server, fs::perms::owner_all | fs::perms::others_read | fs::perms::others_exec);
  read_drill_keys(rig.decl, "prometheus = \"" + server + "\"", "drill keys");
  const std::string tsdb = rig.d.file("prometheus/data");
  fs::create_directories(tsdb + "/wal");
  write_file(tsdb + "/wal/00000000", std::string(1000, '\0'));
  return rig.drill("prometheus", rig.store(tsdb, {{"data_dir", tsdb}, {"blocks", 0}}));
}

}  // namespace

TEST_CASE("a drill stopped at its deadline names the deadline first, not the check the stop made fail") {
  if (::geteuid() != 0) {
    WARN("not root: a drill needs a network namespace of its own; skipped");
    return;
  }
  Rig rig;
  // A server that never answers (a stand-in for one slow to start on a big
  // TSDB): the drill waits for it until its deadline.
  TempDir bin;
  rig.decl.deadline_seconds = 3;
  DriverResult r = drill_with_stand_in(rig, bin, "exec sleep 600\n");
  INFO(reasons_of(r));
  CHECK(r.outcome == v1::TASK_OUTCOME_FAILED);
  CHECK(r.metadata["drill"]["verdict"] == "not_run");
  REQUIRE(!r.reasons.empty());
  CHECK(r.reasons[0].code() == v1::ERROR_CODE_CANCELLED);
  CHECK_THAT(r.reasons[0].detail(), Catch::StartsWith("the drill ran past its deadline of 3 s"));
  CHECK(fs::is_empty(rig.decl.root));
}

TEST_CASE("a drill's server runs as the drill user, the host read-only to it and its sandbox the only tree it sees under the root") {
  if (::geteuid() != 0) {
    WARN("not root: a drill needs a network namespace of its own; skipped");
    return;
  }
  Rig rig;
  // Where the drill's user could write, were the host not read-only to it.
  TempDir open;
  fs::permissions(open.path(), fs::perms::all);
  const std::string host = open.file("host");
  fs::create_directory(host);
  fs::permissions(host, fs::perms::all);
  // Another sandbox under the root: out of this drill's sight.
  fs::create_directories(rig.decl.root + "/drill-another/restored");
  // A stand-in server that reports what it can do, then exits: the drill
  // keeps its whole log beside the root.
  DriverResult r =
      drill_with_stand_in(rig, open,
                          "echo \"uid=$(id -u)\"\n"
                          "if touch " +
                              host +
                              "/escape 2>/dev/null; then echo host=written; else echo host=refused; fi\n"
                              "if touch restored/inside 2>/dev/null; then echo sandbox=written; else echo sandbox=refused; fi\n"
                              "if [ -e " +
                              rig.decl.root +
                              "/drill-another ]; then echo another=seen; else echo another=hidden; fi\n"
                              "if ls " +
                              rig.d.path() +
                              "/repo >/dev/null 2>&1; then echo agent=seen; else echo agent=hidden; fi\n"
                              "exit 3\n");
  INFO(reasons_of(r));
  CHECK(r.outcome == v1::TASK_OUTCOME_FAILED);
  std::string log;
  for (const auto& e : fs::directory_iterator(rig.decl.root))
    if (e.path().filename().string().starts_with("failed-prometheus-drill-")) {
      std::ifstream in(e.path());
      log.assign(std::istreambuf_iterator<char>(in), {});
    }
  INFO(log);
  struct passwd* nobody = ::getpwnam("nobody");
  REQUIRE(nobody);
  CHECK_THAT(log, Catch::Contains("uid=" + std::to_string(nobody->pw_uid) + "\n"));
  CHECK_THAT(log, Catch::Contains("host=refused\n"));
  CHECK_THAT(log, Catch::Contains("sandbox=written\n"));
  CHECK_THAT(log, Catch::Contains("another=hidden\n"));  // another sandbox under the root
  CHECK_THAT(log, Catch::Contains("agent=hidden\n"));    // the agent's own directory is covered
  CHECK_FALSE(fs::exists(host + "/escape"));
}
