// The path and time helpers the drivers share (common/util/fs.h).
#include "common/util/fs.h"

#include <catch2/catch.hpp>
#include <cerrno>
#include <regex>
#include <string>

#include "common/util/error.h"

using namespace cairn;

TEST_CASE("a configured path must be absolute and without a '..' component") {
  for (const char* ok : {"/", "/etc", "/var/lib/etcd/", "/a/..b/c", "/a/b../c", "/a/.../c", "/a/./b"}) {
    INFO(ok);
    CHECK(is_clean_absolute_path(ok));
  }
  for (const char* bad : {"", "etc", "./etc", "../etc", "/..", "/a/..", "/a/../b", "/a/b/../../c", "//..//x"}) {
    INFO(bad);
    CHECK_FALSE(is_clean_absolute_path(bad));
  }
}

TEST_CASE("utc_stamp names a moment in UTC, sortable") {
  std::string s = utc_stamp();
  CHECK(std::regex_match(s, std::regex("20[0-9]{2}[01][0-9][0-3][0-9]T[0-2][0-9][0-5][0-9][0-6][0-9]Z")));
}

TEST_CASE("a full disk names the file system it happened on, not the repository's", "[fs]") {
  // A restore target that is full said "free space on the repository's disk" (issue 32).
  try {
    cairn::throw_errno("write", "/srv/restore-target/etcd/member/snap/db", ENOSPC);
    FAIL("no throw");
  } catch (const cairn::Error& e) {
    CHECK(e.code() == cairn::Errc::no_space);
    std::string m = e.what();
    CHECK(m.find("free space on the disk that holds '/srv/restore-target/etcd/member/snap/db'") != std::string::npos);
    CHECK(m.find("repository") == std::string::npos);
  }
}
