#include "common/repo/verify.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <filesystem>
#include <mutex>

#include "common/repo/archiver.h"
#include "common/repo/snapshot.h"
#include "common/repo/walk.h"
#include "common/util/error.h"
#include "common/util/fs.h"
#include "repo_test_util.h"

using namespace cairn;
using namespace cairn::repo;
namespace fs = std::filesystem;
using namespace cairn::repo::test;

namespace {

struct Repo {
  TempDir dir;
  std::unique_ptr<Repository> r;
  Repo() {
    auto be = make_fs_backend(dir.path + "/repo");
    InitOptions io;
    io.kdf.scrypt.n = 1024;
    Secret s(Secret::Kind::passphrase, "pw");
    Repository::init(*be, s, io);
    r = Repository::open(std::move(be), s);
    r->load_index();
  }
  std::string backup(const std::string& path) {
    BackupOptions bo;
    bo.paths = {path};
    return repo::backup(*r, bo).snapshot.id;
  }
  std::string pack_path(const BlobId& pack) const {
    std::string h = id_hex(pack);
    return dir.path + "/repo/data/" + h.substr(0, 2) + "/" + h;
  }
  // Flips one byte in the middle of a blob where it is stored.
  void damage(const BlobId& id) {
    auto loc = r->index().lookup(id);
    REQUIRE(loc);
    Fd fd(::open(pack_path(loc->pack).c_str(), O_RDWR));
    REQUIRE(fd);
    uint8_t c;
    REQUIRE(::pread(fd.get(), &c, 1, loc->offset + loc->length / 2) == 1);
    c ^= 0x01;
    REQUIRE(::pwrite(fd.get(), &c, 1, loc->offset + loc->length / 2) == 1);
  }
};

// The tree listing the directory at path inside snapshot id.
BlobId subtree_of(Repository& r, const std::string& id, const std::string& path) {
  struct Find : TreeVisitor {
    std::string want;
    std::optional<BlobId> found;
    bool enter(const std::string& p, Node& n, size_t) override {
      if (p == want) found = n.subtree;
      return true;
    }
  } find;
  find.want = path;
  walk_snapshot(r, load_snapshot(r, id), find);
  REQUIRE(find.found);
  return *find.found;
}

// A source tree: two small files in d/, a large one (several chunks) at the top,
// and a copy of it (the same blobs, read once).
std::string make_source(const std::string& root) {
  std::string src = root + "/src";
  fs::create_directories(src + "/d");
  write(src + "/d/victim", "the file that will be damaged\n");
  write(src + "/d/fine", "this one stays good\n");
  write(src + "/big", random_bytes(6u << 20, 7));
  write(src + "/big-copy", random_bytes(6u << 20, 7));
  return src;
}

}  // namespace

TEST_CASE("verify reads every blob of a clean snapshot once and writes nothing", "[verify]") {
  Repo repo;
  std::string src = make_source(repo.dir.path);
  std::string id = repo.backup(src);
  auto before =
      fs::file_size(repo.pack_path(repo.r->index().lookup(repo.r->blob_id(as_bytes(std::string("this one stays good\n"))))->pack));

  std::mutex mu;
  std::vector<Progress> seen;
  VerifyOptions vo;
  vo.progress = [&](const Progress& p) {
    std::lock_guard g(mu);
    seen.push_back(p);
  };
  auto res = verify_snapshot(*repo.r, id.substr(0, 8), vo);
  CHECK(res.ok());
  CHECK(res.snapshot_id == id);
  // Each file's bytes once: the copy of 'big' shares its blobs.
  CHECK(res.bytes == (6u << 20) + 30 + 20);
  CHECK(res.blobs >= 4);
  CHECK(res.trees >= 3);
  CHECK(res.packs >= 1);
  CHECK(res.bytes_read >= res.packs);
  REQUIRE_FALSE(seen.empty());
  CHECK(seen.back().phase == "done");
  CHECK(seen.back().bytes_done == seen.back().bytes_total);
  CHECK(seen.back().bytes_total == res.bytes);
  CHECK(fs::file_size(repo.pack_path(repo.r->index().lookup(repo.r->blob_id(as_bytes(std::string("this one stays good\n"))))->pack)) ==
        before);
}

