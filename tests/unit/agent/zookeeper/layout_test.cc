// The zookeeper driver's file logic on files the tests write: zoo.cfg, the
// snapshot trailer check, which files make a consistent backup, the log
// reader, staging with hard links and the swap of a restore.
#include "agent/drivers/zookeeper/layout.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "agent/drivers/zookeeper/four_letter.h"
#include "agent/drivers/zookeeper/staging.h"
#include "common/util/error.h"

namespace fs = std::filesystem;
using namespace cairn::agent::zookeeper;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/cairn-zk-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path); }
};

void write(const std::string& p, const std::string& bytes) {
  fs::create_directories(fs::path(p).parent_path());
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f << bytes;
}

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void put32(std::string& s, uint32_t v) {
  for (int i = 3; i >= 0; --i) s += char((v >> (8 * i)) & 0xff);
}
void put64(std::string& s, uint64_t v) {
  put32(s, uint32_t(v >> 32));
  put32(s, uint32_t(v));
}

// A snapshot as SnapStream writes it: FileHeader, some body, then the seal
// (Adler32 of everything before it, the string "/").
std::string snapshot_bytes(const std::string& body) {
  std::string s;
  put32(s, 0x5A4B534E);  // "ZKSN"
  put32(s, 2);
  put64(s, 0);
  s += body;
  uLong a = adler32(0L, Z_NULL, 0);
  a = adler32(a, reinterpret_cast<const Bytef*>(s.data()), s.size());
  put64(s, a);
  put32(s, 1);
  s += '/';
  return s;
}

// A transaction log: FileHeader, then per zxid an entry (Adler32, length,
// TxnHeader + a little payload, 'B'), then preallocated zeros.
std::string log_bytes(const std::vector<uint64_t>& zxids, size_t zero_tail = 4096) {
  std::string s;
  put32(s, 0x5A4B4C47);  // "ZKLG"
  put32(s, 2);
  put64(s, 0);
  for (uint64_t z : zxids) {
    std::string txn;
    put64(txn, 0x1234);  // clientId
    put32(txn, 7);       // cxid
    put64(txn, z);       // zxid
    put64(txn, 1700000000000ull);
    put32(txn, 1);  // type: create
    txn += "payload";
    uLong a = adler32(0L, Z_NULL, 0);
    a = adler32(a, reinterpret_cast<const Bytef*>(txn.data()), txn.size());
    put64(s, a);
    put32(s, uint32_t(txn.size()));
    s += txn;
    s += 'B';
  }
  s += std::string(zero_tail, '\0');
  return s;
}

ino_t inode(const std::string& p) {
  struct stat st {};
  REQUIRE(::stat(p.c_str(), &st) == 0);
  return st.st_ino;
}

}  // namespace

TEST_CASE("zoo.cfg: the directories, the client port and the server list", "[zookeeper]") {
  auto c = parse_zoo_cfg(
      "# comment\n! also a comment\ntickTime=2000\n dataDir = /var/lib/zk \ndataLogDir:/var/lib/zk-log\n"
      "clientPort=2182\nclientPortAddress=127.0.0.2\nserver.2=b:2888:3888\nserver.1=a:2888:3888;2181\n"
      "dynamicConfigFile=/etc/zk/zoo.cfg.dynamic.100000000\n",
      "zoo.cfg");
  CHECK(c.data_dir == "/var/lib/zk");
  CHECK(c.data_log_dir == "/var/lib/zk-log");
  CHECK(c.client_port == 2182);
  CHECK(c.client_port_address == "127.0.0.2");
  CHECK(c.dynamic_config_file == "/etc/zk/zoo.cfg.dynamic.100000000");
  REQUIRE(c.servers.size() == 2);
  CHECK(c.servers.at(1) == "a:2888:3888;2181");

  // The same ensemble listed in another order, another client part: one id.
  auto d = parse_zoo_cfg("server.1=a:2888:3888\nserver.2=b:2888:3888\nclientPort=2181\n", "other");
  CHECK(derive_cluster_id(c) == derive_cluster_id(d));
  auto e = parse_zoo_cfg("server.1=a:2888:3888\nserver.2=c:2888:3888\n", "third");
  CHECK(derive_cluster_id(c) != derive_cluster_id(e));
  CHECK(derive_cluster_id(parse_zoo_cfg("clientPort=2181\n", "x")) == "zk-standalone-2181");

  CHECK_THROWS_WITH(parse_zoo_cfg("dataDir=/a\nnot a property\n", "/etc/zk/zoo.cfg"), Catch::Contains("'/etc/zk/zoo.cfg' line 2"));
  CHECK_THROWS_WITH(parse_zoo_cfg("clientPort=99999\n", "z"), Catch::Contains("clientPort"));
}

