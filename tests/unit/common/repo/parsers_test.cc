// Everything read from a repository is untrusted: each parser must turn any
// malformed input into Error(Errc::corrupt / unsupported), never a crash or a
// half-filled result.
#include <catch2/catch.hpp>
#include <filesystem>
#include <random>
#include <set>

#include "common/repo/index.h"
#include "common/repo/keys.h"
#include "common/repo/pack.h"
#include "common/repo/repository.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::repo;
using nlohmann::json;

namespace {

const std::string kId(64, 'a');

json valid_tree() {
  return json::parse(R"({"nodes":[
    {"name":"a","type":"dir","mode":493,"uid":0,"gid":0,"mtime":1,"subtree":")" +
                     kId + R"("},
    {"name":"b","type":"file","mode":420,"uid":0,"gid":0,"mtime":1,"size":10,"content":[")" +
                     kId + R"("],"extents":[[0,5]]},
    {"name":"c","type":"symlink","mode":511,"uid":0,"gid":0,"mtime":1,"target":"b"}]})");
}

Errc code_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return Errc::ok;
}

// One to four random byte edits (overwrite, delete a run, insert) of a valid text.
std::string damaged(std::string s, std::mt19937& rng) {
  for (int k = 0, edits = 1 + int(rng() % 4); k < edits; ++k) {
    size_t pos = rng() % s.size();
    switch (rng() % 3) {
      case 0:
        s[pos] = char(rng());
        break;
      case 1:
        s.erase(pos, 1 + rng() % 8);
        break;
      default:
        s.insert(pos, 1, char(rng()));
        break;
    }
    if (s.empty()) s.push_back('x');
  }
  return s;
}

// A tree's text handed out a few bytes at a time, as a decompressing source does.
struct Pieces : TreeTextSource {
  std::string text;
  size_t at = 0, step;
  Pieces(std::string t, size_t s) : text(std::move(t)), step(s) {}
  bool more(Bytes& out) override {
    if (at == text.size()) return false;
    size_t n = std::min(step, text.size() - at);
    out.insert(out.end(), text.begin() + ptrdiff_t(at), text.begin() + ptrdiff_t(at + n));
    at += n;
    return true;
  }
};

Tree read_pieces(const std::string& text, size_t step) {
  TreeReader r(std::make_unique<Pieces>(text, step));
  Tree t;
  Node n;
  while (r.next(n)) t.nodes.push_back(std::move(n));
  return t;
}

}  // namespace

TEST_CASE("tree decoding accepts a valid tree and round-trips it") {
  Tree t = decode_tree(valid_tree());
  REQUIRE(t.nodes.size() == 3);
  REQUIRE(t.nodes[1].sparse);
  Tree again = decode_tree(encode_tree(t));
  REQUIRE(encode_tree(again) == encode_tree(t));
}

TEST_CASE("a tree taken by value is parsed where it lies and freed before its nodes are built; damage is refused alike") {
  std::string text = valid_tree().dump();
  Tree want = decode_tree_bytes(as_bytes(text));
  for (size_t spare : {size_t(0), kTreeParsePadding}) {
    INFO("spare capacity " << spare);
    Bytes b(text.begin(), text.end());
    b.reserve(b.size() + spare);  // spare 0: copied into a padded buffer first
    Tree got = decode_tree_bytes(std::move(b));
    CHECK(encode_tree(got) == encode_tree(want));
  }
  std::mt19937 rng(11);
  for (int i = 0; i < 300; ++i) {
    std::string d = damaged(text, rng);
    Bytes b(d.begin(), d.end());
    b.reserve(b.size() + kTreeParsePadding);
    Errc by_value = code_of([&] { decode_tree_bytes(std::move(b)); });
    Errc by_span = code_of([&] { decode_tree_bytes(as_bytes(d)); });
    Errc by_pieces = code_of([&] { read_pieces(d, 1 + i % 7); });
    CHECK(by_value == by_span);
    CHECK(by_pieces == by_span);
  }
}

