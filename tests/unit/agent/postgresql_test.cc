// The postgresql driver's pieces that need no server: WAL file names, the
// page checks a segment passes before it is reported stored (a whole segment,
// a truncated one, a damaged header, one of another position or timeline),
// timeline history files, recovery targets as cairnctl, the controller and
// the agent read them, the settings, and the archive socket's refusals of
// what is not a WAL file in the server's own pg_wal.
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <thread>

#include "agent/config.h"
#include "agent/drivers/postgresql/config.h"
#include "agent/drivers/postgresql/recovery.h"
#include "agent/drivers/postgresql/wal.h"
#include "agent/drivers/postgresql/wal_archive.h"
#include "agent/drivers/postgresql/wal_scan.h"
#include "common/plan/recovery_target.h"
#include "common/util/fs.h"

using namespace cairn;
using namespace cairn::agent;
using namespace cairn::agent::postgresql;
namespace v1 = cairn::v1;

namespace {

template <typename T>
void put(std::string& b, size_t off, T v) {
  std::memcpy(b.data() + off, &v, sizeof v);
}

// A segment as PostgreSQL 15 writes it: a long header on the first page, a
// short one on every other, each naming its own position; `zero_from` pages
// on are zeroed (a switched segment's tail).
std::string make_segment(uint32_t tli, uint64_t segno, uint64_t sysid, size_t zero_from = SIZE_MAX) {
  std::string b(kWalSegmentSize, '\0');
  for (size_t page = 0; page * kWalPageSize < kWalSegmentSize; ++page) {
    if (page >= zero_from) break;
    size_t off = page * kWalPageSize;
    put<uint16_t>(b, off, kWalPageMagic);
    put<uint16_t>(b, off + 2, page == 0 ? 0x0002 : 0);
    put<uint32_t>(b, off + 4, tli);
    put<uint64_t>(b, off + 8, segno * kWalSegmentSize + off);
    b[off + 24 + 16] = 'x';  // some record bytes
  }
  put<uint64_t>(b, 24, sysid);
  put<uint32_t>(b, 32, uint32_t(kWalSegmentSize));
  put<uint32_t>(b, 36, kWalPageSize);
  return b;
}

}  // namespace

TEST_CASE("WAL file names: segments, partial segments, history and backup history files") {
  auto s = parse_wal_name("00000001000000020000003F");
  REQUIRE(s);
  CHECK(s->kind == WalFileKind::segment);
  CHECK(s->timeline == 1);
  CHECK(s->segno == 2 * 256 + 0x3F);
  CHECK(segment_name(1, s->segno) == "00000001000000020000003F");
  CHECK(parse_wal_name("00000002000000000000000A.partial")->kind == WalFileKind::partial);
  auto h = parse_wal_name("0000000A.history");
  REQUIRE(h);
  CHECK(h->kind == WalFileKind::history);
  CHECK(h->timeline == 10);
  CHECK(parse_wal_name("000000010000000000000002.00000028.backup")->kind == WalFileKind::backup_history);
  for (const char* bad :
       {"", "00000001000000020000003f", "000000010000000200000100", "00000000000000020000003F", "../00000001000000020000003F",
        "0000000100000002000000", "pg_control", "00000001000000020000003F.tmp", "0000000A.history.x", "shadow"})
    CHECK_FALSE(parse_wal_name(bad));
}

TEST_CASE("a whole segment passes its page checks and gives the system id") {
  auto name = *parse_wal_name(segment_name(3, 77));
  auto c = check_segment(make_segment(3, 77, 7312345678901234567ull), name);
  CHECK(c.problem.empty());
  CHECK(c.system_id == 7312345678901234567ull);
  // A switched segment: zeroed pages after the last written one.
  CHECK(check_segment(make_segment(3, 77, 1, 100), name).problem.empty());
  // The first segment of a new timeline starts with the old timeline's pages.
  CHECK(check_segment(make_segment(2, 77, 1), name).problem.empty());
}