TEST_CASE("zoo.cfg: the client address of a server entry in the reconfig form", "[zookeeper]") {
  CHECK(client_of_server_entry("a:2888:3888;2181") == std::make_pair(std::string(), 2181));
  CHECK(client_of_server_entry("a:2888:3888:participant;0.0.0.0:2182") == std::make_pair(std::string("0.0.0.0"), 2182));
  CHECK_FALSE(client_of_server_entry("a:2888:3888"));
  CHECK_FALSE(client_of_server_entry("a:2888:3888;notaport"));
}

TEST_CASE("zoo.cfg: the dynamic file's servers join the list", "[zookeeper]") {
  TempDir t;
  write(t.path + "/zoo.cfg.dynamic", "server.1=a:2888:3888;2181\nserver.3=c:2888:3888;2181\n");
  write(t.path + "/zoo.cfg", "dataDir=/d\ndynamicConfigFile=" + t.path + "/zoo.cfg.dynamic\n");
  auto c = read_zoo_cfg(t.path + "/zoo.cfg");
  CHECK(c.servers.size() == 2);
  CHECK(c.servers.count(3) == 1);
}

TEST_CASE("file names: zxids as ZooKeeper reads them", "[zookeeper]") {
  CHECK(zxid_from_name("snapshot.0", "snapshot") == 0u);
  CHECK(zxid_from_name("snapshot.1a2b", "snapshot") == 0x1a2bu);
  CHECK(zxid_from_name("snapshot.100000005.gz", "snapshot") == 0x100000005u);
  CHECK(zxid_from_name("log.200000001", "log") == 0x200000001u);
  CHECK_FALSE(zxid_from_name("snapshot.", "snapshot"));
  CHECK_FALSE(zxid_from_name("snapshot.xyz", "snapshot"));
  CHECK_FALSE(zxid_from_name("snapshotX.10", "snapshot"));
  CHECK_FALSE(zxid_from_name("log.10", "snapshot"));
  CHECK_FALSE(zxid_from_name("snapshot.ffffffffffffffff", "snapshot"));  // over a Java long
  CHECK(parse_zxid("0x100000005") == 0x100000005u);
  CHECK(parse_zxid("42") == 42u);
  CHECK(zxid_hex(0x100000005) == "0x100000005");
}

TEST_CASE("snapshot trailer: valid, cut short, too short, compressed", "[zookeeper]") {
  TempDir t;
  std::string good = snapshot_bytes(std::string(300, 'x'));
  write(t.path + "/snapshot.10", good);
  CHECK(check_snapshot(t.path + "/snapshot.10") == SnapshotCheck::valid);
  // Being written: every prefix of a valid snapshot lacks the trailer.
  for (size_t cut : {size_t(12), good.size() / 2, good.size() - 1}) {
    write(t.path + "/snapshot.20", good.substr(0, cut));
    CHECK(check_snapshot(t.path + "/snapshot.20") == SnapshotCheck::no_trailer);
  }
  write(t.path + "/snapshot.30", "abc");
  CHECK(check_snapshot(t.path + "/snapshot.30") == SnapshotCheck::too_short);
  write(t.path + "/snapshot.40.gz", std::string("\x1f\x8b", 2) + "rest");
  CHECK(check_snapshot(t.path + "/snapshot.40.gz") == SnapshotCheck::valid);
  write(t.path + "/snapshot.41.gz", "not gzip");
  CHECK(check_snapshot(t.path + "/snapshot.41.gz") == SnapshotCheck::bad_magic);
  CHECK(check_snapshot(t.path + "/missing") == SnapshotCheck::unreadable);
}

