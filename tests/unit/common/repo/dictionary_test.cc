// Compression dictionaries (docs/repository-format.md § 5.1): page chunks of a
// database are compressed with a dictionary the repository trains on the first
// few MiB of them; the bytes come back; a lost or damaged dictionary is named
// as damage by restore and check, never read as something else.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <random>
#include <string>

#include "common/repo/archiver.h"
#include "common/repo/checker.h"
#include "common/repo/compress.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/util/error.h"
#include "repo_test_util.h"

using namespace cairn;
using namespace cairn::repo;
using namespace cairn::repo::test;
namespace fs = std::filesystem;

namespace {

// A page-structured file like a bbolt database: 4 KiB pages of records. As in
// etcd's, records share structure across the whole file (here: 300 kinds of
// object, each with its own field names and fixed text) but a page holds few
// of them, so one chunk alone sees little of that structure twice; names, ids
// and values differ.
Bytes database_pages(size_t bytes, uint32_t seed) {
  std::mt19937 g(1);  // the same kinds in every file
  auto word = [&](std::mt19937& r) {
    std::string w;
    for (size_t i = 0, n = 4 + r() % 9; i < n; ++i) w += char('a' + r() % 26);
    return w;
  };
  std::vector<std::string> kinds;
  for (int k = 0; k < 300; ++k) {
    std::string t = "{\"apiVersion\":\"" + word(g) + "/v1\",\"kind\":\"" + word(g) + "\",\"metadata\":{";
    for (int f = 0; f < 6; ++f) t += "\"" + word(g) + word(g) + "\":\"%u\",";
    t += "\"" + word(g) + "\":\"" + word(g) + " " + word(g) + " " + word(g) + "\"}}";
    kinds.push_back(t);
  }
  std::mt19937 r(seed);
  std::string out;
  out.reserve(bytes + 8192);
  while (out.size() < bytes) {
    std::string page;
    while (page.size() < 3600) {
      const std::string& k = kinds[r() % kinds.size()];
      for (size_t i = 0; i < k.size(); ++i) {
        if (k[i] == '%' && i + 1 < k.size() && k[i + 1] == 'u') {
          page += std::to_string(r() % 100000);
          ++i;
        } else {
          page += k[i];
        }
      }
    }
    page.resize(4096, '\0');
    out += page;
  }
  return Bytes(out.begin(), out.end());
}

struct DictRepo {
  TempDir dir;
  std::string repo_path = dir.path + "/repo", src = dir.path + "/src";
  Secret secret{Secret::Kind::passphrase, "pw"};
  Bytes db = database_pages(12u << 20, 7);
  DictRepo() {
    auto be = make_fs_backend(repo_path);
    InitOptions io;
    io.kdf.scrypt.n = 1024;
    Repository::init(*be, secret, io);
    fs::create_directories(src + "/member/snap");
    write(src + "/member/snap/db", db);
  }
  std::unique_ptr<Repository> open() {
    auto r = Repository::open(make_fs_backend(repo_path), secret);
    r->load_index();
    return r;
  }
  std::string backup() {
    auto r = open();
    BackupOptions bo;
    bo.paths = {src};
    bo.threads = 2;
    return repo::backup(*r, bo).snapshot.id;
  }
  std::vector<std::string> dict_files() const {
    std::vector<std::string> out;
    for (const auto& e : fs::directory_iterator(repo_path + "/dicts")) out.push_back(e.path().string());
    return out;
  }
};

// A file's chunks as the repository stored them: bytes stored per plaintext
// byte, the share of chunks that name the dictionary, and bytes per plaintext
// byte were each chunk compressed alone (zstd level 3, as the writer would).
struct Stored {
  double with_dict = 0, alone = 0, share_with_dict = 0;
};
Stored stored(Repository& r, const std::string& snap, const std::string& path) {
  BlobId id = load_snapshot(r, snap).tree;
  std::vector<BlobId> content;
  for (const auto& part : fs::path(path)) {
    std::string name = part.string();
    if (name == "/" || name.empty()) continue;
    Tree t = decode_tree_bytes(r.load_blob(id));
    auto it = std::find_if(t.nodes.begin(), t.nodes.end(), [&](const Node& n) { return n.name == name; });
    REQUIRE(it != t.nodes.end());
    if (it->subtree)
      id = *it->subtree;
    else
      content = it->content;
  }
  REQUIRE_FALSE(content.empty());
  uint64_t raw = 0, len = 0, alone = 0, n_dict = 0;
  for (const auto& b : content) {
    auto l = r.index().lookup(b);
    REQUIRE(l);
    raw += l->raw_length;
    len += l->length;
    if (l->flags & kBlobDictionary) ++n_dict;
    Bytes plain = r.load_blob(b);
    std::span<const uint8_t> z;
    alone += compress_if_useful(plain, z, 3) ? z.size() + 28 : plain.size() + 28;  // + the sealed box's nonce and tag
  }
  return {double(len) / double(raw), double(alone) / double(raw), double(n_dict) / double(content.size())};
}

}  // namespace