TEST_CASE("a tree is read node by node, whole or piece by piece; other layouts are decoded whole") {
  std::string text = valid_tree().dump();
  Tree want = decode_tree(valid_tree());
  for (size_t step : {size_t(1), size_t(3), size_t(64), size_t(1) << 20}) {
    INFO("pieces of " << step);
    CHECK(encode_tree(read_pieces(text, step)) == encode_tree(want));
  }
  TreeReader r(as_bytes(text));
  CHECK(r.nodes_hint() == 3);
  Node n;
  REQUIRE(r.next(n));
  CHECK(n.name == "a");
  CHECK(r.count() == 1);
  // Pretty-printed (not cairn's layout): read whole, the same nodes.
  CHECK(encode_tree(decode_tree_bytes(as_bytes(valid_tree().dump(2)))) == encode_tree(want));
  CHECK(encode_tree(read_pieces(valid_tree().dump(2), 5)) == encode_tree(want));
  // Malformed after the first node: that node comes out, then the error.
  std::string bad = text;
  bad.replace(bad.find("\"name\":\"c\""), 10, "\"name\":\"0\"");  // out of order
  TreeReader late(as_bytes(bad));
  REQUIRE(late.next(n));
  REQUIRE(late.next(n));
  CHECK(code_of([&] { late.next(n); }) == Errc::corrupt);
  CHECK_FALSE(late.next(n));
  CHECK(code_of([] { decode_tree_bytes(as_bytes(std::string("{\"nodes\":[]}x"))); }) == Errc::corrupt);
  CHECK(code_of([] { decode_tree_bytes(as_bytes(std::string("{\"nodes\":[{}"))); }) == Errc::corrupt);
  CHECK(decode_tree_bytes(as_bytes(std::string("{\"nodes\":[] } \n"))).nodes.empty());
}

TEST_CASE("tree decoding rejects every malformed field") {
  auto bad = [](const std::function<void(json&)>& mutate) {
    json j = valid_tree();
    mutate(j);
    return code_of([&] { decode_tree(j); });
  };
  REQUIRE(code_of([] { decode_tree(json::array()); }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j.erase("nodes"); }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["nodes"][0]["name"] = ""; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["nodes"][0]["name"] = ".."; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["nodes"][0]["name"] = "x/y"; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["nodes"][1]["name"] = "a"; }) == Errc::corrupt);              // duplicate
  REQUIRE(bad([](json& j) { std::swap(j["nodes"][0], j["nodes"][1]); }) == Errc::corrupt);  // unsorted
  REQUIRE(bad([](json& j) { j["nodes"][0]["type"] = "door"; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["nodes"][0]["mode"] = "rwx"; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["nodes"][0]["subtree"] = "zz"; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["nodes"][1]["content"][0] = std::string(63, 'a'); }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["nodes"][1].erase("size"); }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["nodes"][1]["extents"] = json::parse("[[0,20]]"); }) == Errc::corrupt);       // past the end
  REQUIRE(bad([](json& j) { j["nodes"][1]["extents"] = json::parse("[[4,2],[0,2]]"); }) == Errc::corrupt);  // out of order
  REQUIRE(bad([](json& j) { j["nodes"][1]["xattrs"] = json::parse(R"([["!!",""]])"); }) == Errc::corrupt);
  REQUIRE(bad([](json& j) {
            j["nodes"][2].erase("name");
            j["nodes"][2]["name_b64"] = "%%%";
          }) == Errc::corrupt);
}

TEST_CASE("non-UTF-8 names survive encoding") {
  Tree t;
  Node n;
  n.name = std::string("caf\xe9\xff", 5);
  n.type = NodeType::symlink;
  n.target = std::string("\x80\x81", 2);
  t.nodes.push_back(n);
  Tree back = decode_tree_bytes(as_bytes(encode_tree_bytes(t)));
  REQUIRE(back.nodes[0].name == n.name);
  REQUIRE(back.nodes[0].target == n.target);
}

TEST_CASE("random corruption of tree bytes never crashes the decoder") {
  std::string good = valid_tree().dump();
  std::mt19937 rng(42);
  for (int i = 0; i < 3000; ++i) {
    std::string s = damaged(good, rng);
    try {
      decode_tree_bytes(as_bytes(s));
    } catch (const Error& e) {
      REQUIRE((e.code() == Errc::corrupt));
    }
  }
}