TEST_CASE("selection: newest valid snapshot, the last log before it and every one after", "[zookeeper]") {
  TempDir t;
  std::string v2 = t.path + "/version-2";
  std::string good = snapshot_bytes(std::string(100, 's'));
  write(v2 + "/snapshot.3", good);
  write(v2 + "/snapshot.10", good);
  write(v2 + "/snapshot.20", good.substr(0, good.size() - 7));  // still being written
  for (const char* l : {"log.1", "log.5", "log.8", "log.12", "log.19"}) write(v2 + "/" + l, log_bytes({1}));
  write(v2 + "/currentEpoch", "1\n");
  Selection s = select_files(v2, v2);
  CHECK(s.snapshot == v2 + "/snapshot.10");
  CHECK(s.snapshot_zxid == 0x10);
  REQUIRE(s.skipped.size() == 1);
  CHECK(s.skipped[0].path == v2 + "/snapshot.20");
  // log.8 is the last one starting at or before 0x10; log.5 and log.1 are not needed.
  CHECK(s.logs == std::vector<std::string>{v2 + "/log.8", v2 + "/log.12", v2 + "/log.19"});

  SECTION("a finished temporary file is not taken either") {
    write(v2 + "/snapshot.30.tmp", good);
    Selection s2 = select_files(v2, v2);
    CHECK(s2.snapshot == v2 + "/snapshot.10");
    CHECK(s2.skipped.size() == 2);
  }
  SECTION("a log starting exactly at the snapshot's zxid is the first one") {
    write(v2 + "/log.10", log_bytes({0x10}));
    Selection s2 = select_files(v2, v2);
    CHECK(s2.logs.front() == v2 + "/log.10");
  }
  SECTION("no log before the snapshot: every log") {
    TempDir u;
    write(u.path + "/snapshot.0", good);
    write(u.path + "/log.1", log_bytes({1}));
    write(u.path + "/log.9", log_bytes({9}));
    CHECK(select_files(u.path, u.path).logs.size() == 2);
  }
  SECTION("no valid snapshot: refused, naming each one passed over") {
    TempDir u;
    write(u.path + "/snapshot.5", good.substr(0, 40));
    CHECK_THROWS_WITH(select_files(u.path, u.path),
                      Catch::Contains("no valid snapshot") && Catch::Contains("snapshot.5") && Catch::Contains("trailer"));
  }
}

TEST_CASE("transaction log: the last zxid, stopping at zeros, a bad checksum or a partial entry", "[zookeeper]") {
  TempDir t;
  write(t.path + "/log.1", log_bytes({0x100000001, 0x100000002, 0x100000003}));
  LogScan s = scan_log(t.path + "/log.1");
  CHECK(s.header_ok);
  CHECK(s.txns == 3);
  CHECK(s.first_zxid == 0x100000001);
  CHECK(s.last_zxid == 0x100000003);

  std::string bytes = log_bytes({5, 6, 7}, 0);
  std::string cut = bytes.substr(0, bytes.size() - 3);  // the last entry is partial
  write(t.path + "/log.5", cut);
  CHECK(scan_log(t.path + "/log.5").last_zxid == 6);

  std::string bad = log_bytes({5, 6, 7}, 0);
  size_t second = 16 + (bad.size() - 16) / 3;  // entries are the same size
  bad[second + 14] ^= 0x40;                    // inside the second transaction
  write(t.path + "/log.6", bad);
  CHECK(scan_log(t.path + "/log.6").txns == 1);

  write(t.path + "/log.7", "not a log at all");
  CHECK_FALSE(scan_log(t.path + "/log.7").header_ok);
}

TEST_CASE("four-letter words: srvr and mntr replies, the whitelist refusal", "[zookeeper]") {
  auto s = parse_srvr(
      "Zookeeper version: 3.8.0-abc, built on 2024-12-29 17:54 UTC\nLatency min/avg/max: 0/0.0/0\n"
      "Received: 1\nSent: 0\nConnections: 1\nOutstanding: 0\nZxid: 0x100000007\nMode: leader\nNode count: 12\n");
  CHECK(s.version.rfind("3.8.0", 0) == 0);
  CHECK(s.mode == "leader");
  CHECK(s.zxid == 0x100000007);
  CHECK(s.node_count == 12);
  CHECK_THROWS(parse_srvr("This ZooKeeper instance is not currently serving requests\n"));
  auto m = parse_mntr("zk_version\t3.8.0\nzk_server_state\tfollower\nzk_znode_count\t9\nzk_ephemerals_count\t2\n");
  CHECK(m.mode == "follower");
  CHECK(m.node_count == 9);
  CHECK(m.ephemerals == 2u);
  CHECK(is_not_whitelisted("srvr is not executed because it is not in the whitelist.\n"));
  CHECK_FALSE(is_not_whitelisted("imok"));
}