TEST_CASE("a database's page chunks are compressed with a dictionary the repository trains, smaller, and restore byte for byte",
          "[repo][dictionary]") {
  DictRepo t;
  std::string snap = t.backup();
  REQUIRE(t.dict_files().size() == 1);  // trained once, stored before any blob used it
  auto r = t.open();
  CHECK(r->dictionary_count() == 1);
  CHECK(r->dictionary_problems().empty());
  Stored st = stored(*r, snap, t.src + "/member/snap/db");
  INFO("stored/raw with the dictionary " << st.with_dict << ", alone " << st.alone);
  CHECK(st.with_dict < st.alone * 0.85);  // the point of it: small chunks compress like large ones
  // The chunks the dictionary was trained on were held back and stored with it
  // too: none of the database is stored without it.
  CHECK(st.share_with_dict == 1.0);

  std::string out = t.dir.path + "/out";
  RestoreOptions ro;
  ro.target = out;
  RestoreResult res = restore(*r, snap, ro);
  REQUIRE(res.failures.empty());
  bool same = slurp(out + t.src + "/member/snap/db") == std::string(t.db.begin(), t.db.end());
  CHECK(same);  // (not the 12 MiB strings in a failure message)

  CheckOptions co;
  co.read_data = true;
  CheckReport rep = check(*r, co);
  CHECK(rep.errors() == 0);

  // A second backup uses the stored dictionary and trains no other.
  write(t.src + "/member/snap/db", database_pages(12u << 20, 8));
  t.backup();
  CHECK(t.dict_files().size() == 1);
}

TEST_CASE("a database too small to train on is stored compressed alone, no dictionary, and restores byte for byte", "[repo][dictionary]") {
  DictRepo t;
  Bytes small = database_pages(1u << 20, 9);  // under the 4 MiB a dictionary is trained on
  write(t.src + "/member/snap/db", small);
  std::string snap = t.backup();
  CHECK(t.dict_files().empty());
  auto r = t.open();
  Stored st = stored(*r, snap, t.src + "/member/snap/db");
  CHECK(st.share_with_dict == 0.0);
  std::string out = t.dir.path + "/out";
  RestoreOptions ro;
  ro.target = out;
  REQUIRE(restore(*r, snap, ro).failures.empty());
  bool same = slurp(out + t.src + "/member/snap/db") == std::string(small.begin(), small.end());
  CHECK(same);
  CheckOptions co;
  co.read_data = true;
  CHECK(check(*r, co).errors() == 0);
}

TEST_CASE("a lost compression dictionary is named as damage by restore and check", "[repo][dictionary]") {
  DictRepo t;
  std::string snap = t.backup();
  auto files = t.dict_files();
  REQUIRE(files.size() == 1);
  fs::remove(files[0]);
  auto r = t.open();
  CHECK(r->dictionary_count() == 0);
  RestoreOptions ro;
  ro.target = t.dir.path + "/out";
  RestoreResult res = restore(*r, snap, ro);
  REQUIRE_FALSE(res.failures.empty());
  CHECK(res.failures[0].path == t.src + "/member/snap/db");
  CHECK_THAT(res.failures[0].reason, Catch::Contains("needs compression dictionary"));

  CheckOptions co;
  co.read_data = true;
  CheckReport rep = check(*r, co);
  CHECK(rep.errors() > 0);
  bool named = false;
  for (const auto& p : rep.problems) named |= p.message.find("needs compression dictionary") != std::string::npos;
  CHECK(named);

  // A plain check (no data read) knows too, from the index (issue 32: it said "no errors were found").
  CheckReport plain = check(*t.open());
  CHECK_FALSE(plain.clean());
  bool missing = false;
  for (const auto& p : plain.problems)
    missing |= p.kind == "dictionary_missing" && p.message.find("compressed with a dictionary and dicts/ holds none") != std::string::npos;
  CHECK(missing);
}

TEST_CASE("a damaged compression dictionary is reported by check, and its blobs do not read as other bytes", "[repo][dictionary]") {
  DictRepo t;
  std::string snap = t.backup();
  auto files = t.dict_files();
  REQUIRE(files.size() == 1);
  std::string bytes = slurp(files[0]);
  bytes[bytes.size() / 2] ^= 0x20;
  write(files[0], bytes);
  auto r = t.open();  // the rest of the repository still opens
  CHECK(r->dictionary_count() == 0);
  REQUIRE(r->dictionary_problems().size() == 1);
  CheckReport rep = check(*r, {});
  bool dict_problem = false;
  for (const auto& p : rep.problems) dict_problem |= p.kind == "dictionary_damaged";
  CHECK(dict_problem);
  RestoreOptions ro;
  ro.target = t.dir.path + "/out";
  CHECK_FALSE(restore(*r, snap, ro).failures.empty());
}

TEST_CASE("a zstd frame that names a dictionary its entry does not declare is refused", "[repo][dictionary]") {
  std::vector<size_t> sizes;
  Bytes samples;
  Bytes db = database_pages(2u << 20, 3);
  for (size_t off = 0; off + 8192 <= db.size(); off += 8192) {
    samples.insert(samples.end(), db.begin() + long(off), db.begin() + long(off + 8192));
    sizes.push_back(8192);
  }
  Bytes content = train_dictionary(samples, sizes, 64u << 10, {});
  REQUIRE_FALSE(content.empty());
  std::string why;
  auto d = CompressionDictionary::make(content, 3, why);
  REQUIRE(d);
  std::span<const uint8_t> z;
  std::span<const uint8_t> page(db.data(), 8192);
  REQUIRE(d->compress_if_useful(page, z));
  Bytes frame(z.begin(), z.end()), out;
  CHECK(frame_dictionary_id(frame) == d->id());
  CHECK(d->decompress(frame, 8192, out).empty());
  CHECK(out == Bytes(page.begin(), page.end()));
  CHECK_THAT(decompress(frame, 8192, out), Catch::Contains("names a compression dictionary"));
  // Ids are never taken twice.
  for (int i = 0; i < 4; ++i) {
    Bytes again = train_dictionary(samples, sizes, 64u << 10, {d->id()});
    auto d2 = CompressionDictionary::make(again, 3, why);
    REQUIRE(d2);
    CHECK(d2->id() != d->id());
  }
}
