// The data directory: private, and held by one controller at a time.
#include "controller/data_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "common/util/error.h"
#include "common/util/fs.h"
#include "controller/catalog/catalog_fixture.h"

using namespace cairn::controller;

namespace {

unsigned mode_of(const std::string& path) {
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  return unsigned(st.st_mode & 07777);
}

}  // namespace

TEST_CASE("a data directory is held by one taker at a time, and the refusal names the holder") {
  cairn::catalog::test::TempDir tmp;
  std::string dir = tmp.file("data");
  {
    auto held = DataDir::take(dir);
    CHECK(mode_of(dir) == 0700);
    CHECK(mode_of(dir + "/controller.lock") == 0600);
    std::ifstream in(dir + "/controller.lock");
    std::stringstream ss;
    ss << in.rdbuf();
    CHECK_THAT(ss.str(), Catch::StartsWith("pid " + std::to_string(::getpid()) + "\nhost " + cairn::hostname() + "\nsince "));
    // flock belongs to the open file: a second take conflicts even in this process.
    try {
      DataDir::take(dir);
      FAIL("a second take succeeded");
    } catch (const cairn::Error& e) {
      CHECK(e.code() == cairn::Errc::locked);
      CHECK_THAT(e.what(), Catch::Contains("data directory '" + dir + "' is in use by cairn-controller pid " + std::to_string(::getpid()) +
                                           " on host " + cairn::hostname() + " since "));
      CHECK_THAT(e.what(), Catch::Contains("stop it first"));
    }
  }
  // Released with its holder.
  CHECK_NOTHROW(DataDir::take(dir));
}

TEST_CASE("a data directory open to group or others is made private") {
  cairn::catalog::test::TempDir tmp;
  std::string dir = tmp.file("data");
  REQUIRE(::mkdir(dir.c_str(), 0777) == 0);
  REQUIRE(::chmod(dir.c_str(), 0755) == 0);
  auto held = DataDir::take(dir);
  CHECK(mode_of(dir) == 0700);
}