namespace {

// A server's directories: data (myid, version-2 with a snapshot being
// written), a separate or shared log directory, zoo.cfg.
struct FakeServer {
  TempDir t;
  std::string data, logs, cfg, good;
  explicit FakeServer(bool separate_logs) {
    data = t.path + "/data";
    logs = separate_logs ? t.path + "/logs" : data;
    cfg = t.path + "/conf/zoo.cfg";
    good = snapshot_bytes(std::string(1000, 'd'));
    write(data + "/myid", "2\n");
    write(data + "/version-2/snapshot.100000000", good);
    write(data + "/version-2/snapshot.100000010", good);
    write(data + "/version-2/snapshot.100000020", good.substr(0, 500));  // being written
    write(data + "/version-2/currentEpoch", "1");
    write(data + "/version-2/acceptedEpoch", "1");
    write(logs + "/version-2/log.100000001", log_bytes({0x100000001, 0x100000002}));
    write(logs + "/version-2/log.10000000c", log_bytes({0x10000000c, 0x10000000d}));
    write(logs + "/version-2/log.100000015", log_bytes({0x100000015, 0x100000016, 0x100000017}, 1 << 16));
    write(cfg, "dataDir=" + data + "\n");
  }
  StageSpec spec() const {
    StageSpec s;
    s.data_dir = data;
    s.data_log_dir = logs;
    s.config_file = cfg;
    s.task = "t1";
    return s;
  }
};

}  // namespace

TEST_CASE("staging: finished files linked, the live log copied, the snapshot being written left out", "[zookeeper]") {
  for (bool separate : {false, true}) {
    DYNAMIC_SECTION("separate log directory: " << separate) {
      FakeServer srv(separate);
      Staged st = stage(srv.spec());
      const std::string sv2 = st.data_staging + "/version-2";
      const std::string slog = separate ? st.log_staging + "/version-2" : sv2;
      CHECK(st.data_staging == srv.data + "/.cairn-staging-t1");
      CHECK(fs::exists(sv2 + "/snapshot.100000010"));
      CHECK_FALSE(fs::exists(sv2 + "/snapshot.100000020"));
      CHECK_FALSE(fs::exists(sv2 + "/snapshot.100000000"));
      CHECK(inode(sv2 + "/snapshot.100000010") == inode(srv.data + "/version-2/snapshot.100000010"));
      // log.10000000c is the last one starting before 0x100000010; log.100000001 is not needed.
      CHECK_FALSE(fs::exists(slog + "/log.100000001"));
      CHECK(inode(slog + "/log.10000000c") == inode(srv.logs + "/version-2/log.10000000c"));
      CHECK(inode(slog + "/log.100000015") != inode(srv.logs + "/version-2/log.100000015"));
      CHECK(slurp(slog + "/log.100000015") == slurp(srv.logs + "/version-2/log.100000015"));
      CHECK(slurp(st.data_staging + "/myid") == "2\n");
      CHECK(st.myid == "2");
      CHECK(st.current_epoch == 1u);
      CHECK(fs::exists(st.data_staging + "/conf/zoo.cfg"));
      CHECK(st.last_zxid == 0x100000017);
      CHECK(st.selection.skipped.size() == 1);
      if (separate) CHECK(fs::exists(st.log_staging));
      remove_tree(st.data_staging);
      if (separate) remove_tree(st.log_staging);
    }
  }
}

TEST_CASE("staging: a leftover of a crashed run is replaced; a failure leaves nothing", "[zookeeper]") {
  FakeServer srv(false);
  write(srv.data + "/.cairn-staging-t1/junk", "old");
  Staged st = stage(srv.spec());
  CHECK_FALSE(fs::exists(st.data_staging + "/junk"));
  remove_tree(st.data_staging);

  fs::remove(srv.data + "/version-2/snapshot.100000000");
  fs::remove(srv.data + "/version-2/snapshot.100000010");
  CHECK_THROWS_WITH(stage(srv.spec()), Catch::Contains("no valid snapshot"));
  CHECK_FALSE(fs::exists(srv.data + "/.cairn-staging-t1"));
}

TEST_CASE("copy_file_sparse keeps holes and content", "[zookeeper]") {
  TempDir t;
  std::string src = t.path + "/sparse";
  {
    int fd = ::open(src.c_str(), O_WRONLY | O_CREAT, 0640);
    REQUIRE(fd >= 0);
    REQUIRE(::pwrite(fd, "head", 4, 0) == 4);
    REQUIRE(::pwrite(fd, "tail", 4, (64 << 20) - 4) == 4);
    ::close(fd);
  }
  uint64_t data = copy_file_sparse(src, t.path + "/copy");
  CHECK(fs::file_size(t.path + "/copy") == (64u << 20));
  CHECK(data < (8u << 20));  // the hole was not read as zeros
  CHECK(slurp(t.path + "/copy") == slurp(src));
  CHECK((fs::status(t.path + "/copy").permissions() & fs::perms::all) ==
        (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read));
  CHECK_THROWS(copy_file_sparse(src, t.path + "/copy"));  // never over an existing file
}