TEST_CASE("index file decoding rejects malformed content") {
  json good = {{"version", 1},
               {"supersedes", json::array()},
               {"packs", json::parse(R"([{"id":")" + kId + R"(","blobs":[[")" + kId + R"(",0,1,0,100,200]]}])")}};
  IndexFile f = decode_index_file(good, "x");
  REQUIRE(f.packs.size() == 1);
  REQUIRE(f.packs[0].second[0].raw_length == 200);
  auto bad = [&](const std::function<void(json&)>& mutate) {
    json j = good;
    mutate(j);
    return code_of([&] { decode_index_file(j, "x"); });
  };
  REQUIRE(bad([](json& j) { j["version"] = 2; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j.erase("packs"); }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["packs"][0]["id"] = "nothex"; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["packs"][0]["blobs"][0].erase(5); }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["packs"][0]["blobs"][0][1] = 7; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["packs"][0]["blobs"][0][3] = -1; }) == Errc::corrupt);
  REQUIRE(bad([](json& j) { j["packs"][0]["blobs"][0][0] = 5; }) == Errc::corrupt);
}

TEST_CASE("random corruption of index file text never crashes the decoder") {
  std::string good = json({{"version", 1},
                           {"supersedes", json::array({kId})},
                           {"packs", json::parse(R"([{"id":")" + kId + R"(","blobs":[[")" + kId + R"(",0,1,0,100,200],[")" + kId +
                                                 R"(",1,0,100,50,70]]}])")}})
                         .dump();
  REQUIRE(decode_index_file_bytes(as_bytes(good), "x").packs.at(0).second.size() == 2);
  std::mt19937 rng(7);
  for (int i = 0; i < 3000; ++i) {
    std::string s = damaged(good, rng);
    try {
      IndexFile f = decode_index_file_bytes(as_bytes(s), "x");
      for (const auto& [pack, blobs] : f.packs)
        for (const auto& b : blobs) REQUIRE(b.flags <= 1);
    } catch (const Error& e) {
      REQUIRE((e.code() == Errc::corrupt));
    }
  }
}

TEST_CASE("an index file is written as nlohmann writes it and read entry by entry as it is read whole; damage is refused alike") {
  std::mt19937 rng(5);
  auto id = [&] {
    BlobId b;
    for (auto& x : b) x = uint8_t(rng());
    return b;
  };
  // The outcome of a decode: the entries, or the error's code.
  auto outcome = [](const std::string& text) {
    try {
      IndexFile f = decode_index_file_bytes(as_bytes(text), "x");
      return encode_index_file(f).dump();
    } catch (const Error& e) {
      return std::string("error ") + std::to_string(int(e.code()));
    }
  };
  for (int round = 0; round < 200; ++round) {
    IndexFile f;
    for (size_t p = rng() % 4; p > 0; --p) {
      std::vector<PackBlob> blobs;
      for (size_t b = rng() % 5; b > 0; --b)
        blobs.push_back(
            {id(), BlobType(rng() % 2), uint8_t(rng() % 2), uint32_t(rng()), uint32_t(28 + rng() % 1000), uint32_t(rng() % 4000)});
      f.packs.emplace_back(id(), std::move(blobs));
    }
    for (size_t k = rng() % 3; k > 0; --k) f.supersedes.push_back(id_hex(id()));
    json j = encode_index_file(f);
    std::string text = j.dump();
    REQUIRE(encode_index_file_bytes(f) == text);
    // Pretty-printed: not cairn's layout, parsed whole.
    REQUIRE(outcome(text) == outcome(j.dump(1)));
    REQUIRE(outcome(text) == j.dump());
    Bytes owned(text.begin(), text.end());
    CHECK(encode_index_file(decode_index_file_bytes(std::move(owned), "x")).dump() == text);
    // Damaged: refused as the same text parsed whole is (or read alike).
    for (int d = 0; d < 10; ++d) {
      std::string bad = damaged(text, rng);
      json again;
      try {
        again = json::parse(bad);
      } catch (const json::exception&) {
        CHECK(outcome(bad).rfind("error ", 0) == 0);
        continue;
      }
      CHECK(outcome(bad) == outcome(again.dump(1)));
    }
  }
}

TEST_CASE("snapshot decoding rejects malformed content") {
  json good = {{"version", 1}, {"time", "2026-11-22T01:00:00.000000000Z"}, {"paths", {"/x"}}, {"tree", kId}};
  REQUIRE(decode_snapshot(good, "s").paths == std::vector<std::string>{"/x"});
  json j = good;
  j["version"] = 9;
  REQUIRE(code_of([&] { decode_snapshot(j, "s"); }) == Errc::unsupported);
  j = good;
  j["tree"] = "abc";
  REQUIRE(code_of([&] { decode_snapshot(j, "s"); }) == Errc::corrupt);
  j = good;
  j.erase("paths");
  REQUIRE(code_of([&] { decode_snapshot(j, "s"); }) == Errc::corrupt);
}

