// The postgresql driver's pieces that need no server: WAL file names, the
// page checks a segment passes before it is reported stored (a whole segment,
// a truncated one, a damaged header, one of another position or timeline),
// timeline history files, recovery targets as cairnctl, the controller and
// the agent read them, the settings, and the archive socket's refusals of
// what is not a WAL file in the server's own pg_wal.
#include <catch2/catch.hpp>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "agent/config.h"
#include "agent/drivers/postgresql/config.h"
#include "agent/drivers/postgresql/wal.h"
#include "agent/drivers/postgresql/wal_archive.h"
#include "common/plan/recovery_target.h"

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
  for (const char* bad : {"", "00000001000000020000003f", "000000010000000200000100", "00000000000000020000003F",
                          "../00000001000000020000003F", "0000000100000002000000", "pg_control",
                          "00000001000000020000003F.tmp", "0000000A.history.x", "shadow"})
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
  CHECK_THROWS_WITH(parse_history("1\tnot-an-lsn\tr\n"), Catch::Contains("not an LSN"));
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
    CHECK_THAT(plan::parse_recovery_target([&] {
                 v1::RecoveryTarget x;
                 x.set_kind(v1::RecoveryTarget::KIND_TIME);
                 x.set_value(bad);
                 return x;
               }(), nullptr),
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
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\narchive_socket = \"/" + std::string(120, 'a') + "\"\n"),
             Catch::Contains("100 bytes"));
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
  ctx.store_file = [&](const std::string& p, const std::vector<std::string>& tags) {
    stored.push_back(p);
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
  // A WAL name outside pg_wal (a link to it from elsewhere) is refused.
  fs::create_symlink(base / "secret", base / "data/pg_wal/000000010000000000000009");
  CHECK_THAT(ask((base / "data/pg_wal/000000010000000000000009").string())["error"].get<std::string>(),
             Catch::Contains("is not a file in"));
  CHECK_THAT(ask((base / "data/pg_wal" / segment_name(1, 4)).string())["error"].get<std::string>(),
             Catch::Contains("belongs to database system 12345"));
  CHECK_THAT(a.handle("junk"), Catch::Contains("malformed"));
  CHECK(stored.size() == 1);
  // The client against the running socket: refused files exit 1.
  CHECK(wal_push_main((base / "s.sock").string(), (base / "secret").string(), std::chrono::seconds(5)) == 1);
  CHECK(wal_push_main((base / "s.sock").string(), (base / "data/pg_wal" / segment_name(1, 3)).string(),
                      std::chrono::seconds(5)) == 0);
  a.stop();
  // Nobody listening: refused at once.
  CHECK(wal_push_main((base / "s.sock").string(), (base / "data/pg_wal" / segment_name(1, 3)).string(),
                      std::chrono::seconds(5)) == 1);
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
  auto s = parse_pg("data_dir = \"/d\"\nlogical_restore_as = { shop = \"shop copy\", \"Odd Name\" = \"odd=copy\" }\n"
                    "restore_to_name = \"copy\"\n");
  CHECK(s.logical_restore_as == std::map<std::string, std::string>{{"shop", "shop copy"}, {"Odd Name", "odd=copy"}});
  CHECK(s.restore_to_name == "copy");
  CHECK(parse_pg("data_dir = \"/d\"\nlogical_restore_as = { shop = \"s2\" }\n").restore_to_name == "alternate");
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { shop = \"shop\" }\n"), Catch::Contains("to itself"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { a = \"x\", b = \"x\" }\n"),
             Catch::Contains("two databases map to 'x'"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { a = \"\" }\n"), Catch::Contains("1-63 bytes"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { a = \"" + std::string(64, 'n') + "\" }\n"),
             Catch::Contains("1-63 bytes"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = { a = 3 }\n"), Catch::Contains("must be a string"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nlogical_restore_as = {}\n"), Catch::Contains("names no database"));
  CHECK_THAT(pg_refusal("data_dir = \"/d\"\nrestore_to_name = \"copy\"\n"), Catch::Contains("logical_restore_as"));
}
