// The file logic on a real ZooKeeper's data (Debian's zookeeper package):
// every snapshot the server writes passes the trailer check, the log reader
// finds the zxid the server reports, and the staged files, put in place for a
// second server, load as the same tree. Skipped (with a warning) when
// ZooKeeper or java is not installed.
#include "tests/unit/agent/zookeeper/real_server.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "agent/drivers/zookeeper/four_letter.h"
#include "agent/drivers/zookeeper/layout.h"
#include "agent/drivers/zookeeper/staging.h"
#include "tests/unit/agent/agent_fixture.h"

namespace fs = std::filesystem;
using namespace cairn::agent::zookeeper;
using namespace std::chrono_literals;

using namespace cairn::agent::test::zk;

TEST_CASE("a real server's data: snapshots valid, the zxid read from the logs, staged files load as the same tree", "[zookeeper][real]") {
  if (!have_zookeeper()) {
    WARN("ZooKeeper (" << kJar << ") or java is not installed: skipped");
    return;
  }
  char tmpl[] = "/tmp/cairn-zk-real-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  struct Rm {
    std::string d;
    ~Rm() { fs::remove_all(d); }
  } rm{dir};

  Server a(dir, dir + "/a-data");
  // Enough writes for several snapshots (snapCount=20: one every 10 to 20).
  std::string script = "create /app root\n";
  for (int i = 0; i < 60; ++i) script += "create /app/n" + std::to_string(i) + " value-" + std::to_string(i) + "\n";
  script += "set /app/n7 changed\ndelete /app/n8\n";
  cli(a.port, script, dir);
  ServerStatus before = a.status();
  REQUIRE(before.has_zxid);
  CHECK(before.node_count >= 60);

  const std::string v2 = a.data + "/version-2";
  // The server writes snapshots on a thread of its own: let the last one finish.
  for (int i = 0; i < 100; ++i) {
    bool all_valid = true;
    for (const auto& e : fs::directory_iterator(v2))
      if (zxid_from_name(e.path().filename().string(), "snapshot") && check_snapshot(e.path()) != SnapshotCheck::valid) all_valid = false;
    if (all_valid) break;
    std::this_thread::sleep_for(100ms);
  }
  int snapshots = 0;
  for (const auto& e : fs::directory_iterator(v2)) {
    std::string n = e.path().filename();
    if (zxid_from_name(n, "snapshot")) {
      ++snapshots;
      CHECK(check_snapshot(e.path()) == SnapshotCheck::valid);
      // Every proper prefix is refused, as a snapshot still being written.
      std::string bytes;
      {
        std::ifstream f(e.path(), std::ios::binary);
        bytes.assign(std::istreambuf_iterator<char>(f), {});
      }
      std::ofstream(dir + "/prefix", std::ios::binary) << bytes.substr(0, bytes.size() - 1);
      CHECK(check_snapshot(dir + "/prefix") != SnapshotCheck::valid);
    }
  }
  CHECK(snapshots >= 2);

  // A snapshot being written, newer than every other: not taken.
  Selection sel0 = select_files(v2, v2);
  {
    std::ifstream f(sel0.snapshot, std::ios::binary);
    std::string bytes(std::istreambuf_iterator<char>(f), {});
    std::ofstream(v2 + "/snapshot." + std::string(zxid_hex(before.zxid + 0x100).substr(2)), std::ios::binary)
        << bytes.substr(0, bytes.size() / 2);
  }

  StageSpec spec;
  spec.data_dir = spec.data_log_dir = a.data;
  spec.config_file = dir + "/zoo.cfg";
  spec.task = "real";
  Staged st = stage(spec);
  CHECK(st.selection.snapshot == sel0.snapshot);
  CHECK(st.selection.skipped.size() == 1);
  CHECK(st.last_zxid == before.zxid);  // the log reader ends where the server stands

  // A second server on the staged files: the same tree.
  a.stop();
  PlaceSpec ps;
  ps.data_root = st.data_staging;
  ps.data_dir = ps.data_log_dir = dir + "/b-data";
  ps.stamp = "t";
  fs::create_directories(ps.data_dir);
  Placed placed = place_restored(ps);
  CHECK(placed.zxid == before.zxid);
  Server b(dir, ps.data_dir);
  ServerStatus after = b.status();
  CHECK(after.zxid == before.zxid);
  CHECK(after.node_count == before.node_count);
  cli(b.port, "get /app/n7\nget /app/n59\nls /app\n", dir);
  std::ifstream f(dir + "/cli.log");
  std::string out(std::istreambuf_iterator<char>(f), {});
  CHECK(out.find("changed") != std::string::npos);
  CHECK(out.find("value-59") != std::string::npos);
  CHECK(out.find("n8,") == std::string::npos);
}

// Not a test (hidden; run with `unit_zookeeper "[.bench]"`): the in-place
// snapshot (stage()) as the data grows 10x, with snapCount fixed. Finished
// files are links, so the time follows the live log (bounded by snapCount),
// not the size of the data.
TEST_CASE("bench: in-place snapshot time as the data grows 10x", "[.bench]") {
  if (!have_zookeeper()) return;
  char tmpl[] = "/tmp/cairn-zk-bench-XXXXXX";
  std::string dir = ::mkdtemp(tmpl);
  struct Rm {
    std::string d;
    ~Rm() { fs::remove_all(d); }
  } rm{dir};
  Server a(dir, dir + "/data", 2000);
  std::string value(1024, 'v');
  int have = 0;
  for (int target : {2000, 20000}) {
    std::string script;
    for (; have < target; ++have) script += "create /n" + std::to_string(have) + " " + value + "\n";
    cli(a.port, script, dir);
    uint64_t snap_bytes = 0;
    for (const auto& e : fs::directory_iterator(a.data + "/version-2"))
      if (zxid_from_name(e.path().filename().string(), "snapshot")) snap_bytes = std::max<uint64_t>(snap_bytes, fs::file_size(e.path()));
    StageSpec spec;
    spec.data_dir = spec.data_log_dir = a.data;
    spec.config_file = dir + "/zoo.cfg";
    double best = 1e9;
    Staged st;
    for (int run = 0; run < 5; ++run) {
      spec.task = "bench" + std::to_string(run);
      auto t0 = std::chrono::steady_clock::now();
      st = stage(spec);
      best = std::min(best, std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
      remove_tree(st.data_staging);
    }
    WARN(target << " znodes of 1 KiB, newest snapshot " << snap_bytes / 1024 << " KiB, " << st.files_linked << " linked, "
                << st.files_copied << " copied: stage() best of 5 " << best << " ms");
  }
}
