// The backend conformance suite (conformance.h) against the filesystem
// backend, bare and behind the retry wrapper, and against the stores named by
//   CAIRN_CONFORMANCE_URLS="s3:http://127.0.0.1:P/bucket azure://..."  (space-separated)
//   CAIRN_CONFORMANCE_CREDENTIALS=FILE  (mode 0600, for every URL)
// (tests/integration/test_object_storage.py and test_object_storage_azure.py
// do that with a real SeaweedFS and Azurite). Each section works in a fresh
// directory or under a fresh prefix. CAIRN_CONFORMANCE_EXPECT_EXCLUSIVE=1
// makes a store that ignores If-None-Match a failure instead of a finding.
#include "tests/unit/common/storage/conformance.h"

#include <cstdlib>
#include <filesystem>
#include <random>
#include <sstream>

#include "common/repo/storage/retry.h"

using namespace cairn;
using namespace cairn::repo;

namespace {

std::string random_tag() {
  std::random_device rd;
  std::ostringstream s;
  s << std::hex << rd() << rd();
  return s.str();
}

// Directories made for one run of a test case, removed when it ends.
struct TempDirs {
  std::vector<std::filesystem::path> dirs;
  std::string fresh() {
    dirs.push_back(std::filesystem::temp_directory_path() / ("cairn-conformance-" + random_tag()));
    return dirs.back().string();
  }
  ~TempDirs() {
    std::error_code ec;
    for (const auto& d : dirs) std::filesystem::remove_all(d, ec);
  }
};

std::vector<std::string> conformance_urls() {
  std::vector<std::string> out;
  if (const char* urls = std::getenv("CAIRN_CONFORMANCE_URLS")) {
    std::istringstream in(urls);
    std::string u;
    while (in >> u) out.push_back(u);
  }
  return out;
}

}  // namespace

TEST_CASE("conformance: the filesystem backend") {
  TempDirs tmp;
  conformance::run([&] { return make_fs_backend(tmp.fresh()); });
}

TEST_CASE("conformance: the filesystem backend behind the retry wrapper") {
  TempDirs tmp;
  conformance::run([&] { return storage::make_retrying(make_fs_backend(tmp.fresh())); });
}

TEST_CASE("conformance: the stores in CAIRN_CONFORMANCE_URLS") {
  const std::vector<std::string> urls = conformance_urls();
  if (urls.empty()) return;  // none named: the filesystem cases above are the suite
  const std::string url = GENERATE_COPY(from_range(urls));
  StorageOptions opt;
  if (const char* c = std::getenv("CAIRN_CONFORMANCE_CREDENTIALS")) opt.credentials_file = c;
  conformance::run([&] { return open_backend(url + "/conformance-" + random_tag(), opt); },
                   {.expect_exclusive = std::getenv("CAIRN_CONFORMANCE_EXPECT_EXCLUSIVE") != nullptr});
}

TEST_CASE("filesystem backend: a repository whose directory is gone is not made again by a write") {
  // A repository on a disk that is not mounted: a lock, a pack or a claim
  // written then must fail, not grow a tree on the mount point that would
  // hide the repository when the disk comes back.
  TempDirs tmp;
  const std::filesystem::path root = tmp.fresh();
  auto be = make_fs_backend(root.string());
  be->create();
  const Bytes cfg{1, 2, 3};
  be->save(Handle{FileType::config, ""}, cfg);
  std::filesystem::remove_all(root / "claims");
  CHECK(be->create_exclusive(Handle{FileType::claim, std::string(64, 'a')}, cfg));  // a missing type dir is made
  std::filesystem::remove_all(root / "data" / "ab");
  be->save(Handle{FileType::pack, "ab" + std::string(62, '0')}, cfg);
  const std::filesystem::path away = root.string() + ".away";
  tmp.dirs.push_back(away);
  std::filesystem::rename(root, away);
  for (auto h : {Handle{FileType::lock, std::string(64, 'b')}, Handle{FileType::pack, "cd" + std::string(62, '0')}}) {
    try {
      be->save(h, cfg);
      FAIL("a write into a missing repository succeeded");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::not_found);
      const std::string what = e.what();
      CHECK(what.find("no repository at") != std::string::npos);
      CHECK(what.find("mounted") != std::string::npos);
    }
  }
  CHECK_THROWS_AS(be->create_exclusive(Handle{FileType::claim, std::string(64, 'c')}, cfg), Error);
  CHECK_FALSE(std::filesystem::exists(root));
}
