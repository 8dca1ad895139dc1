// The etcd client against a real etcd: the snapshot stream arrives whole and
// checked (etcdctl reads the file it makes), a stream that ends early or
// carries a wrong hash is refused, TLS with client certificates and auth.
#include "agent/drivers/etcd/client.h"

#include <openssl/sha.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent/drivers/etcd/snapshot_stream.h"
#include "common/util/error.h"
#include "tests/unit/agent/etcd/etcd_server.h"

using namespace cairn::agent::etcd;
using cairn::agent::etcd::test::EtcdServer;
using cairn::agent::etcd::test::run;
using cairn::agent::etcd::test::TempDir;

namespace {

ClientOptions options_for(const std::string& endpoint) {
  ClientOptions o;
  o.endpoint = endpoint;
  return o;
}

void put_keys(const EtcdServer& s, int n, const std::string& prefix = "k") {
  // One transaction per 100 keys (etcd's default --max-txn-ops is 128).
  for (int i = 0; i < n; i += 100) {
    std::string txn = "\n";
    for (int j = i; j < std::min(n, i + 100); ++j) txn += "put " + prefix + std::to_string(j) + " v" + std::to_string(j) + "\n";
    txn += "\n\n";
    auto r = s.ctl({"txn"}, txn);
    REQUIRE(r.status == 0);
  }
}

std::string sha256_of(std::string_view data) {
  unsigned char d[32];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), d);
  return std::string(reinterpret_cast<char*>(d), 32);
}

// The pieces of one real snapshot, in order.
std::vector<std::string> snapshot_pieces(Client& c) {
  std::vector<std::string> pieces;
  c.snapshot([&](std::string_view p) { pieces.emplace_back(p); });
  return pieces;
}

// Replays pieces into a check as the server sent them: remaining_bytes counts
// the database bytes still to come (the hash piece says 0).
void replay(SnapshotStreamCheck& chk, const std::vector<std::string>& pieces, uint64_t db) {
  uint64_t sent = 0;
  for (const auto& p : pieces) {
    uint64_t data = std::min<uint64_t>(p.size(), db > sent ? db - sent : 0);
    sent += data;
    chk.feed(p, db - sent);
  }
}

}  // namespace

TEST_CASE("etcd client: status, members, key count and a snapshot etcdctl accepts") {
  TempDir dir;
  EtcdServer etcd(dir.path());
  put_keys(etcd, 250);
  Client c(options_for(etcd.endpoint()));
  auto st = c.status();
  CHECK(st.version == "3.4.23");
  CHECK(st.member_id != 0);
  CHECK(st.cluster_id != 0);
  CHECK(st.leader == st.member_id);
  auto ms = c.members();
  REQUIRE(ms.size() == 1);
  CHECK(ms[0].name == "test");
  CHECK(ms[0].id == st.member_id);
  REQUIRE(ms[0].peer_urls.size() == 1);
  CHECK(c.count_keys() == 250);
  CHECK(c.count_keys(st.revision) == 250);

  std::string file = dir.file("snap.db");
  std::ofstream out(file, std::ios::binary);
  auto r = c.snapshot([&](std::string_view p) { out.write(p.data(), std::streamsize(p.size())); });
  out.close();
  std::string all;
  {
    std::ifstream in(file, std::ios::binary);
    all.assign(std::istreambuf_iterator<char>(in), {});
  }
  REQUIRE(all.size() == r.bytes);
  CHECK(r.bytes == r.db_size + 32);
  CHECK(sha256_of(std::string_view(all).substr(0, r.db_size)) == all.substr(r.db_size));
  CHECK(r.sha256.size() == 64);
  // etcdctl reads the file as a snapshot: its revision is the server's.
  auto status = run({"etcdctl", "snapshot", "status", file, "-w", "json"}, {}, {"ETCDCTL_API=3"});
  REQUIRE(status.status == 0);
  auto j = nlohmann::json::parse(status.out);
  CHECK(j["revision"].get<int64_t>() == st.revision);

  // HashKV at the same revision twice: equal.
  CHECK(c.hash_kv(st.revision).hash == c.hash_kv(st.revision).hash);
}

// Found by the driver benchmark: after `etcdctl compact <current revision>` a
// quiet etcd refused HashKV at its own revision, and every backup failed until
// the next write.
TEST_CASE("etcd client: HashKV at the current revision of a member compacted there") {
  TempDir dir;
  EtcdServer etcd(dir.path());
  put_keys(etcd, 50);
  Client c(options_for(etcd.endpoint()));
  auto before = c.status();
  uint32_t hash = c.hash_kv(before.revision).hash;
  auto compact = run({"etcdctl", "--endpoints", etcd.endpoint(), "compact", std::to_string(before.revision)}, {}, {"ETCDCTL_API=3"});
  REQUIRE(compact.status == 0);
  KvHash h = c.hash_kv(before.revision);
  CHECK(h.hash == hash);
  CHECK(h.revision == before.revision);
  CHECK(h.compact_revision == before.revision);
  // A revision below the compacted one is still refused, naming the call.
  if (before.revision > 2) CHECK_THROWS_WITH(c.hash_kv(before.revision - 1), Catch::Contains("HashKV failed"));
}

