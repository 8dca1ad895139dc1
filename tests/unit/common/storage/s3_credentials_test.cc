// Where the S3 backend's keys come from (common/repo/storage/s3/credentials.h):
// the order of the sources, a file rewritten while a backup runs, and what is
// refused. The instance metadata service is tested against a local stand-in in
// tests/integration/test_object_storage.py.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "common/repo/storage/s3/credentials.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::repo;
using namespace cairn::repo::storage;

namespace {

struct Env {
  // Only the variables named here, for one test.
  Env() {
    for (const char* v : {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_SHARED_CREDENTIALS_FILE"})
      ::unsetenv(v);
    ::setenv("AWS_EC2_METADATA_DISABLED", "true", 1);
    dir = std::filesystem::temp_directory_path() / ("cairn-creds-" + std::to_string(::getpid()) + "-" + std::to_string(n++));
    std::filesystem::create_directories(dir);
    if (const char* h = std::getenv("HOME")) home = h;
    ::setenv("HOME", dir.c_str(), 1);  // no ~/.aws/credentials of the machine's
  }
  ~Env() {
    std::filesystem::remove_all(dir);
    if (!home.empty()) ::setenv("HOME", home.c_str(), 1);
    for (const char* v : {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE"}) ::unsetenv(v);
  }
  std::string write(const std::string& name, const std::string& text, mode_t mode = 0600) {
    auto p = (dir / name).string();
    std::ofstream(p, std::ios::trunc) << text;
    ::chmod(p.c_str(), mode);
    return p;
  }
  std::filesystem::path dir;
  std::string home;
  static inline int n = 0;
};

}  // namespace

TEST_CASE("s3 credentials: the file first, then the environment, then the shared file") {
  Env e;
  HttpClient http;
  ::setenv("AWS_ACCESS_KEY_ID", "ENVKEY", 1);
  ::setenv("AWS_SECRET_ACCESS_KEY", "envsecret", 1);
  auto shared = e.write("shared", "[default]\naws_access_key_id = SHAREDKEY\naws_secret_access_key = sharedsecret\n");
  ::setenv("AWS_SHARED_CREDENTIALS_FILE", shared.c_str(), 1);
  auto file = e.write("cred", "# cairn\naccess_key_id=FILEKEY\nsecret_access_key=filesecret\nregion=eu-west-1\n");
  {
    s3::Credentials c({.credentials_file = file});
    CHECK(c.get(http).access_key_id == "FILEKEY");
    CHECK(c.describe() == "credentials file '" + file + "'");
    CHECK(c.setting("region") == "eu-west-1");
  }
  {
    s3::Credentials c({});
    CHECK(c.get(http).access_key_id == "ENVKEY");
    CHECK(c.describe().find("environment") != std::string::npos);
  }
  ::unsetenv("AWS_ACCESS_KEY_ID");
  {
    s3::Credentials c({});
    auto k = c.get(http);
    CHECK(k.access_key_id == "SHAREDKEY");
    CHECK(c.describe().find("profile 'default'") != std::string::npos);
    // describe() never holds a secret.
    CHECK(c.describe().find("sharedsecret") == std::string::npos);
  }
}

TEST_CASE("s3 credentials: a file rewritten during a long backup is read again") {
  Env e;
  HttpClient http;
  auto file = e.write("cred", "access_key_id=OLDKEY\nsecret_access_key=old\n");
  s3::Credentials c({.credentials_file = file});
  CHECK(c.get(http).access_key_id == "OLDKEY");
  e.write("cred", "access_key_id=NEWKEY\nsecret_access_key=new-and-longer\n");
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));  // checked at most once a second
  auto k = c.get(http);
  CHECK(k.access_key_id == "NEWKEY");
  CHECK(k.secret_access_key == "new-and-longer");
}

TEST_CASE("s3 credentials: refused sources say why, without the secret") {
  Env e;
  HttpClient http;
  auto open = e.write("open", "access_key_id=K\nsecret_access_key=topsecret\n", 0644);
  try {
    s3::Credentials({.credentials_file = open}).get(http);
    FAIL("a credentials file others can read was used");
  } catch (const Error& err) {
    CHECK(std::string(err.what()).find("readable by group or others") != std::string::npos);
    CHECK(std::string(err.what()).find("topsecret") == std::string::npos);
  }
  auto half = e.write("half", "access_key_id=K\n");
  CHECK_THROWS_WITH(s3::Credentials({.credentials_file = half}).get(http), Catch::Contains("only one of"));
  auto junk = e.write("junk", "this is not a key\n");
  CHECK_THROWS_WITH(s3::Credentials({.credentials_file = junk}).get(http), Catch::Contains("line 1 is not KEY=VALUE"));
  try {
    s3::Credentials({}).get(http);
    FAIL("credentials were found where there are none");
  } catch (const Error& err) {
    CHECK(err.code() == Errc::denied);
    CHECK(std::string(err.what()).find("no S3 credentials found") != std::string::npos);
  }
}
