// The kafka driver's file logic on log dirs written in Kafka's formats:
// meta.properties and offset checkpoints, which files a backup links (wholly
// below the high watermark), copies (the rest) and leaves out, the order
// (checkpoints first), the segment scan and the swap of a restore.
#include "agent/drivers/kafka/log_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/util/error.h"

namespace fs = std::filesystem;
using namespace cairn::agent::kafka;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/cairn-kafka-test-XXXXXX";
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

void put(std::string& s, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) s += char((v >> (8 * i)) & 0xff);
}

// A v2 record batch of `records` records starting at `base`.
std::string batch(uint64_t base, int records, size_t body = 100) {
  std::string b;
  put(b, base, 8);
  put(b, 49 + body, 4);
  put(b, 3, 4);                      // partition leader epoch
  b += char(2);                      // magic
  put(b, 0x12345678u + base, 4);     // crc
  put(b, 0, 2);                      // attributes
  put(b, uint32_t(records - 1), 4);  // last offset delta
  b.resize(61 + body, '\0');         // timestamps, producer, sequence, records
  return b;
}

std::string seg_name(uint64_t base, const char* suffix) {
  char n[40];
  std::snprintf(n, sizeof n, "%020llu%s", static_cast<unsigned long long>(base), suffix);
  return n;
}

std::string checkpoint(const std::vector<std::tuple<std::string, int, int64_t>>& entries) {
  std::string s = "0\n" + std::to_string(entries.size()) + "\n";
  for (const auto& [t, p, o] : entries) s += t + " " + std::to_string(p) + " " + std::to_string(o) + "\n";
  return s;
}

ino_t inode(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 ? st.st_ino : 0;
}

// A log dir with one partition of three segments (base 0, 10, 20; 10 records
// each) and the high watermark at `hw`.
std::string make_log_dir(const std::string& root, int64_t hw) {
  std::string d = root + "/logs";
  write(d + "/meta.properties", "#\nversion=1\ncluster.id=AbCdEfGhIjKlMnOpQrStUv\nnode.id=2\n");
  write(d + "/" + kHighWatermarkCheckpoint, checkpoint({{"orders", 0, hw}}));
  write(d + "/" + kRecoveryCheckpoint, checkpoint({{"orders", 0, 25}}));
  write(d + "/" + kLogStartCheckpoint, checkpoint({{"orders", 0, 0}}));
  write(d + "/.lock", "");
  write(d + "/.kafka_cleanshutdown", "");
  for (uint64_t base : {0, 10, 20}) {
    std::string seg;
    for (uint64_t o = base; o < base + 10; o += 5) seg += batch(o, 5);
    write(d + "/orders-0/" + seg_name(base, ".log"), seg);
    write(d + "/orders-0/" + seg_name(base, ".index"), std::string(16, 'i'));
    write(d + "/orders-0/" + seg_name(base, ".timeindex"), std::string(24, 't'));
  }
  write(d + "/orders-0/" + seg_name(20, ".snapshot"), "producer state");
  write(d + "/orders-0/leader-epoch-checkpoint", "0\n1\n3 0\n");
  write(d + "/orders-0/partition.metadata", "version: 0\ntopic_id: abc\n");
  write(d + "/orders-0/" + seg_name(0, ".log.deleted"), "gone");
  write(d + "/orders-0/" + seg_name(0, ".cleaned"), "half");
  write(d + "/old-1-delete/x.log", "deleted topic");  // not a real name, but a -delete dir
  write(d + "/orders-1.abc-future/x", "a move in progress");
  write(d + "/lost+found/y", "fsck");
  return d;
}

}  // namespace

TEST_CASE("meta.properties and offset checkpoints are read, and malformed ones named") {
  TempDir t;
  write(t.path + "/a/meta.properties", "# comment\nversion=0\nbroker.id = 7\ncluster.id=xyz\n");
  auto m = read_meta_properties(t.path + "/a");
  REQUIRE(m);
  CHECK(m->cluster_id == "xyz");
  CHECK(m->node_id == "7");
  CHECK_FALSE(read_meta_properties(t.path + "/none"));
  write(t.path + "/b/meta.properties", "cluster.id=xyz\n");
  CHECK_THROWS_WITH(read_meta_properties(t.path + "/b"), Catch::Contains("no 'version'"));

  write(t.path + "/cp", checkpoint({{"my topic-with-dash", 3, 42}, {"x", 0, -1}}));
  auto cp = read_offset_checkpoint(t.path + "/cp");
  CHECK(cp.at("my topic-with-dash-3") == 42);
  CHECK(cp.at("x-0") == -1);
  CHECK(read_offset_checkpoint(t.path + "/missing").empty());
  write(t.path + "/empty", "");  // as a broker creates it at start
  CHECK(read_offset_checkpoint(t.path + "/empty").empty());
  write(t.path + "/bad", "0\n5\nx 0 1\n");
  CHECK_THROWS_WITH(read_offset_checkpoint(t.path + "/bad"), Catch::Contains("line 2"));
  write(t.path + "/bad2", "0\n1\nx zero 1\n");
  CHECK_THROWS_WITH(read_offset_checkpoint(t.path + "/bad2"), Catch::Contains("line 3"));
}

