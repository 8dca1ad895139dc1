// Mirror pruning after a restore: removes what the snapshot does not hold,
// never through a symbolic link, never the roots or the target.
#include "agent/drivers/files/mirror.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "agent_fixture.h"

using namespace cairn::agent::files;
using namespace cairn::agent::test;
namespace fs = std::filesystem;

namespace {

bool present(const std::string& p) { return fs::symlink_status(p).type() != fs::file_type::not_found; }

}  // namespace

TEST_CASE("mirror: entries the snapshot does not hold go, links are removed and never followed") {
  TempDir d;
  std::string root = d.file("t/data");
  write_text(root + "/kept.txt", "k");
  write_text(root + "/added.txt", "a");
  write_text(root + "/skip.tmp", "excluded, not part of the component");
  write_text(root + "/newdir/deep/f", "x");
  write_text(root + "/sub/kept2", "k");
  write_text(root + "/sub/added2", "a");
  write_text(d.file("outside/precious"), "p");
  fs::create_directory_symlink(d.file("outside"), root + "/link-out");
  fs::create_directory_symlink(d.file("outside"), root + "/sub/link-in");

  // Snapshot paths are absolute; they are mirrored below the target.
  std::string snap_root = "/data";
  std::unordered_set<std::string> keep = {"/data", "/data/kept.txt", "/data/sub", "/data/sub/kept2"};
  MirrorSpec s;
  s.target = d.file("t");
  s.roots = {snap_root};
  s.keep = &keep;
  s.excludes = {"*.tmp"};
  MirrorResult r = mirror_prune(s);
  INFO((r.problems.empty() ? "" : r.problems[0].path + ": " + r.problems[0].reason));
  REQUIRE(r.problems.empty());
  REQUIRE(present(root + "/kept.txt"));
  REQUIRE(present(root + "/sub/kept2"));
  REQUIRE(present(root + "/skip.tmp"));
  for (const char* gone : {"/added.txt", "/newdir", "/sub/added2", "/link-out", "/sub/link-in"}) REQUIRE_FALSE(present(root + gone));
  REQUIRE(read_text(d.file("outside/precious")) == "p");
  REQUIRE(r.removed == 7);  // added.txt, newdir/deep/f, newdir/deep, newdir, sub/added2 and the two links
}

TEST_CASE("mirror: a root reached through a link is not entered, and a root is never removed") {
  TempDir d;
  write_text(d.file("outside/precious"), "p");
  fs::create_directories(d.file("t"));
  fs::create_directory_symlink(d.file("outside"), d.file("t/data"));
  std::unordered_set<std::string> keep = {"/data"};
  MirrorSpec s;
  s.target = d.file("t");
  s.roots = {"/data"};
  s.keep = &keep;
  MirrorResult r = mirror_prune(s);
  REQUIRE(r.problems.size() == 1);
  REQUIRE(r.problems[0].reason.find("symbolic link") != std::string::npos);
  REQUIRE(read_text(d.file("outside/precious")) == "p");
  REQUIRE(present(d.file("t/data")));

  // An empty keep set still leaves the root directory itself.
  write_text(d.file("t2/data/f"), "f");
  s.target = d.file("t2");
  keep.clear();
  r = mirror_prune(s);
  REQUIRE(r.problems.empty());
  REQUIRE(fs::is_directory(d.file("t2/data")));
  REQUIRE_FALSE(present(d.file("t2/data/f")));
}