TEST_CASE("verify names the damaged data blob, its pack and the file that needs it", "[verify]") {
  Repo repo;
  std::string src = make_source(repo.dir.path);
  std::string id = repo.backup(src);
  BlobId bid = repo.r->blob_id(as_bytes(std::string("the file that will be damaged\n")));
  repo.damage(bid);

  auto res = verify_snapshot(*repo.r, id);
  REQUIRE(res.failures.size() == 1);
  const auto& f = res.failures[0];
  CHECK(f.kind == "data");
  CHECK(f.path == src + "/d/victim");
  CHECK(f.blob == id_hex(bid));
  std::string pack = id_hex(repo.r->index().lookup(bid)->pack);
  CHECK(f.object == "data/" + pack.substr(0, 2) + "/" + pack);
  CHECK_THAT(f.reason, Catch::Contains("fails authentication"));
  CHECK_THAT(verify_failure_line(f),
             Catch::Contains("'" + src + "/d/victim'") && Catch::Contains(id_hex(bid)) && Catch::Contains(f.object));
  // The rest was read all the same.
  CHECK(res.bytes == (6u << 20) + 20);
}

TEST_CASE("verify names a directory whose listing is damaged", "[verify]") {
  Repo repo;
  std::string src = make_source(repo.dir.path);
  std::string id = repo.backup(src);
  BlobId tree = subtree_of(*repo.r, id, src + "/d");
  repo.damage(tree);

  auto res = verify_snapshot(*repo.r, id);
  REQUIRE(res.failures.size() == 1);
  CHECK(res.failures[0].kind == "tree");
  CHECK(res.failures[0].path == src + "/d");
  CHECK(res.failures[0].blob == id_hex(tree));
  std::string pack = id_hex(repo.r->index().lookup(tree)->pack);
  CHECK(res.failures[0].object == "data/" + pack.substr(0, 2) + "/" + pack);
  CHECK_THAT(verify_failure_line(res.failures[0]),
             Catch::Contains("the listing of '" + src + "/d' (pack '" + res.failures[0].object + "') cannot be read"));
}

TEST_CASE("verify reports a damaged root tree without reading further", "[verify]") {
  Repo repo;
  std::string src = make_source(repo.dir.path);
  std::string id = repo.backup(src);
  repo.damage(load_snapshot(*repo.r, id).tree);

  auto res = verify_snapshot(*repo.r, id);
  REQUIRE(res.failures.size() == 1);
  CHECK(res.failures[0].kind == "tree");
  CHECK(res.failures[0].path == "/");
  CHECK(res.blobs == 0);
}

TEST_CASE("verify lists the blobs of a missing pack as unreadable", "[verify]") {
  Repo repo;
  std::string src = make_source(repo.dir.path);
  std::string id = repo.backup(src);
  BlobId bid = repo.r->blob_id(as_bytes(std::string("this one stays good\n")));
  fs::remove(repo.pack_path(repo.r->index().lookup(bid)->pack));

  auto res = verify_snapshot(*repo.r, id);
  REQUIRE_FALSE(res.ok());
  bool named = false;
  for (const auto& f : res.failures) {
    CHECK_THAT(f.reason, Catch::Contains("cannot be read"));
    if (f.blob == id_hex(bid)) named = f.path == src + "/d/fine";
  }
  CHECK(named);
}

TEST_CASE("verify of a missing snapshot throws; a cancelled one is interrupted", "[verify]") {
  Repo repo;
  std::string src = make_source(repo.dir.path);
  std::string id = repo.backup(src);
  CHECK_THROWS_AS(verify_snapshot(*repo.r, std::string(64, 'a')), Error);
  std::atomic<bool> cancel{true};
  VerifyOptions vo;
  vo.cancel = &cancel;
  try {
    verify_snapshot(*repo.r, id, vo);
    FAIL("not interrupted");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::interrupted);
  }
}