TEST_CASE("names: partition directories and what a backup leaves out") {
  CHECK(is_partition_dir_name("orders-0"));
  CHECK(is_partition_dir_name("__consumer_offsets-49"));
  CHECK(is_partition_dir_name("__cluster_metadata-0"));
  CHECK_FALSE(is_partition_dir_name("lost+found"));
  CHECK_FALSE(is_partition_dir_name("orders-"));
  CHECK_FALSE(is_partition_dir_name(".cairn-staging-1"));
  CHECK(skipped("orders-0.abc-delete", true));
  CHECK(skipped("orders-0.abc-future", true));
  CHECK(skipped("orders-0.abc-stray", true));
  CHECK(skipped("remote-log-index-cache", true));
  for (auto n : {".lock", ".kafka_cleanshutdown", "00000000000000000000.log.deleted", "x.cleaned", "x.swap", "1-2.checkpoint.part"})
    CHECK(skipped(n, false));
  CHECK_FALSE(skipped("00000000000000000000.log", false));
  CHECK_FALSE(skipped("leader-epoch-checkpoint", false));
}

TEST_CASE("a segment's end is the last whole batch; a torn tail is noticed") {
  TempDir t;
  std::string seg = batch(100, 4) + batch(104, 6);
  write(t.path + "/s.log", seg + batch(110, 3).substr(0, 30));
  auto e = scan_segment(t.path + "/s.log", 100);
  CHECK(e.next_offset == 110);
  CHECK(e.batches == 2);
  CHECK(e.valid_bytes == seg.size());
  CHECK(e.torn);
  write(t.path + "/z.log", seg + std::string(4096, '\0'));  // preallocated
  CHECK(scan_segment(t.path + "/z.log", 100).next_offset == 110);
  write(t.path + "/empty.log", "");
  CHECK(scan_segment(t.path + "/empty.log", 55).next_offset == 55);
}

TEST_CASE("online staging: checkpoints copied, segments below the high watermark linked, the rest copied, leftovers skipped") {
  TempDir t;
  std::string d = make_log_dir(t.path, 20);  // segments 0 and 10 are wholly below HW 20
  StageSpec spec{d, t.path + "/staging", false};
  Staged st = stage(spec);
  const std::string s = spec.staging;
  // linked: segments 0 and 10 with their indexes
  for (uint64_t base : {0, 10})
    for (auto suf : {".log", ".index", ".timeindex"})
      CHECK(inode(s + "/orders-0/" + seg_name(base, suf)) == inode(d + "/orders-0/" + seg_name(base, suf)));
  // copied: the active segment (20), without its indexes (rebuilt by the broker)
  CHECK(inode(s + "/orders-0/" + seg_name(20, ".log")) != inode(d + "/orders-0/" + seg_name(20, ".log")));
  CHECK(slurp(s + "/orders-0/" + seg_name(20, ".log")) == slurp(d + "/orders-0/" + seg_name(20, ".log")));
  CHECK_FALSE(fs::exists(s + "/orders-0/" + seg_name(20, ".index")));
  // small state copied
  for (auto n : {"leader-epoch-checkpoint", "partition.metadata"}) CHECK(slurp(s + "/orders-0/" + n) == slurp(d + "/orders-0/" + n));
  CHECK(fs::exists(s + "/orders-0/" + seg_name(20, ".snapshot")));
  for (auto n : {"meta.properties", kHighWatermarkCheckpoint, kRecoveryCheckpoint, kLogStartCheckpoint})
    CHECK(slurp(s + "/" + n) == slurp(d + "/" + n));
  // left out
  CHECK_FALSE(fs::exists(s + "/.lock"));
  CHECK_FALSE(fs::exists(s + "/.kafka_cleanshutdown"));
  CHECK_FALSE(fs::exists(s + "/orders-0/" + seg_name(0, ".log.deleted")));
  CHECK_FALSE(fs::exists(s + "/orders-0/" + seg_name(0, ".cleaned")));
  CHECK_FALSE(fs::exists(s + "/old-1-delete"));
  CHECK_FALSE(fs::exists(s + "/orders-1.abc-future"));
  CHECK_FALSE(fs::exists(s + "/lost+found"));
  REQUIRE(st.skipped_dirs == std::vector<std::string>{"lost+found"});
  // positions
  REQUIRE(st.partitions.count("orders-0"));
  const auto& p = st.partitions.at("orders-0");
  CHECK(p.log_start == 0);
  CHECK(p.log_end == 30);
  CHECK(p.high_watermark == 20);
  CHECK(p.recovery_point == 25);
  CHECK(p.segments == 3);
  REQUIRE(st.meta);
  CHECK(st.meta->node_id == "2");
  CHECK(st.files_linked == 6);
}

