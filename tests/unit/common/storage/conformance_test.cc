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
