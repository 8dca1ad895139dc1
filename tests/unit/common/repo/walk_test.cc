// Tree walks over hostile snapshots: a tree bomb (a few tree blobs sharing subtrees
// that describe 2^41 paths) and a chain of 50,000 nested directories, built directly
// as tree blobs. Every walk must end quickly with a clear error, or succeed where it
// only needs the set of reachable blobs; none may recurse on the input's depth.
#include "common/repo/walk.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>

#include "common/repo/archiver.h"
#include "common/repo/checker.h"
#include "common/repo/keys.h"
#include "common/repo/prune.h"
#include "common/repo/restorer.h"
#include "common/repo/snapshot.h"
#include "common/repo/tree.h"
#include "common/util/error.h"
#include "repo_test_util.h"

using namespace cairn;
using namespace cairn::repo;
using namespace cairn::repo::test;

namespace {

struct Repo {
  TempDir dir;
  std::unique_ptr<Repository> r;
  explicit Repo(const std::string& at = "") {
    auto be = make_fs_backend(at.empty() ? dir.path + "/repo" : at);
    InitOptions io;
    io.kdf.scrypt.n = 1024;
    Secret s(Secret::Kind::passphrase, "pw");
    Repository::init(*be, s, io);
    r = Repository::open(std::move(be), s);
    r->load_index();
  }
  ~Repo() {
    // Restored trees deeper than PATH_MAX: rm removes them at any depth.
    std::system(("chmod -R u+rwx '" + dir.path + "' 2>/dev/null; rm -rf '" + dir.path + "/out'").c_str());
  }
  BlobId tree(const Tree& t) {
    std::string b = encode_tree_bytes(t);
    BlobId id;
    r->save_blob(BlobType::tree, as_bytes(b), id);
    return id;
  }
  Snapshot snapshot(const BlobId& root) {
    r->flush();
    Snapshot s;
    s.time = now_rfc3339();
    s.hostname = "hostile";
    s.paths = {"/x"};
    s.tree = root;
    save_snapshot(*r, s);
    return s;
  }
};

Node dir_node(const std::string& name, const BlobId& sub) {
  Node n;
  n.name = name;
  n.type = NodeType::dir;
  n.mode = 0755;
  n.subtree = sub;
  return n;
}

// A file with real content, so prune and check have a data blob to account for.
Tree leaf(Repo& repo) {
  Bytes data = random_bytes(1000, 7);
  BlobId id;
  repo.r->save_blob(BlobType::data, data, id);
  Node f;
  f.name = "f";
  f.type = NodeType::file;
  f.mode = 0644;
  f.size = data.size();
  f.content = {id};
  Tree t;
  t.nodes.push_back(f);
  return t;
}

// 41 tree blobs: tree i names tree i-1 twice ('a' and 'b'), so the root describes
// 3 * 2^40 - 2 paths.
Snapshot tree_bomb(Repo& repo) {
  BlobId id = repo.tree(leaf(repo));
  for (int i = 0; i < 40; ++i) {
    Tree t;
    t.nodes = {dir_node("a", id), dir_node("b", id)};
    id = repo.tree(t);
  }
  return repo.snapshot(id);
}

// Directories nested levels deep, one chain of distinct tree blobs.
Snapshot deep_chain(Repo& repo, size_t levels) {
  BlobId id = repo.tree(leaf(repo));
  for (size_t i = 0; i < levels; ++i) {
    Tree t;
    t.nodes = {dir_node("d", id)};
    id = repo.tree(t);
  }
  return repo.snapshot(id);
}

struct Counter : TreeVisitor {
  uint64_t entries = 0;
  size_t deepest = 0;
  bool enter(const std::string&, Node&, size_t depth) override {
    ++entries;
    deepest = std::max(deepest, depth);
    return true;
  }
};

// The message of the Error f throws, or "" when it throws nothing.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

// A walk that expanded the bomb (2^41 paths) would not end: the sections
// assert the bounded work itself (the entry bound, each tree read once), and
// ctest's limit fails a test that hangs. No wall-clock bound here: speed is
// for benchmarks (a loaded machine once took 64 s under the sanitizers).
TEST_CASE("a tree bomb ends every walk quickly with a clear error", "[walk]") {
  Repo repo;
  Snapshot s = tree_bomb(repo);

  SECTION("ls: the walk stops past its entry bound, naming the snapshot and the way out") {
    Counter c;
    try {
      walk_snapshot(*repo.r, s, c, {.max_entries = 200000});
      FAIL("the walk of a tree bomb ended without an error");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::unsupported);
      CHECK_THAT(e.what(),
                 Catch::Contains("snapshot '" + s.id.substr(0, 8) + "'") && Catch::Contains("200000") && Catch::Contains("--max-entries"));
    }
    CHECK(c.entries == 200000);
  }
  SECTION("ls with the default bound: the whole snapshot is counted once the walk is large, and refused at once") {
    Counter c;
    std::string why = error_of([&] { walk_snapshot(*repo.r, s, c); });
    CHECK_THAT(
        why, Catch::Contains("describes " + std::to_string(3 * (uint64_t(1) << 40) - 2) + " entries") && Catch::Contains("--max-entries"));
    CHECK(c.entries == kShapeCheckEntries - 1);  // the count is taken before the next entry is entered
  }
  SECTION("restore: refused before anything is written, by the entry bound and by the memory bound") {
    RestoreOptions ro;
    ro.target = repo.dir.path + "/out";
    ro.max_entries = 200000;
    CHECK_THAT(error_of([&] { restore(*repo.r, s.id, ro); }), Catch::Contains("--max-entries"));
    ro.max_entries = kMaxWalkEntries;
    ro.max_plan_bytes = 16u << 20;
    CHECK_THAT(error_of([&] { restore(*repo.r, s.id, ro); }), Catch::Contains("needs more than 16 MiB") && Catch::Contains("--include"));
    CHECK(access(ro.target.c_str(), F_OK) != 0);
  }
  SECTION("restore: the default memory bound holds the plan well below what the bomb describes") {
    // Bounded by kMaxRestorePlanBytes: this only checks the bound is there, with a
    // smaller one so the test stays quick.
    RestoreOptions ro;
    ro.target = repo.dir.path + "/out";
    ro.max_plan_bytes = 64u << 20;
    CHECK_THROWS_AS(restore(*repo.r, s.id, ro), Error);
  }
  SECTION("check: each tree is read once; the snapshot is reported as larger than ls and restore walk") {
    CheckReport rep = check(*repo.r);
    CHECK(rep.trees == 41);
    CHECK(rep.errors() == 0);
    REQUIRE(rep.warnings() == 1);
    CHECK(rep.problems[0].kind == "snapshot_too_large");
    CHECK_THAT(rep.problems[0].message, Catch::Contains(s.id.substr(0, 8)) && Catch::Contains("tree bomb"));
  }
  SECTION("check: naming the users of a lost blob does not expand the bomb") {
    // Drop the data blob's pack: every one of the 2^41 paths uses it.
    std::string pack = id_hex(repo.r->index().lookup(leaf(repo).nodes[0].content[0])->pack);
    std::filesystem::remove(repo.dir.path + "/repo/data/" + pack.substr(0, 2) + "/" + pack);
    CheckReport rep = check(*repo.r);
    CHECK(rep.errors() >= 1);
    bool named = false;
    for (const auto& p : rep.problems)
      if (!p.paths.empty()) named = p.paths.size() == kMaxPathsPerProblem && p.paths_omitted > 0;
    CHECK(named);
  }
  SECTION("prune: visits each tree once and keeps what the snapshot needs") {
    PruneResult res = prune(*repo.r, {});
    CHECK(res.snapshots == 1);
    CHECK(check(*repo.r).errors() == 0);
  }
}

