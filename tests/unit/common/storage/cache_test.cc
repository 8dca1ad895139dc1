// The local cache of a remote repository is bounded (storage/cache.h): each
// open trims it to CAIRN_CACHE_MAX, the entries used longest ago first, trees
// before the index files and snapshots every open reads.
#include "common/repo/storage/cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

using cairn::repo::storage::ObjectCache;
namespace fs = std::filesystem;

namespace {

struct CacheDir {
  fs::path dir;
  CacheDir() {
    static int n = 0;
    dir = fs::temp_directory_path() / ("cairn-cache-test-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    fs::create_directories(dir);
  }
  ~CacheDir() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

std::string name(int i) {
  char b[65];
  std::snprintf(b, sizeof b, "%064x", i);
  return b;
}

// Sets an entry's last use to `secs` seconds after the epoch.
void used_at(const fs::path& p, int64_t secs) {
  struct timespec t[2] = {{secs, 0}, {secs, 0}};
  REQUIRE(::utimensat(AT_FDCWD, p.c_str(), t, 0) == 0);
}

}  // namespace

TEST_CASE("cache: trimmed to its bound, trees used longest ago first, index files and snapshots last") {
  CacheDir d;
  ObjectCache c(d.dir.string());
  const std::string fp = "e1";  // each entry file: "cairn-cache 2 e1\n" (17 bytes) and its bytes, 1 KiB in all
  std::vector<uint8_t> kib(1024 - 17, 7);
  for (int i = 0; i < 10; ++i) {
    c.put("trees", name(i), kib, fp);
    used_at(d.dir / "trees" / name(i), 1000 + i);  // tree 0 used longest ago
  }
  c.put("index", name(100), kib, fp);
  c.put("snapshots", name(200), kib, fp);
  used_at(d.dir / "index" / name(100), 10);  // older than every tree: still kept longer
  used_at(d.dir / "snapshots" / name(200), 10);

  CHECK(c.trim(12 * 1024) == 0);  // within the bound: nothing goes
  CHECK(c.trim(8 * 1024) == 4 * 1024);
  for (int i = 0; i < 10; ++i) CHECK(fs::exists(d.dir / "trees" / name(i)) == (i >= 4));
  CHECK(fs::exists(d.dir / "index" / name(100)));
  CHECK(fs::exists(d.dir / "snapshots" / name(200)));

  // A hit makes an entry the last to go.
  REQUIRE(c.get("trees", name(4), fp));
  CHECK(c.trim(5 * 1024) == 3 * 1024);
  CHECK(fs::exists(d.dir / "trees" / name(4)));
  for (int i = 5; i < 8; ++i) CHECK_FALSE(fs::exists(d.dir / "trees" / name(i)));
  CHECK(fs::exists(d.dir / "trees" / name(8)));

  // Only when the trees are gone do the index files and snapshots go.
  CHECK(c.trim(1024) == 4 * 1024);
  CHECK(fs::is_empty(d.dir / "trees"));
  CHECK(int(fs::exists(d.dir / "index" / name(100))) + int(fs::exists(d.dir / "snapshots" / name(200))) == 1);
}

TEST_CASE("cache: an entry is believed only for the fingerprint it was put with") {
  CacheDir d;
  ObjectCache c(d.dir.string());
  std::vector<uint8_t> bytes{1, 2, 3};
  c.put("index", name(1), bytes, "3:etag-one");
  auto hit = c.get("index", name(1), "3:etag-one");
  REQUIRE(hit);
  CHECK(*hit == bytes);
  // The store now holds other bytes under the name (another entity tag): a miss, and the entry goes.
  CHECK_FALSE(c.get("index", name(1), "3:etag-two"));
  CHECK_FALSE(fs::exists(d.dir / "index" / name(1)));
  CHECK_FALSE(c.get("index", name(1), "3:etag-one"));
  // Nothing is put or believed without a fingerprint (a store that gives none).
  c.put("index", name(2), bytes, "");
  CHECK_FALSE(fs::exists(d.dir / "index" / name(2)));
  CHECK_FALSE(c.get("index", name(2), ""));
  // An entry of an older cache's format (no fingerprint line) is never believed.
  fs::create_directories(d.dir / "snapshots");
  {
    std::FILE* f = std::fopen((d.dir / "snapshots" / name(3)).c_str(), "wb");
    std::fwrite(bytes.data(), 1, bytes.size(), f);
    std::fclose(f);
  }
  CHECK_FALSE(c.get("snapshots", name(3), "3:etag-one"));
}

TEST_CASE("cache: the bound is read from CAIRN_CACHE_MAX, with a suffix, and a bad value is the default") {
  auto with = [](const char* v) {
    if (v)
      ::setenv("CAIRN_CACHE_MAX", v, 1);
    else
      ::unsetenv("CAIRN_CACHE_MAX");
    auto got = cairn::repo::storage::default_cache_max();
    ::unsetenv("CAIRN_CACHE_MAX");
    return got;
  };
  CHECK(with(nullptr) == (2ull << 30));
  CHECK(with("1048576") == 1048576);
  CHECK(with("512K") == 512ull << 10);
  CHECK(with("64M") == 64ull << 20);
  CHECK(with("3g") == 3ull << 30);
  CHECK(with("lots") == (2ull << 30));
  CHECK(with("12X") == (2ull << 30));
  CHECK(with("99999999999999999999G") == (2ull << 30));
}