TEST_CASE("etcd snapshot stream: early end, missing hash, wrong hash and extra bytes are refused") {
  TempDir dir;
  EtcdServer etcd(dir.path());
  put_keys(etcd, 100);
  Client c(options_for(etcd.endpoint()));
  auto pieces = snapshot_pieces(c);
  REQUIRE(pieces.size() >= 2);
  REQUIRE(pieces.back().size() == 32);
  uint64_t db = 0;
  for (size_t i = 0; i + 1 < pieces.size(); ++i) db += pieces[i].size();

  {
    SnapshotStreamCheck ok;
    replay(ok, pieces, db);
    REQUIRE_NOTHROW(ok.finish());
    CHECK(ok.db_size() == db);
  }
  {
    // The hash never came.
    auto cut = pieces;
    cut.pop_back();
    SnapshotStreamCheck chk;
    replay(chk, cut, db);
    REQUIRE_THROWS_WITH(chk.finish(), Catch::Contains("without its SHA-256"));
  }
  {
    // The stream stops halfway through the database.
    std::string half = pieces.front().substr(0, pieces.front().size() / 2);
    SnapshotStreamCheck chk;
    chk.feed(half, db - half.size());
    REQUIRE_THROWS_WITH(chk.finish(), Catch::Contains("ended early"));
  }
  {
    // One byte of the database changed on the way.
    auto bad = pieces;
    bad[0][bad[0].size() / 2] ^= 1;
    SnapshotStreamCheck chk;
    replay(chk, bad, db);
    REQUIRE_THROWS_WITH(chk.finish(), Catch::Contains("hash mismatch"));
  }
  {
    // Bytes beyond the database and its hash.
    auto extra = pieces;
    extra.push_back("x");
    SnapshotStreamCheck chk;
    REQUIRE_THROWS_WITH(replay(chk, extra, db), Catch::Contains("more bytes than"));
  }
}

TEST_CASE("etcd client: a member killed mid-snapshot fails the call") {
  TempDir dir;
  EtcdServer etcd(dir.path());
  // About 24 MB of values: many pieces, so the kill lands mid-stream.
  std::string big(1 << 20, 'x');
  for (int i = 0; i < 24; ++i) REQUIRE(etcd.ctl({"put", "big" + std::to_string(i)}, big).status == 0);
  Client c(options_for(etcd.endpoint()));
  uint64_t got = 0;
  bool killed = false;
  REQUIRE_THROWS_AS(c.snapshot([&](std::string_view p) {
    got += p.size();
    if (!killed) {
      etcd.kill();
      killed = true;
    }
  }),
                    cairn::Error);
  CHECK(killed);
  CHECK(got < 24u << 20);
  // Nothing answers there any more.
  ClientOptions quick = options_for(etcd.endpoint());
  quick.timeout = std::chrono::milliseconds(1000);
  CHECK_FALSE(Client(quick).answers());
}

TEST_CASE("etcd client: TLS with a client certificate, and authentication") {
  TempDir dir;
  auto ssl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), "openssl");
    auto r = run(args);
    INFO(r.out);
    REQUIRE(r.status == 0);
  };
  std::string d = dir.path() + "/";
  ssl({"req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
       "-keyout", d + "ca.key", "-out", d + "ca.crt"});
  for (std::string n : {"server", "client"}) {
    ssl({"req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=" + n, "-keyout", d + n + ".key",
         "-out", d + n + ".csr"});
    std::ofstream(d + n + ".ext") << "subjectAltName=IP:127.0.0.1,DNS:localhost\n";
    ssl({"x509", "-req", "-in", d + n + ".csr", "-CA", d + "ca.crt", "-CAkey", d + "ca.key", "-CAcreateserial", "-days", "2", "-extfile",
         d + n + ".ext", "-out", d + n + ".crt"});
    ::chmod((d + n + ".key").c_str(), 0600);
  }
  EtcdServer::Options o;
  o.scheme = "https";
  o.extra_args = {"--cert-file=" + d + "server.crt", "--key-file=" + d + "server.key", "--trusted-ca-file=" + d + "ca.crt",
                  "--client-cert-auth"};
  o.ctl_flags = {"--cacert=" + d + "ca.crt", "--cert=" + d + "client.crt", "--key=" + d + "client.key"};
  EtcdServer etcd(dir.path(), o);
  put_keys(etcd, 10);

  ClientOptions co = options_for(etcd.endpoint());
  co.ca_file = d + "ca.crt";
  co.cert_file = d + "client.crt";
  co.key_file = d + "client.key";
  {
    Client c(co);
    CHECK(c.count_keys() == 10);
  }
  {
    // Without the client certificate the server refuses the handshake.
    ClientOptions no_cert = co;
    no_cert.cert_file.clear();
    no_cert.key_file.clear();
    no_cert.timeout = std::chrono::milliseconds(3000);
    Client c(no_cert);
    REQUIRE_THROWS_AS(c.status(), cairn::Error);
  }

  REQUIRE(etcd.ctl({"user", "add", "root:s3cret pass", "--interactive=false"}).status == 0);
  REQUIRE(etcd.ctl({"auth", "enable"}).status == 0);
  {
    // With auth on and no user, reading keys is refused and the message says what to set.
    Client c(co);
    REQUIRE_THROWS_WITH(c.count_keys(), Catch::Contains("auth_file"));
    CHECK(c.answers());  // running, whatever it thinks of the credentials
  }
  {
    ClientOptions bad = co;
    bad.user = "root";
    bad.password = "wrong";
    REQUIRE_THROWS_WITH(Client(bad), Catch::Contains("authentication as 'root' failed"));
  }
  ClientOptions authed = co;
  authed.user = "root";
  authed.password = "s3cret pass";
  Client c(authed);
  CHECK(c.count_keys() == 10);
  uint64_t n = 0;
  auto r = c.snapshot([&](std::string_view p) { n += p.size(); });
  CHECK(n == r.bytes);
  CHECK(r.db_size > 0);
}