TEST_CASE("a snapshot 50,000 directories deep gives the depth error, not a crash", "[walk]") {
  // Built once for every section (50,001 tree blobs); prune, the only one that
  // writes, keeps it whole.
  static Repo repo;
  static Snapshot s = deep_chain(repo, 50000);

  SECTION("ls") {
    Counter c;
    try {
      walk_snapshot(*repo.r, s, c);
      FAIL("the walk of a 50,000-deep tree ended without an error");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::corrupt);
      CHECK_THAT(e.what(),
                 Catch::Contains("nested deeper than " + std::to_string(kMaxTreeDepth) + " levels") && Catch::Contains(s.id.substr(0, 8)));
    }
    CHECK(c.deepest == kMaxTreeDepth);
  }
  SECTION("check") {
    CheckReport rep = check(*repo.r);
    CHECK(rep.trees == 50001);
    REQUIRE(rep.errors() == 1);
    CHECK(rep.problems[0].kind == "tree_too_deep");
    CHECK_THAT(rep.problems[0].message, Catch::Contains(std::to_string(kMaxTreeDepth)));
  }
  SECTION("restore: what lies above the limit is restored (through paths longer than PATH_MAX), the rest is named") {
    RestoreOptions ro;
    ro.target = repo.dir.path + "/out";
    RestoreResult res = restore(*repo.r, s.id, ro);
    REQUIRE(res.failures.size() == 1);
    CHECK_THAT(res.failures[0].reason, Catch::Contains("deeper than " + std::to_string(kMaxTreeDepth)));
    CHECK(res.dirs_restored == kMaxTreeDepth);
    CHECK(std::count(res.failures[0].path.begin(), res.failures[0].path.end(), '/') == long(kMaxTreeDepth));
  }
  SECTION("prune") {
    PruneResult res = prune(*repo.r, {});
    CHECK(res.snapshots == 1);
  }
}