TEST_CASE("a damaged segment is refused, naming what is wrong and where") {
  auto name = *parse_wal_name(segment_name(1, 5));
  std::string good = make_segment(1, 5, 42);
  std::string truncated = good.substr(0, good.size() - 8192);
  CHECK_THAT(check_segment(truncated, name).problem, Catch::Contains("truncated"));
  std::string magic = good;
  put<uint16_t>(magic, 40 * kWalPageSize, 0xBEEF);
  CHECK_THAT(check_segment(magic, name).problem, Catch::Contains("damaged page header at 0/5050000"));
  std::string moved = good;
  put<uint64_t>(moved, 3 * kWalPageSize + 8, 0);
  CHECK_THAT(check_segment(moved, name).problem, Catch::Contains("says it is at 0/0"));
  // Another position's segment under this name.
  CHECK_THAT(check_segment(make_segment(1, 6, 42), name).problem, Catch::Contains("another position"));
  // A page of a newer timeline than the name's.
  CHECK_THAT(check_segment(make_segment(2, 5, 42), name).problem, Catch::Contains("newer than its name's"));
  // Written pages after zeroed ones: a hole.
  std::string hole = make_segment(1, 5, 42, 50);
  put<uint16_t>(hole, 60 * kWalPageSize, kWalPageMagic);
  CHECK_THAT(check_segment(hole, name).problem, Catch::Contains("after zeroed pages"));
  std::string first_zero = good;
  std::memset(first_zero.data(), 0, kWalPageSize);
  CHECK_THAT(check_segment(first_zero, name).problem, Catch::Contains("does not start with a PostgreSQL 15 WAL page"));
}

TEST_CASE("timeline history files") {
  auto h = parse_history("1\t0/3000060\tno recovery target specified\n\n2\t1/A0\tbefore 2026-11-27\n");
  REQUIRE(h.size() == 2);
  CHECK(h[0].timeline == 1);
  CHECK(h[0].switch_lsn == 0x3000060);
  CHECK(h[1].switch_lsn == 0x1000000A0ull);
  CHECK_THROWS_WITH(parse_history("x\ty\n"), Catch::Contains("line 1"));
  // What the line holds is never quoted back: the file may be one its pusher cannot read.
  CHECK_THROWS_WITH(parse_history("1\tsecret-word\tr\n"), Catch::Contains("has no LSN") && !Catch::Contains("secret-word"));
}

TEST_CASE("recovery targets: times with a zone, LSNs, transaction ids") {
  v1::RecoveryTarget t;
  plan::ParsedTarget p;
  t.set_kind(v1::RecoveryTarget::KIND_TIME);
  t.set_value("2026-11-27T10:00:00.25+01:00");
  REQUIRE(plan::parse_recovery_target(t, &p).empty());
  CHECK(plan::format_time_us(p.time_us) == "2026-11-27 09:00:00.250000+00");
  t.set_value("2026-11-27 10:00:00Z");
  REQUIRE(plan::parse_recovery_target(t, &p).empty());
  CHECK(plan::format_time_us(p.time_us) == "2026-11-27 10:00:00.000000+00");
  for (const char* bad : {"2026-11-27T10:00:00", "2026-02-31T10:00:00Z", "yesterday", "2026-11-27T25:00:00Z", ""})
    CHECK_THAT(plan::parse_recovery_target(
                   [&] {
                     v1::RecoveryTarget x;
                     x.set_kind(v1::RecoveryTarget::KIND_TIME);
                     x.set_value(bad);
                     return x;
                   }(),
                   nullptr),
               Catch::Contains("RFC 3339"));
  t.set_kind(v1::RecoveryTarget::KIND_LSN);
  t.set_value("16/B374D848");
  REQUIRE(plan::parse_recovery_target(t, &p).empty());
  CHECK(p.lsn == 0x16B374D848ull);
  CHECK(plan::format_lsn(p.lsn) == "16/B374D848");
  t.set_value("16-B374D848");
  CHECK_THAT(plan::parse_recovery_target(t, nullptr), Catch::Contains("16/B374D848"));
  t.set_kind(v1::RecoveryTarget::KIND_XID);
  t.set_value("12345");
  REQUIRE(plan::parse_recovery_target(t, &p).empty());
  CHECK(p.xid == 12345);
  t.set_value("1");
  CHECK_THAT(plan::parse_recovery_target(t, nullptr), Catch::Contains("not a normal transaction id"));
  t.set_value("12a");
  CHECK_THAT(plan::parse_recovery_target(t, nullptr), Catch::Contains("not a transaction id"));
  v1::RecoveryTarget latest;
  latest.set_kind(v1::RecoveryTarget::KIND_LATEST);
  latest.set_exclusive(true);
  CHECK_THAT(plan::parse_recovery_target(latest, nullptr), Catch::Contains("exclusive"));
  CHECK(plan::replays_to_target("postgresql"));
  CHECK_FALSE(plan::replays_to_target("etcd"));
}

