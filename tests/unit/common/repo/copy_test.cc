// Snapshot copies between repositories (copy.h): what cairnctl export and
// import stand on. The copy restores to the same bytes under the other
// repository's keys, deduplicates against what is there, and refuses a
// source blob that does not verify.
#include "common/repo/copy.h"

#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <vector>

#include "common/repo/archiver.h"
#include "common/repo/checker.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/util/error.h"
#include "repo_test_util.h"

using namespace cairn;
using namespace cairn::repo;
using namespace cairn::repo::test;

namespace {

std::unique_ptr<Repository> make_repo(const std::string& path, const std::string& pw) {
  auto be = make_fs_backend(path);
  InitOptions io;
  io.kdf.scrypt.n = 1024;
  Secret s(Secret::Kind::passphrase, pw);
  Repository::init(*be, s, io);
  auto r = Repository::open(std::move(be), s);
  r->load_index();
  return r;
}

}  // namespace

TEST_CASE("a copied snapshot restores the same bytes from the other repository") {
  TempDir d;
  std::string src_dir = d.path + "/src";
  std::filesystem::create_directories(src_dir + "/sub/deeper");
  auto big = random_bytes(3 << 20, 7);
  write(src_dir + "/big.bin", big);
  write(src_dir + "/sub/copy.bin", big);  // the same content twice
  write(src_dir + "/sub/deeper/small.txt", "small\n");
  REQUIRE(::symlink("sub/deeper/small.txt", (src_dir + "/link").c_str()) == 0);

  auto a = make_repo(d.path + "/a", "one");
  auto b = make_repo(d.path + "/b", "two");
  BackupOptions bo;
  bo.paths = {src_dir};
  bo.tags = {"cairn", "set:bs-1", "task:tk-1"};
  auto snap = load_snapshot(*a, repo::backup(*a, bo).snapshot.id);

  SnapshotCopier c(*a, *b);
  std::vector<uint64_t> progress;
  c.on_progress([&](const CopyStats& st) { progress.push_back(st.file_bytes); });
  auto copied = c.copy(snap);
  // Once per file, growing to the files' sizes, which is what the snapshot's summary counts.
  REQUIRE(progress.size() == 3);
  CHECK(std::is_sorted(progress.begin(), progress.end()));
  CHECK(progress.back() == 2 * big.size() + 6);
  CHECK(progress.back() == snap.summary.value("bytes_total", uint64_t(0)));
  CHECK(copied.id != snap.id);
  CHECK(copied.tags == snap.tags);
  CHECK(copied.time == snap.time);
  CHECK(copied.paths == snap.paths);
  CHECK(copied.tree != snap.tree);  // ids are keyed per repository
  CHECK(c.stats().bytes >= big.size());

  RestoreOptions ro;
  ro.target = d.path + "/out";
  restore(*b, copied.id, ro);
  std::string root = ro.target + src_dir;
  CHECK(slurp(root + "/big.bin") == std::string(big.begin(), big.end()));
  CHECK(slurp(root + "/sub/copy.bin") == std::string(big.begin(), big.end()));
  CHECK(slurp(root + "/sub/deeper/small.txt") == "small\n");
  CHECK(std::filesystem::read_symlink(root + "/link") == "sub/deeper/small.txt");

  CheckOptions co;
  co.read_data = true;
  CHECK(check(*b, co).clean());

  // Copying it again stores nothing new: the destination deduplicates.
  SnapshotCopier again(*a, *b);
  again.copy(snap);
  CHECK(again.stats().blobs_new == 0);
}

TEST_CASE("a copy refuses a source blob that does not verify") {
  TempDir d;
  std::string src_dir = d.path + "/src";
  std::filesystem::create_directories(src_dir);
  write(src_dir + "/f.bin", random_bytes(1 << 20, 9));
  auto a = make_repo(d.path + "/a", "one");
  auto b = make_repo(d.path + "/b", "two");
  BackupOptions bo;
  bo.paths = {src_dir};
  auto snap = load_snapshot(*a, repo::backup(*a, bo).snapshot.id);
  // Flip a byte in the middle of every data pack.
  for (const auto& e : std::filesystem::recursive_directory_iterator(d.path + "/a/data")) {
    if (!e.is_regular_file()) continue;
    auto s = slurp(e.path().string());
    s[s.size() / 2] ^= 1;
    write(e.path().string(), s);
  }
  SnapshotCopier c(*a, *b);
  REQUIRE_THROWS_AS(c.copy(snap), Error);
  CHECK(b->list(FileType::snapshot).empty());
}