TEST_CASE("online staging: a segment above the high watermark is copied, not linked (a follower may truncate it)") {
  TempDir t;
  std::string d = make_log_dir(t.path, 15);  // segment 10 reaches past HW 15
  Staged st = stage({d, t.path + "/staging", false});
  CHECK(inode(t.path + "/staging/orders-0/" + seg_name(0, ".log")) == inode(d + "/orders-0/" + seg_name(0, ".log")));
  CHECK(inode(t.path + "/staging/orders-0/" + seg_name(10, ".log")) != inode(d + "/orders-0/" + seg_name(10, ".log")));
  CHECK_FALSE(fs::exists(t.path + "/staging/orders-0/" + seg_name(10, ".index")));
  // No high watermark recorded at all (a partition the checkpoint does not know yet): nothing is linked.
  TempDir u;
  std::string e = make_log_dir(u.path, 0);
  write(e + "/" + kHighWatermarkCheckpoint, checkpoint({}));
  Staged none = stage({e, u.path + "/staging", false});
  CHECK(none.partitions.at("orders-0").high_watermark == -1);
  CHECK(inode(u.path + "/staging/orders-0/" + seg_name(0, ".log")) != inode(e + "/orders-0/" + seg_name(0, ".log")));
}

TEST_CASE("offline staging links every file, the active segment and its indexes too") {
  TempDir t;
  std::string d = make_log_dir(t.path, 0);
  Staged st = stage({d, t.path + "/staging", true});
  for (uint64_t base : {0, 10, 20})
    CHECK(inode(t.path + "/staging/orders-0/" + seg_name(base, ".log")) == inode(d + "/orders-0/" + seg_name(base, ".log")));
  CHECK(fs::exists(t.path + "/staging/orders-0/" + seg_name(20, ".index")));
  CHECK(st.partitions.at("orders-0").log_end == 30);
}

TEST_CASE("staging refuses an existing directory and leaves nothing behind on failure") {
  TempDir t;
  std::string d = make_log_dir(t.path, 20);
  fs::create_directories(t.path + "/staging");
  CHECK_THROWS(stage({d, t.path + "/staging", false}));
  fs::remove_all(t.path + "/staging");
  write(d + "/" + kHighWatermarkCheckpoint, "garbage\n");
  CHECK_THROWS_WITH(stage({d, t.path + "/staging", false}), Catch::Contains(kHighWatermarkCheckpoint));
  CHECK_FALSE(fs::exists(t.path + "/staging"));
}

TEST_CASE("the swap of a restore keeps the old log dir, and swap_back puts it back") {
  TempDir t;
  std::string d = t.path + "/logs", r = t.path + "/restored";
  write(d + "/meta.properties", "old");
  write(r + "/meta.properties", "new");
  std::string old = swap_in(r, d, "20261123T000000Z");
  CHECK(old == d + ".cairn-old-20261123T000000Z");
  CHECK(slurp(d + "/meta.properties") == "new");
  CHECK(slurp(old + "/meta.properties") == "old");
  std::string aside = swap_back(d, old, "20261123T000001Z");
  CHECK(slurp(d + "/meta.properties") == "old");
  CHECK(slurp(aside + "/meta.properties") == "new");
  // nothing there before: nothing kept
  std::string e = t.path + "/fresh", r2 = t.path + "/r2";
  write(r2 + "/meta.properties", "x");
  CHECK(swap_in(r2, e, "s").empty());
  CHECK(slurp(e + "/meta.properties") == "x");
  // A swap recorded before it was made, and never made (the agent killed
  // between two log dirs): undoing it leaves the broker's own log dir alone.
  std::string never = t.path + "/second";
  write(never + "/meta.properties", "the broker's own");
  CHECK(swap_back(never, never + ".cairn-old-20261123T000000Z", "20261123T000001Z").empty());
  CHECK(slurp(never + "/meta.properties") == "the broker's own");
  CHECK_FALSE(fs::exists(never + ".cairn-failed-20261123T000001Z"));
}