namespace {

Settings parse_pg(const std::string& text) {
  toml::table t = toml::parse(text);
  TableReader r(t, "agent.toml", "[[component]] 'pg'");
  auto s = postgresql::parse_settings(r, "pg");
  r.finish();
  return s;
}

std::string pg_refusal(const std::string& text) {
  try {
    parse_pg(text);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "accepted";
}

}  // namespace

TEST_CASE("postgresql settings: defaults, and bad values refused naming the key") {
  auto s = parse_pg("data_dir = \"/var/lib/postgresql/15/main/\"\n");
  CHECK(s.data_dir == "/var/lib/postgresql/15/main");
  CHECK(s.conn.host == "/var/run/postgresql");
  CHECK(s.conn.port == 5432);
  CHECK(s.archive_socket == "/run/cairn-agent/postgresql-pg.sock");
  CHECK_THAT(pg_refusal(""), Catch::Contains("data_dir"));
  CHECK_THAT(pg_refusal("data_dir = \"relative\"\n"), Catch::Contains("absolute"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nsslmode = \"sometimes\"\n"), Catch::Contains("sslmode"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nport = 0\n"), Catch::Contains("port"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\npassword = \"x\"\n"), Catch::Contains("password"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\narchive_socket = \"/" + std::string(120, 'a') + "\"\n"), Catch::Contains("100 bytes"));
}

TEST_CASE("the archive socket takes only WAL files from the server's own pg_wal") {
  namespace fs = std::filesystem;
  fs::path base = fs::temp_directory_path() / ("cairn-pg-unit-" + std::to_string(::getpid()));
  fs::remove_all(base);
  fs::create_directories(base / "data/pg_wal");
  fs::create_directories(base / "data/global");
  uint64_t sysid = 99;
  std::ofstream(base / "data/global/pg_control", std::ios::binary).write(reinterpret_cast<char*>(&sysid), 8);
  std::string seg = make_segment(1, 3, 99);
  std::ofstream(base / "data/pg_wal" / segment_name(1, 3), std::ios::binary).write(seg.data(), seg.size());
  std::string other = make_segment(1, 4, 12345);  // another cluster's
  std::ofstream(base / "data/pg_wal" / segment_name(1, 4), std::ios::binary).write(other.data(), other.size());
  std::ofstream(base / "secret") << "not WAL";
  std::vector<std::string> stored;
  WalArchive a("pg", (base / "s.sock").string(), (base / "data").string());
  BackgroundContext ctx;
  ctx.store_file = [&](const std::string& p, const std::string& read_from, const std::vector<std::string>& tags) {
    stored.push_back(p);
    // What is stored is the checked copy: the pushed file's bytes.
    CHECK(read_file(read_from, kWalSegmentSize + 1).size() == fs::file_size(p));
    CHECK(std::find(tags.begin(), tags.end(), "pg-system:99") != tags.end());
    return std::string("snap-") + std::to_string(stored.size());
  };
  a.start(ctx);
  auto ask = [&](const std::string& path) {
    return nlohmann::json::parse(a.handle(nlohmann::json{{"op", "push"}, {"path", path}}.dump()));
  };
  auto r = ask((base / "data/pg_wal" / segment_name(1, 3)).string());
  CHECK(r["ok"] == true);
  CHECK(stored.size() == 1);
  // Pushed again (an answer lost): the same bytes are not stored twice.
  CHECK(ask((base / "data/pg_wal" / segment_name(1, 3)).string())["ok"] == true);
  CHECK(stored.size() == 1);
  CHECK_THAT(ask((base / "secret").string())["error"].get<std::string>(), Catch::Contains("not the name of a WAL file"));
  // A link in pg_wal to a file elsewhere is refused, never followed.
  fs::create_symlink(base / "secret", base / "data/pg_wal/000000010000000000000009");
  CHECK_THAT(ask((base / "data/pg_wal/000000010000000000000009").string())["error"].get<std::string>(),
             Catch::Contains("is a symbolic link"));
  // A WAL name in another directory is refused.
  std::ofstream(base / segment_name(1, 3)) << "x";
  CHECK_THAT(ask((base / segment_name(1, 3)).string())["error"].get<std::string>(), Catch::Contains("is not a file in"));
  CHECK_THAT(ask((base / "data/pg_wal" / segment_name(1, 4)).string())["error"].get<std::string>(),
             Catch::Contains("belongs to database system 12345"));
  CHECK_THAT(a.handle("junk"), Catch::Contains("malformed"));
  CHECK(stored.size() == 1);
  // The client against the running socket: refused files exit 1.
  CHECK(wal_push_main((base / "s.sock").string(), (base / "secret").string(), std::chrono::seconds(5)) == 1);
  CHECK(wal_push_main((base / "s.sock").string(), (base / "data/pg_wal" / segment_name(1, 3)).string(), std::chrono::seconds(5)) == 0);
  a.stop();
  // Nobody listening: refused at once.
  CHECK(wal_push_main((base / "s.sock").string(), (base / "data/pg_wal" / segment_name(1, 3)).string(), std::chrono::seconds(5)) == 1);
  fs::remove_all(base);
}

TEST_CASE("postgresql settings: logical mode's dump_dir and bin_dir") {
  auto s = parse_pg("data_dir = \"/var/lib/postgresql/15/main\"\n");
  CHECK(s.dump_dir == "/var/lib/postgresql/15/main.cairn-dump");
  CHECK(s.bin_dir == "/usr/lib/postgresql/15/bin");
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\ndump_dir = \"/d/dumps\"\n"), Catch::Contains("lies in data_dir"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\ndump_dir = \"dumps\"\n"), Catch::Contains("dump_dir"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nbin_dir = \"bin\"\n"), Catch::Contains("bin_dir"));
}