TEST_CASE("restore placement: version-2 swapped in, the old one kept, myid untouched, rollback", "[zookeeper]") {
  for (bool separate_backup : {false, true}) {
    for (bool separate_here : {false, true}) {
      DYNAMIC_SECTION("logs separate in the backup: " << separate_backup << ", on this server: " << separate_here) {
        FakeServer backup(separate_backup);
        Staged st = stage(backup.spec());

        TempDir here;
        std::string data = here.path + "/data", logs = separate_here ? here.path + "/logs" : data;
        write(data + "/myid", "3\n");
        write(data + "/version-2/snapshot.200000000", "current server state");
        write(logs + "/version-2/log.200000001", "current log");

        PlaceSpec ps;
        ps.data_root = st.data_staging;
        ps.log_root = st.log_staging;
        ps.data_dir = data;
        ps.data_log_dir = logs;
        ps.stamp = "20261123T100000Z";
        ps.restore_id = "rs-1";
        Placed p = place_restored(ps);
        CHECK(p.snapshot_zxid == 0x100000010);
        CHECK(p.zxid == 0x100000017);
        CHECK(slurp(data + "/myid") == "3\n");  // this server's identity stays
        CHECK(slurp(data + "/version-2/snapshot.100000010") == backup.good);
        CHECK(fs::exists(logs + "/version-2/log.100000015"));
        CHECK(fs::exists(data + "/version-2/currentEpoch"));
        CHECK_FALSE(fs::exists(data + "/version-2/snapshot.200000000"));
        CHECK(p.old_data_v2 == data + "/version-2.cairn-old-20261123T100000Z");
        CHECK(slurp(p.old_data_v2 + "/snapshot.200000000") == "current server state");
        if (separate_here) {
          CHECK_FALSE(fs::exists(data + "/version-2/log.100000015"));
          CHECK(slurp(p.old_log_v2 + "/log.200000001") == "current log");
        }
        CHECK(read_restore_state(data)["zxid"] == "0x100000017");

        // Another restore's rollback does not undo this one.
        CHECK(rollback(data, logs, "20261123T100400Z", "rs-2").nothing);
        CHECK(fs::exists(data + "/version-2/snapshot.100000010"));
        RolledBack rb = rollback(data, logs, "20261123T100500Z", "rs-1");
        CHECK_FALSE(rb.nothing);
        CHECK(slurp(data + "/version-2/snapshot.200000000") == "current server state");
        CHECK(slurp(logs + "/version-2/log.200000001") == "current log");
        CHECK(fs::exists(rb.restored_aside + "/snapshot.100000010"));
        CHECK(rollback(data, logs, "x", "rs-1").nothing);  // once only
        remove_tree(st.data_staging);
        if (!st.log_staging.empty()) remove_tree(st.log_staging);
      }
    }
  }
}

