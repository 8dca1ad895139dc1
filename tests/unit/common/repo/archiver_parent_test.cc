// Where a backup's parent comes from (BackupOptions::ParentRule). The parent's
// entries are reused without reading the files, so with `named_only` nothing
// but the named snapshot may serve, and a named one that does not fit is
// reported instead of used.
#include <catch2/catch.hpp>
#include <filesystem>

#include "common/repo/archiver.h"
#include "common/repo/checker.h"
#include "common/repo/snapshot.h"
#include "common/repo/storage/backend.h"
#include "repo_test_util.h"

using namespace cairn;
using namespace cairn::repo;
using namespace cairn::repo::test;
namespace fs = std::filesystem;

namespace {

struct ParentRepo {
  TempDir dir;
  std::unique_ptr<Repository> r;
  std::string src = dir.path + "/src";
  ParentRepo() {
    auto be = make_fs_backend(dir.path + "/repo");
    InitOptions io;
    io.kdf.scrypt.n = 1024;
    Secret s(Secret::Kind::passphrase, "pw");
    Repository::init(*be, s, io);
    r = Repository::open(std::move(be), s);
    r->load_index();
    fs::create_directories(src + "/d");
    write(src + "/a", random_bytes(5000, 1));
    write(src + "/d/b", random_bytes(7000, 2));
  }
  BackupResult backup(BackupOptions::ParentRule rule, const std::string& parent = {}, std::vector<std::string> paths = {}) {
    BackupOptions bo;
    bo.paths = paths.empty() ? std::vector<std::string>{src} : paths;
    bo.threads = 2;
    bo.parent_rule = rule;
    bo.parent = parent;
    return repo::backup(*r, bo);
  }
};

}  // namespace

TEST_CASE("parent rule: search takes the newest snapshot of the same paths, named_only never searches") {
  ParentRepo p;
  BackupResult first = p.backup(BackupOptions::ParentRule::search);
  BackupResult searched = p.backup(BackupOptions::ParentRule::search);
  CHECK(searched.snapshot.parent == first.snapshot.id);
  CHECK(searched.files_unmodified == 2);

  // No parent named: every file is read although a snapshot of these paths exists.
  BackupResult none = p.backup(BackupOptions::ParentRule::named_only);
  CHECK(none.snapshot.parent.empty());
  CHECK(none.files_unmodified == 0);
  CHECK(none.files_new == 2);
  CHECK(none.parent_note.empty());

  // Exactly the named one, even when a newer one of the same paths exists.
  BackupResult named = p.backup(BackupOptions::ParentRule::named_only, first.snapshot.id);
  CHECK(named.snapshot.parent == first.snapshot.id);
  CHECK(named.files_unmodified == 2);
  CHECK(named.parent_note.empty());
}

TEST_CASE("parent rule: a named parent of other paths, missing or malformed is not used, and says why") {
  ParentRepo p;
  fs::create_directories(p.dir.path + "/other");
  write(p.dir.path + "/other/x", random_bytes(100, 3));
  BackupResult other = p.backup(BackupOptions::ParentRule::search, {}, {p.dir.path + "/other"});

  BackupResult r = p.backup(BackupOptions::ParentRule::named_only, other.snapshot.id);
  CHECK(r.snapshot.parent.empty());
  CHECK(r.files_new == 2);
  CHECK(r.parent_note.find("holds other paths") != std::string::npos);

  r = p.backup(BackupOptions::ParentRule::named_only, std::string(64, 'a'));
  CHECK(r.snapshot.parent.empty());
  CHECK(r.parent_note.find("cannot be read") != std::string::npos);

  // Never a path into the repository's files, nor a prefix to resolve.
  for (const std::string& bad : std::vector<std::string>{"../keys/x", other.snapshot.id.substr(0, 8), "latest"}) {
    r = p.backup(BackupOptions::ParentRule::named_only, bad);
    CHECK(r.snapshot.parent.empty());
    CHECK(r.parent_note.find("not a snapshot id") != std::string::npos);
  }
}

// A directory whose tree is more than a MiB of text: its parent's listing is
// read piece by piece, its own text goes out in pieces, and an unchanged
// backup writes nothing but counts the parent's entries. What it writes when
// some entries changed must be, byte for byte, what a backup with no parent
// writes (tree ids are hashes of that text).
TEST_CASE("a large directory against its parent: reused when unchanged, written as without a parent when changed") {
  ParentRepo p;
  const std::string big = p.src + "/big";
  fs::create_directories(big);
  for (int i = 0; i < 6000; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "/f%05d", i);
    if (i % 1500 == 700) {
      fs::create_directories(big + name);
      write(big + name + "/inner", random_bytes(50, uint32_t(i)));
    } else {
      write(big + name, random_bytes(20 + i % 50, uint32_t(i)));
    }
  }
  // The tree of src/big (the root's holds /tmp's metadata, which moves).
  auto tree_of = [&](const BackupResult& b, const std::string& dir) {
    BlobId id = b.snapshot.tree;
    for (const auto& part : fs::path(dir)) {
      if (part == "/") continue;
      Tree t = decode_tree_bytes(p.r->load_blob(id));
      auto it = std::find_if(t.nodes.begin(), t.nodes.end(), [&](const Node& n) { return n.name == part.string(); });
      REQUIRE(it != t.nodes.end());
      REQUIRE(it->subtree);
      id = *it->subtree;
    }
    return id;
  };
  BackupResult first = p.backup(BackupOptions::ParentRule::search);
  REQUIRE(first.files_new == 6000 - 4 + 4 + 2);

  BackupResult again = p.backup(BackupOptions::ParentRule::search);
  CHECK(tree_of(again, big) == tree_of(first, big));
  CHECK(again.stats.blobs_new - first.stats.blobs_new <= 3);  // the repository's counts: the trees above src at most
  CHECK(again.files_unmodified == first.files_new);

  SECTION("a file changed in the middle, one gone before it, one new after it") {
    write(big + "/f03000", random_bytes(99, 1));
    fs::remove(big + "/f01000");
    write(big + "/f04000x", random_bytes(10, 2));
  }
  SECTION("only the directory's own metadata changed") { fs::last_write_time(big, fs::last_write_time(big) + std::chrono::seconds(5)); }
  SECTION("an entry gone at the end") { fs::remove(big + "/f05999"); }
  SECTION("a file changed inside a subdirectory") { write(big + "/f03700/inner", random_bytes(51, 3)); }
  BackupResult changed = p.backup(BackupOptions::ParentRule::search);
  BackupResult fresh = p.backup(BackupOptions::ParentRule::named_only);
  REQUIRE(fresh.files_unmodified == 0);
  CHECK(changed.files_unmodified > 0);
  CHECK(tree_of(changed, big) == tree_of(fresh, big));
  CHECK(tree_of(changed, p.src) == tree_of(fresh, p.src));
  CHECK(tree_of(changed, p.src) != tree_of(first, p.src));
  // Every tree verifies, the large ones read a piece at a time (open_tree, verify_blob).
  CheckOptions co;
  co.read_data = true;
  CheckReport rep = check(*p.r, co);
  for (const auto& pr : rep.problems) INFO(problem_line(pr));
  CHECK(rep.clean());
  CHECK(rep.blobs_verified > 6000);
}