TEST_CASE("postgresql settings: logical_restore_as names new databases for one restore target") {
  auto none = parse_pg("data_dir = \"/d\"\n");
  CHECK(none.logical_restore_as.empty());
  auto s = parse_pg(
      "data_dir = \"/d\"\nlogical_restore_as = { shop = \"shop copy\", \"Odd Name\" = \"odd=copy\" }\n"
      "restore_to_name = \"copy\"\n");
  CHECK(s.logical_restore_as == std::map<std::string, std::string>{{"shop", "shop copy"}, {"Odd Name", "odd=copy"}});
  CHECK(s.restore_to_name == "copy");
  CHECK(parse_pg("data_dir = \"/d\"\nlogical_restore_as = { shop = \"s2\" }\n").restore_to_name == "alternate");
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { shop = \"shop\" }\n"), Catch::Contains("to itself"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { a = \"x\", b = \"x\" }\n"), Catch::Contains("two databases map to 'x'"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { a = \"\" }\n"), Catch::Contains("1-63 bytes"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { a = \"" + std::string(64, 'n') + "\" }\n"),
             Catch::Contains("1-63 bytes"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { a = 3 }\n"), Catch::Contains("must be a string"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = {}\n"), Catch::Contains("names no database"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nrestore_to_name = \"copy\"\n"), Catch::Contains("logical_restore_as"));
}

namespace {

// Lays WAL records out as PostgreSQL 15 writes them: a header on every page
// (a long one on a segment's first), 8-byte aligned records whose bytes run
// over page and segment boundaries (XLP_FIRST_IS_CONTRECORD on the page they
// continue on), each naming the one before it (xl_prev).
struct WalWriter {
  uint32_t tli = 1;
  uint64_t pos;
  uint64_t prev = 0;
  std::map<uint64_t, std::string> segs;
  explicit WalWriter(uint64_t start) : pos(start) { page_header(start - start % kWalPageSize, false, 0); }

  static uint32_t header_size(uint64_t lsn) { return lsn % kWalSegmentSize == 0 ? 40 : 24; }
  char* at(uint64_t lsn) {
    auto& s = segs[lsn / kWalSegmentSize];
    if (s.empty()) s.assign(kWalSegmentSize, '\0');
    return s.data() + lsn % kWalSegmentSize;
  }
  void page_header(uint64_t page, bool cont, uint32_t rem) {
    char* h = at(page);
    uint16_t info = uint16_t((page % kWalSegmentSize == 0 ? 0x0002 : 0) | (cont ? 0x0001 : 0));
    std::memcpy(h, &kWalPageMagic, 2);
    std::memcpy(h + 2, &info, 2);
    std::memcpy(h + 4, &tli, 4);
    std::memcpy(h + 8, &page, 8);
    std::memcpy(h + 16, &rem, 4);
  }
  // Appends a record (its 24-byte header included; xl_prev is filled in);
  // returns where it starts.
  uint64_t append(std::string rec) {
    if (pos % kWalPageSize == 0) {
      page_header(pos, false, 0);
      pos += header_size(pos);
    }
    const uint64_t start = pos;
    std::memcpy(rec.data() + 8, &prev, 8);
    uint64_t p = pos;
    for (size_t i = 0; i < rec.size();) {
      if (p % kWalPageSize == 0) {
        page_header(p, i > 0, uint32_t(rec.size() - i));
        p += header_size(p);
      }
      size_t take = std::min<uint64_t>(rec.size() - i, kWalPageSize - p % kWalPageSize);
      std::memcpy(at(p), rec.data() + i, take);
      i += take;
      p += take;
    }
    prev = start;
    pos = (p + 7) & ~uint64_t(7);
    return start;
  }
  static std::string header(uint32_t tot_len, uint32_t xid, uint8_t info, uint8_t rmid) {
    std::string h(24, '\0');
    std::memcpy(h.data(), &tot_len, 4);
    std::memcpy(h.data() + 4, &xid, 4);
    h[16] = char(info);
    h[17] = char(rmid);
    return h;
  }
  uint64_t commit(uint32_t xid, int64_t unix_us, uint8_t op = 0x00, std::string extra = {}) {
    std::string main(8, '\0');
    int64_t pg = unix_us - kPgEpochUnixUs;
    std::memcpy(main.data(), &pg, 8);
    main += extra;
    std::string rec = header(uint32_t(24 + 2 + main.size()), xid, uint8_t(op | (extra.empty() ? 0 : 0x80)), 1);
    rec += char(0xFF);
    rec += char(main.size());
    return append(rec + main);
  }
  // A heap record with one block reference carrying `data` bytes, and a long main data.
  uint64_t filler(uint32_t xid, uint16_t data, uint32_t main) {
    std::string body;
    body += char(0);     // block id 0
    body += char(0x20);  // BKPBLOCK_HAS_DATA
    body.append(reinterpret_cast<const char*>(&data), 2);
    body.append(12, '\1');  // the relation
    body.append(4, '\2');   // the block number
    body += char(0xFE);     // XLR_BLOCK_ID_DATA_LONG
    body.append(reinterpret_cast<const char*>(&main), 4);
    body.append(data, 'd');
    body.append(main, 'm');
    return append(header(uint32_t(24 + body.size()), xid, 0x00, 10) + body);
  }
  uint64_t switch_segment() {
    uint64_t at_ = append(header(24, 0, 0x40, 0));
    pos = (pos + kWalSegmentSize - 1) / kWalSegmentSize * kWalSegmentSize;
    return at_;
  }
  std::function<std::string_view(uint64_t)> reader(std::set<uint64_t> missing = {}) {
    return [this, missing](uint64_t segno) -> std::string_view {
      if (missing.count(segno) || !segs.count(segno)) return {};
      return segs[segno];
    };
  }
};

}  // namespace

TEST_CASE("the WAL scan reads every commit and abort across pages, segments and a switch") {
  const uint64_t start = 1 * kWalSegmentSize + 40;
  WalWriter w(start);
  std::mt19937 rng(7);
  struct Want {
    uint32_t xid;
    int64_t t;
    bool commit;
  };
  std::vector<Want> want;
  int64_t t = 1'700'000'000'000'000;
  uint32_t xid = 1000;
  uint64_t switched = 0;
  while (w.pos < 3 * kWalSegmentSize + kWalSegmentSize / 2) {
    w.filler(xid, uint16_t(rng() % 9000), uint32_t(rng() % 30000));
    t += 1000;
    if (rng() % 5 == 0) {
      w.commit(xid, t, 0x20);  // an abort
      want.push_back({xid, t, false});
    } else {
      w.commit(xid, t);
      want.push_back({xid, t, true});
    }
    ++xid;
    if (!switched && w.pos > 2 * kWalSegmentSize + kWalSegmentSize / 3) switched = w.switch_segment();
  }
  // A prepared transaction's commit names its own xid after the sub-records.
  std::string extra(4, '\0');
  uint32_t xinfo = (1u << 1) | (1u << 4);  // subxacts, twophase
  std::memcpy(extra.data(), &xinfo, 4);
  int32_t nsub = 2;
  extra.append(reinterpret_cast<const char*>(&nsub), 4);
  extra.append(8, '\7');
  uint32_t prepared = 777;
  extra.append(reinterpret_cast<const char*>(&prepared), 4);
  w.commit(99, t + 5, 0x30, extra);
  want.push_back({prepared, t + 5, true});
  const uint64_t last = w.prev;

  std::vector<XactEnd> got;
  auto r = scan_wal(start, w.reader(), [&](const XactEnd& x) {
    got.push_back(x);
    return true;
  });
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    CHECK(got[i].xid == want[i].xid);
    CHECK(got[i].time_us == want[i].t);
    CHECK(got[i].commit == want[i].commit);
  }
  CHECK(switched > 0);
  CHECK(r.last_record_lsn == last);
  CHECK(r.end == ScanEnd::end_of_wal);

  // A segment missing: the scan stops at it, every transaction before it read.
  std::vector<XactEnd> before;
  auto cut = scan_wal(start, w.reader({3}), [&](const XactEnd& x) {
    before.push_back(x);
    return true;
  });
  CHECK(cut.end == ScanEnd::missing_segment);
  CHECK(cut.missing_segno == 3);
  CHECK(cut.end_lsn <= 3 * kWalSegmentSize);
  CHECK(cut.end_lsn > 2 * kWalSegmentSize);
  CHECK(!before.empty());
  CHECK(before.size() < got.size());
  CHECK(before.back().end_lsn <= cut.end_lsn);

  // The callback stops it where the target is.
  auto stopped = scan_wal(start, w.reader(), [&](const XactEnd& x) { return x.xid != want[10].xid; });
  CHECK(stopped.end == ScanEnd::stopped);

  // A record that does not follow the one before it (damage) ends the WAL there.
  uint64_t victim = got[got.size() / 2].lsn;
  uint64_t bogus = 0x12345678;
  std::memcpy(w.at(victim) + 8, &bogus, 8);
  size_t n = 0;
  auto bad = scan_wal(start, w.reader(), [&](const XactEnd&) {
    ++n;
    return true;
  });
  CHECK(bad.end == ScanEnd::bad_record);
  CHECK_THAT(bad.problem, Catch::Contains(plan::format_lsn(victim)));
  CHECK(n == got.size() / 2);
}

namespace {

repo::Snapshot wal_snap(const std::string& name, int64_t t) {
  repo::Snapshot s;
  s.id = "snap-" + name;
  s.time_unix = t;
  s.paths = {"/pg/pg_wal/" + name};
  return s;
}

repo::Snapshot base_backup(uint32_t tli, uint64_t start, uint64_t stop, int64_t end_us) {
  repo::Snapshot b;
  b.id = "basebackup1234";
  b.component = {
      {"timeline", tli}, {"start_lsn", plan::format_lsn(start)}, {"stop_lsn", plan::format_lsn(stop)}, {"backup_end_time_us", end_us}};
  return b;
}

plan::ParsedTarget target_of(v1::RecoveryTarget::Kind kind, const std::string& timeline = {}) {
  v1::RecoveryTarget t;
  t.set_kind(kind);
  t.set_timeline(timeline);
  plan::ParsedTarget p;
  REQUIRE(plan::parse_recovery_target(t, &p).empty());
  return p;
}

}  // namespace

TEST_CASE("recovery follows the timelines: latest by default, current, or one named") {
  const uint64_t seg = kWalSegmentSize;
  WalCatalog cat;
  // Timeline 1: segments 2..9; timeline 2 branched at 0/6000100 (segments
  // 6..8); timeline 3 branched from 2 at 0/8000000 (segment 8..11);
  // timeline 4 branched from 1 before the base backup was consistent.
  for (uint64_t s = 2; s <= 9; ++s) cat.by_name[segment_name(1, s)] = wal_snap(segment_name(1, s), 100 + s);
  for (uint64_t s = 6; s <= 7; ++s) cat.by_name[segment_name(2, s)] = wal_snap(segment_name(2, s), 200 + s);
  for (uint64_t s = 8; s <= 11; ++s) cat.by_name[segment_name(3, s)] = wal_snap(segment_name(3, s), 300 + s);
  cat.histories[2] = {{1, 6 * seg + 0x100}};
  cat.histories[3] = {{1, 6 * seg + 0x100}, {2, 8 * seg}};
  cat.histories[4] = {{1, 2 * seg + 0x10}};
  for (uint32_t t : {2u, 3u, 4u}) cat.by_name[segment_name(t, 0).substr(0, 8) + ".history"] = wal_snap("h", 1);
  auto base = base_backup(1, 2 * seg + 0x28, 3 * seg + 0x100, 1'000'000);

  auto path = timeline_path(cat, 1, 3 * seg + 0x100, 3);
  REQUIRE(path.size() == 3);
  CHECK(path[1].timeline == 2);
  CHECK(path[1].begin == 6 * seg + 0x100);
  CHECK(path[2].begin == 8 * seg);
  CHECK(timeline_path(cat, 1, 3 * seg + 0x100, 4).empty());  // it left timeline 1 before the backup was consistent

  WalPlan p;
  auto latest = target_of(v1::RecoveryTarget::KIND_LATEST);
  REQUIRE(plan_wal(base, cat, latest, &p).first == v1::ERROR_CODE_OK);
  CHECK(p.timeline == 3);
  CHECK_THAT(p.timeline_said, Catch::Contains("the newest"));
  std::vector<std::string> segs(p.needed.begin(), p.needed.begin() + 10);
  CHECK(segs == std::vector<std::string>{segment_name(1, 2), segment_name(1, 3), segment_name(1, 4), segment_name(1, 5), segment_name(2, 6),
                                         segment_name(2, 7), segment_name(3, 8), segment_name(3, 9), segment_name(3, 10),
                                         segment_name(3, 11)});
  CHECK(p.covered_lsn == 12 * seg);
  CHECK(p.gap.empty());

  REQUIRE(plan_wal(base, cat, target_of(v1::RecoveryTarget::KIND_LATEST, "current"), &p).first == v1::ERROR_CODE_OK);
  CHECK(p.timeline == 1);
  CHECK(p.covered_lsn == 10 * seg);
  REQUIRE(plan_wal(base, cat, target_of(v1::RecoveryTarget::KIND_LATEST, "2"), &p).first == v1::ERROR_CODE_OK);
  CHECK(p.timeline == 2);
  CHECK(p.covered_lsn == 8 * seg);
  auto four = plan_wal(base, cat, target_of(v1::RecoveryTarget::KIND_LATEST, "4"), &p);
  CHECK(four.first == v1::ERROR_CODE_PREFLIGHT_FAILED);
  CHECK_THAT(four.second, Catch::Contains("timeline 4 does not follow") && Catch::Contains("nothing was changed"));
  auto five = plan_wal(base, cat, target_of(v1::RecoveryTarget::KIND_LATEST, "5"), &p);
  CHECK_THAT(five.second, Catch::Contains("no history file of timeline 5"));
  // The end of the base backup stays on its own timeline.
  REQUIRE(plan_wal(base, cat, target_of(v1::RecoveryTarget::KIND_IMMEDIATE), &p).first == v1::ERROR_CODE_OK);
  CHECK(p.timeline == 1);
}

TEST_CASE("a gap in the archive is never the latest WAL, and is named with how far recovery reaches") {
  const uint64_t seg = kWalSegmentSize;
  WalCatalog cat;
  for (uint64_t s = 2; s <= 12; ++s)
    if (s != 7) cat.by_name[segment_name(1, s)] = wal_snap(segment_name(1, s), 100 + int64_t(s));
  auto base = base_backup(1, 2 * seg + 0x28, 3 * seg + 0x100, 50'000'000);
  WalPlan p;
  auto latest = plan_wal(base, cat, target_of(v1::RecoveryTarget::KIND_LATEST), &p);
  CHECK(latest.first == v1::ERROR_CODE_SNAPSHOT_NOT_FOUND);
  CHECK_THAT(latest.second, Catch::Contains("'" + segment_name(1, 7) + "' is not in the repository") &&
                                Catch::Contains("up to '" + segment_name(1, 12) + "'") && Catch::Contains("can reach LSN 0/7000000") &&
                                Catch::Contains("nothing was changed"));
  v1::RecoveryTarget lsn;
  lsn.set_kind(v1::RecoveryTarget::KIND_LSN);
  lsn.set_value("0/9000000");
  plan::ParsedTarget past;
  REQUIRE(plan::parse_recovery_target(lsn, &past).empty());
  CHECK_THAT(plan_wal(base, cat, past, &p).second, Catch::Contains("past a gap"));
  // Before the gap: planned, up to the segment after the target's.
  lsn.set_value("0/5000100");
  plan::ParsedTarget before;
  REQUIRE(plan::parse_recovery_target(lsn, &before).empty());
  REQUIRE(plan_wal(base, cat, before, &p).first == v1::ERROR_CODE_OK);
  CHECK(p.needed.back() == segment_name(1, 6));
  // A time target is planned up to the gap, to be proven from the commit records read.
  v1::RecoveryTarget tt;
  tt.set_kind(v1::RecoveryTarget::KIND_TIME);
  tt.set_value("1970-01-01T00:01:44Z");  // 104 s: archived before the gap
  plan::ParsedTarget time;
  REQUIRE(plan::parse_recovery_target(tt, &time).empty());
  REQUIRE(plan_wal(base, cat, time, &p).first == v1::ERROR_CODE_OK);
  CHECK(p.gap == segment_name(1, 7));
  CHECK(p.needed.back() == segment_name(1, 6));
  // One archived after the newest segment before the gap cannot be reached.
  tt.set_value("1970-01-01T00:01:50Z");
  REQUIRE(plan::parse_recovery_target(tt, &time).empty());
  CHECK_THAT(plan_wal(base, cat, time, &p).second, Catch::Contains("past a gap") && Catch::Contains(segment_name(1, 7)));
}

TEST_CASE("the archive socket never reads through a link swapped in while it checks the file") {
  namespace fs = std::filesystem;
  fs::path base = fs::temp_directory_path() / ("cairn-pg-race-" + std::to_string(::getpid()));
  fs::remove_all(base);
  fs::create_directories(base / "data/pg_wal");
  fs::create_directories(base / "data/global");
  uint64_t sysid = 99;
  std::ofstream(base / "data/global/pg_control", std::ios::binary).write(reinterpret_cast<char*>(&sysid), 8);
  const std::string history = "1\t0/3000000\tno recovery target specified\n";
  std::ofstream(base / "data/pg_wal/00000002.history") << history;
  std::ofstream(base / "secret") << "TOPSECRET\t0/1\tx\n";  // a file the pusher may not read
  fs::create_symlink(base / "secret", base / "data/pg_wal/swap");
  WalArchive a("pg", (base / "s.sock").string(), (base / "data").string());
  BackgroundContext ctx;
  int stores = 0;
  ctx.store_file = [&](const std::string&, const std::string& read_from, const std::vector<std::string>&) {
    Bytes b = read_file(read_from, 1 << 20);
    CHECK(std::string(b.begin(), b.end()) == history);
    return "snap-" + std::to_string(++stores);
  };
  a.start(ctx);
  // The server's user exchanges the history file and a link to the secret,
  // as fast as it can, while the file is pushed again and again.
  std::atomic<bool> done{false};
  std::thread swapper([&] {
    const std::string h = (base / "data/pg_wal/00000002.history").string(), l = (base / "data/pg_wal/swap").string();
    while (!done) ::renameat2(AT_FDCWD, h.c_str(), AT_FDCWD, l.c_str(), RENAME_EXCHANGE);
  });
  int refused = 0;
  for (int i = 0; i < 4000; ++i) {
    auto r =
        nlohmann::json::parse(a.handle(nlohmann::json{{"op", "push"}, {"path", (base / "data/pg_wal/00000002.history").string()}}.dump()));
    if (r["ok"] == true) continue;
    ++refused;
    CHECK_THAT(r["error"].get<std::string>(), !Catch::Contains("TOPSECRET"));
  }
  done = true;
  swapper.join();
  a.stop();
  CHECK(refused > 0);  // the link was there for some pushes: refused, never read
  CHECK(stores >= 1);
  fs::remove_all(base);
}

TEST_CASE("the agent's archive check finds each timeline's gaps from the oldest base backup or the branch point") {
  const uint64_t seg = kWalSegmentSize;
  WalCatalog cat;
  // Timeline 1: 2..9 without 4 and 6..7; timeline 2 branched at segment 6
  // (its 6 missing, 7..8 there); timeline 3 without a history: from its first.
  for (uint64_t s : {2, 3, 5, 8, 9}) cat.by_name[segment_name(1, s)] = wal_snap(segment_name(1, s), 100 + s);
  for (uint64_t s : {7, 8}) cat.by_name[segment_name(2, s)] = wal_snap(segment_name(2, s), 200 + s);
  for (uint64_t s : {12, 14}) cat.by_name[segment_name(3, s)] = wal_snap(segment_name(3, s), 300 + s);
  cat.histories[2] = {{1, 6 * seg + 0x100}};
  auto gaps = find_gaps(cat, 2);
  REQUIRE(gaps.size() == 4);
  CHECK((gaps[0].timeline == 1 && gaps[0].first == 4 && gaps[0].count == 1 && gaps[0].next == 5));
  CHECK((gaps[1].timeline == 1 && gaps[1].first == 6 && gaps[1].count == 2 && gaps[1].next == 8));
  CHECK((gaps[2].timeline == 2 && gaps[2].first == 6 && gaps[2].count == 1 && gaps[2].next == 7));
  CHECK((gaps[3].timeline == 3 && gaps[3].first == 13 && gaps[3].count == 1 && gaps[3].next == 14));
  // WAL before the oldest base backup restores nothing: no gap there.
  gaps = find_gaps(cat, 5);
  REQUIRE(gaps.size() == 3);
  CHECK((gaps[0].timeline == 1 && gaps[0].first == 6));
  // A missing first segment of the oldest base backup is a gap too.
  gaps = find_gaps(cat, 1);
  REQUIRE(!gaps.empty());
  CHECK((gaps[0].timeline == 1 && gaps[0].first == 1 && gaps[0].next == 2));
  // An unbroken archive has none.
  WalCatalog whole;
  for (uint64_t s = 2; s <= 9; ++s) whole.by_name[segment_name(1, s)] = wal_snap(segment_name(1, s), 100 + s);
  whole.by_name[segment_name(1, 5) + ".00000028.backup"] = wal_snap("b", 1);
  CHECK(find_gaps(whole, 2).empty());
}
