// Where a backup's parent comes from (BackupOptions::ParentRule). The parent's
// entries are reused without reading the files, so with `named_only` nothing
// but the named snapshot may serve, and a named one that does not fit is
// reported instead of used.
#include <catch2/catch.hpp>

#include <filesystem>

#include "common/repo/archiver.h"
#include "common/repo/storage/backend.h"
#include "common/repo/snapshot.h"
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