TEST_CASE("restore placement: an agent stopped between the swap's renames is rolled back from its record", "[zookeeper]") {
  // The record is written before the first rename; each state an agent
  // killed between the renames can leave is rebuilt here from a finished
  // placement, then rolled back.
  enum class At { before_any, data_set_aside, data_swapped_log_not };
  for (bool separate_here : {false, true})
    for (At at : {At::before_any, At::data_set_aside, At::data_swapped_log_not}) {
      if (at == At::data_swapped_log_not && !separate_here) continue;
      DYNAMIC_SECTION("logs separate: " << separate_here << ", stopped at " << int(at)) {
        FakeServer backup(false);
        Staged st = stage(backup.spec());
        TempDir here;
        std::string data = here.path + "/data", logs = separate_here ? here.path + "/logs" : data;
        write(data + "/myid", "3\n");
        write(data + "/version-2/snapshot.200000000", "current server state");
        write(logs + "/version-2/log.200000001", "current log");
        PlaceSpec ps;
        ps.data_root = st.data_staging;
        ps.data_dir = data;
        ps.data_log_dir = logs;
        ps.stamp = "20261123T100000Z";
        ps.restore_id = "rs-1";
        Placed p = place_restored(ps);
        const std::string new_data = data + "/version-2.cairn-new-20261123T100000Z";
        const std::string new_log = logs + "/version-2.cairn-new-20261123T100000Z";
        auto mv = [](const std::string& a, const std::string& b) { fs::rename(a, b); };
        if (separate_here) {  // the data directory is swapped first: in each state the log directory never moved
          mv(logs + "/version-2", new_log);
          mv(p.old_log_v2, logs + "/version-2");
        }
        if (at == At::before_any) {
          mv(data + "/version-2", new_data);
          mv(p.old_data_v2, data + "/version-2");
        } else if (at == At::data_set_aside) {
          mv(data + "/version-2", new_data);  // the restored copy not placed yet
        }
        RolledBack rb = rollback(data, logs, "20261123T100500Z", "rs-1");
        CHECK(rb.nothing == (at == At::before_any));
        CHECK(slurp(data + "/version-2/snapshot.200000000") == "current server state");
        CHECK(slurp(logs + "/version-2/log.200000001") == "current log");
        CHECK(slurp(data + "/myid") == "3\n");
        CHECK_FALSE(fs::exists(new_data));
        CHECK_FALSE(fs::exists(new_log));
        CHECK_FALSE(fs::exists(p.old_data_v2));
        CHECK(read_restore_state(data).empty());           // the record went with the rollback
        CHECK(rollback(data, logs, "x", "rs-1").nothing);  // once only
        CHECK(slurp(data + "/version-2/snapshot.200000000") == "current server state");
        remove_tree(st.data_staging);
      }
    }
}

TEST_CASE("restore placement: restored files without a valid snapshot change nothing", "[zookeeper]") {
  TempDir t;
  write(t.path + "/restored/version-2/snapshot.5", "cut short");
  write(t.path + "/data/version-2/snapshot.1", "current");
  PlaceSpec ps;
  ps.data_root = t.path + "/restored";
  ps.data_dir = ps.data_log_dir = t.path + "/data";
  ps.stamp = "s";
  CHECK_THROWS_WITH(place_restored(ps), Catch::Contains("no valid snapshot"));
  CHECK(slurp(t.path + "/data/version-2/snapshot.1") == "current");
  CHECK_FALSE(fs::exists(t.path + "/data/version-2.cairn-old-s"));
}

TEST_CASE("staging: without a valid snapshot, a safety backup takes every file as it is", "[zookeeper]") {
  FakeServer srv(false);
  fs::remove(srv.data + "/version-2/snapshot.100000000");
  fs::remove(srv.data + "/version-2/snapshot.100000010");
  StageSpec spec = srv.spec();
  spec.raw_when_no_snapshot = true;
  Staged st = stage(spec);
  CHECK(st.raw);
  const std::string sv2 = st.data_staging + "/version-2";
  CHECK(fs::exists(sv2 + "/snapshot.100000020"));  // the broken one too: it is what is there
  CHECK(fs::exists(sv2 + "/log.100000001"));
  CHECK(fs::exists(sv2 + "/currentEpoch"));
  CHECK(inode(sv2 + "/log.100000015") != inode(srv.data + "/version-2/log.100000015"));
  remove_tree(st.data_staging);
}

TEST_CASE("leftovers of crashed runs are removed, nothing else", "[zookeeper]") {
  TempDir t;
  write(t.path + "/.cairn-staging-old/version-2/snapshot.1", "x");
  write(t.path + "/.cairn-staging-file", "a file, not ours");
  write(t.path + "/version-2/snapshot.1", "keep");
  // A link of the name to a directory elsewhere: neither it nor what it points at is touched.
  write(t.path + "/elsewhere/precious", "keep");
  fs::create_directory_symlink(t.path + "/elsewhere", t.path + "/.cairn-staging-link");
  auto gone = remove_leftovers(t.path, ".cairn-staging-");
  CHECK(gone == std::vector<std::string>{t.path + "/.cairn-staging-old"});
  CHECK_FALSE(fs::exists(t.path + "/.cairn-staging-old"));
  CHECK(fs::exists(t.path + "/.cairn-staging-file"));
  CHECK(fs::exists(t.path + "/version-2/snapshot.1"));
  CHECK(fs::is_symlink(t.path + "/.cairn-staging-link"));
  CHECK(fs::exists(t.path + "/elsewhere/precious"));
  CHECK(remove_leftovers(t.path + "/missing", ".cairn-staging-").empty());
}