TEST_CASE("pack headers are authenticated and checked against the pack") {
  crypto::Aead aead(crypto::random_array<32>());
  PackBuilder pb;
  Bytes blob1(100, 1), blob2(50, 2);
  BlobId id1{}, id2{};
  id1[0] = 1;
  id2[0] = 2;
  pb.add(id1, BlobType::data, 0, 72, blob1);
  pb.add(id2, BlobType::tree, kBlobCompressed, 200, blob2);
  std::vector<PackBlob> written;
  Bytes pack = pb.finish(aead, written);
  auto parsed = parse_pack_header(pack, aead, "p");
  REQUIRE(parsed.size() == 2);
  REQUIRE(parsed[1].offset == 100);
  REQUIRE(parsed[1].type == BlobType::tree);
  REQUIRE(parsed[1].raw_length == 200);
  // the name covers the header and the trailer
  REQUIRE(pack_id(pack) == crypto::sha256(std::span<const uint8_t>(pack).subspan(150)));

  auto code = [&](Bytes p) { return code_of([&] { parse_pack_header(p, aead, "p"); }); };
  REQUIRE(code(Bytes(pack.begin(), pack.begin() + 20)) == Errc::corrupt);  // truncated
  Bytes t = pack;
  t.back() ^= 1;  // magic
  REQUIRE(code(t) == Errc::corrupt);
  t = pack;
  t[pack.size() - 8] ^= 0x40;  // header length
  REQUIRE(code(t) == Errc::corrupt);
  t = pack;
  t[160] ^= 1;  // inside the sealed header
  REQUIRE(code(t) == Errc::corrupt);
  Bytes shifted(10 + pack.size(), 0);  // data before the header no longer matches the entries
  std::copy(pack.begin(), pack.end(), shifted.begin() + 10);
  REQUIRE(code(shifted) == Errc::corrupt);
  REQUIRE(code_of([&] { parse_pack_header(pack, crypto::Aead(crypto::random_array<32>()), "p"); }) == Errc::corrupt);
}

TEST_CASE("key slots: wrong secrets and malformed slots") {
  namespace fs = std::filesystem;
  char tmpl[] = "/tmp/cairn-keys-test-XXXXXX";
  REQUIRE(mkdtemp(tmpl));
  std::string dir = tmpl;
  auto be = make_fs_backend(dir + "/repo");
  InitOptions io;
  io.kdf.scrypt = {1024, 8, 1};
  Repository::init(*be, Secret(Secret::Kind::passphrase, "right"), io);
  REQUIRE(code_of([&] { open_master_key(*be, Secret(Secret::Kind::passphrase, "wrong")); }) == Errc::wrong_key);
  REQUIRE(code_of([&] { open_master_key(*be, Secret(Secret::Kind::key_file, std::string(40, 'k'))); }) == Errc::wrong_key);
  MasterKey mk = open_master_key(*be, Secret(Secret::Kind::passphrase, "right"));
  // a garbage slot next to a good one does not stop the good one
  std::string junk = "{not json";
  be->save({FileType::key, "0000"}, as_bytes(junk));
  REQUIRE(open_master_key(*be, Secret(Secret::Kind::passphrase, "right")).encrypt == mk.encrypt);
  // a key-file slot opens only with its file
  std::string kf(48, 'z');
  add_key_slot(*be, mk, Secret(Secret::Kind::key_file, kf), io.kdf);
  REQUIRE(open_master_key(*be, Secret(Secret::Kind::key_file, kf)).id == mk.id);
  REQUIRE(code_of([&] { add_key_slot(*be, mk, Secret(Secret::Kind::key_file, "short"), io.kdf); }) == Errc::invalid_input);
  // a tampered config is refused
  {
    auto r = Repository::open(make_fs_backend(dir + "/repo"), Secret(Secret::Kind::passphrase, "right"));
    REQUIRE(r->params().chunker_seed.size() == 32);
  }
  Bytes cfg = be->load({FileType::config, ""});
  std::string text(cfg.begin(), cfg.end());
  auto pos = text.find("\"sealed\": \"") + 12;
  text[pos] = text[pos] == 'A' ? 'B' : 'A';
  be->save({FileType::config, ""}, as_bytes(text));
  REQUIRE(code_of([&] { Repository::open(make_fs_backend(dir + "/repo"), Secret(Secret::Kind::passphrase, "right")); }) == Errc::corrupt);
  REQUIRE(code_of([&] { Repository::open(make_fs_backend(dir + "/nothing"), Secret(Secret::Kind::passphrase, "right")); }) ==
          Errc::no_repo);
  fs::remove_all(dir);
}