TEST_CASE("a tree exactly at the depth limit walks, restores and checks", "[walk]") {
  Repo repo;
  Snapshot s = deep_chain(repo, kMaxTreeDepth - 1);  // the file lies at depth kMaxTreeDepth
  Counter c;
  walk_snapshot(*repo.r, s, c);
  CHECK(c.deepest == kMaxTreeDepth);
  CHECK(check(*repo.r).errors() == 0);
  RestoreOptions ro;
  ro.target = repo.dir.path + "/out";
  RestoreResult res = restore(*repo.r, s.id, ro);
  CHECK(res.failures.empty());
  CHECK(res.files_restored == 1);
}

TEST_CASE("tree shapes count a shared subtree without walking it again", "[walk]") {
  Repo repo;
  Snapshot s = tree_bomb(repo);
  size_t loads = 0;
  TreeShapes shapes([&](const BlobId& id) -> std::optional<Tree> {
    ++loads;
    return decode_tree_bytes(repo.r->load_blob(id));
  });
  TreeShape sh = shapes.of(s.tree);
  CHECK(loads == 41);
  CHECK(sh.height == 41);
  CHECK(sh.entries == (uint64_t(1) << 41) - 2 + (uint64_t(1) << 40));  // 2+4+...+2^40 directories, 2^40 files
}

// Not run by default: writes a repository holding both hostile snapshots to
// $CAIRN_HOSTILE_REPO (passphrase 'pw'), to try the commands on them by hand
// ('cairnctl repo ls|restore|check|prune') or to seed a fuzzer's corpus.
TEST_CASE("write a repository with a tree bomb and a 50,000-deep snapshot", "[.][hostile-repo]") {
  const char* at = std::getenv("CAIRN_HOSTILE_REPO");
  REQUIRE(at != nullptr);
  Repo repo(at);
  Snapshot bomb = tree_bomb(repo), deep = deep_chain(repo, 50000);
  std::printf("tree bomb: %s\n50,000 deep: %s\n", bomb.id.c_str(), deep.id.c_str());
}