TEST_CASE("a tree's text is written byte for byte as nlohmann's dump of encode_tree gives it (its id must not move)") {
  std::mt19937 rng(42);
  auto str = [&](size_t max_len, bool any_bytes) {
    static const std::string pool[] = {"a",    "Z",    "0",    " ", "\"",   "\\",   "/", "\b", "\f", "\n", "\r", "\t",
                                       "\x01", "\x1f", "\x7f", "é", "日本", "🙂", "_", "-",  ".",  "%",  "~"};
    std::string s;
    size_t len = rng() % (max_len + 1);
    for (size_t i = 0; i < len; ++i) {
      if (any_bytes && rng() % 7 == 0)
        s += char(rng());  // not always UTF-8: name_b64, target_b64
      else
        s += pool[rng() % std::size(pool)];
    }
    return s;
  };
  for (int round = 0; round < 300; ++round) {
    Tree t;
    size_t nodes = rng() % 12;
    std::set<std::string> names;
    for (size_t i = 0; i < nodes; ++i) {
      Node n;
      do n.name = str(12, true) + std::to_string(i);
      while (!names.insert(n.name).second);
      n.type = NodeType(rng() % 7);
      n.mode = rng() & 07777;
      n.uid = rng();
      n.gid = rng();
      if (rng() % 2) n.user = str(8, false);
      if (rng() % 2) n.group = str(8, false);
      n.mtime_ns = int64_t(uint64_t(rng()) << 32 | rng()) * (rng() % 2 ? 1 : -1);
      n.atime_ns = rng() % 3 ? 0 : int64_t(rng());
      n.ctime_ns = int64_t(rng()) - int64_t(rng());
      n.inode = uint64_t(rng()) << 32 | rng();
      n.device = rng();
      n.links = rng() % 5;
      if (n.type == NodeType::file) {
        n.size = uint64_t(rng()) << 20;
        for (size_t k = rng() % 4; k > 0; --k) {
          BlobId id;
          for (auto& b : id) b = uint8_t(rng());
          n.content.push_back(id);
        }
        if (rng() % 3 == 0) {
          n.sparse = true;
          for (size_t k = rng() % 3; k > 0; --k) n.extents.emplace_back(rng(), rng());
        }
      }
      if (n.type == NodeType::dir && rng() % 4) {
        BlobId id;
        for (auto& b : id) b = uint8_t(rng());
        n.subtree = id;
      }
      if (n.type == NodeType::symlink) n.target = str(20, true);
      if (n.type == NodeType::chardev || n.type == NodeType::blockdev) n.rdev = rng();
      for (size_t k = rng() % 3; k > 0; --k) n.xattrs.emplace_back("user." + str(6, true), Bytes(rng() % 9, uint8_t(rng())));
      t.nodes.push_back(std::move(n));
    }
    std::sort(t.nodes.begin(), t.nodes.end(), [](const Node& a, const Node& b) { return a.name < b.name; });
    std::string want = encode_tree(t).dump();
    REQUIRE(encode_tree_bytes(t) == want);
    TreeWriter w;
    for (const auto& n : t.nodes) w.add(n);
    REQUIRE(w.finish() == want);
    // Read back piece by piece as whole (names with '/' are written, never read).
    size_t step = 1 + rng() % 40;
    std::string whole, pieces;
    try {
      whole = encode_tree(decode_tree_bytes(as_bytes(want))).dump();
    } catch (const Error& e) {
      whole = e.what();
    }
    try {
      pieces = encode_tree(read_pieces(want, step)).dump();
    } catch (const Error& e) {
      pieces = e.what();
    }
    CHECK(pieces == whole);
  }
  TreeWriter none;
  CHECK(none.finish() == encode_tree(Tree{}).dump());
  Tree empty;
  CHECK(encode_tree_bytes(empty) == encode_tree(empty).dump());
  // A user name that is not UTF-8 is refused as before (nlohmann's dump throws).
  Tree bad;
  Node n;
  n.name = "x";
  n.user = "\xff";
  bad.nodes.push_back(n);
  CHECK_THROWS(encode_tree_bytes(bad));
  TreeWriter w;
  CHECK_THROWS(w.add(n));
}
