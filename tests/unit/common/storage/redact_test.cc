// A secret written into a repository URL never comes back in a message.
#include "common/repo/storage/redact.h"

#include <catch2/catch.hpp>

#include "common/repo/storage/backend.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::repo;

TEST_CASE("a location is shown with its userinfo, secret query values and fragment redacted", "[redact]") {
  CHECK(redact_location("s3:https://AKID:SECRET@host:9000/bucket/prefix") == "s3:https://***@host:9000/bucket/prefix");
  CHECK(redact_location("s3://AKID:SECRET@bucket/prefix") == "s3://***@bucket/prefix");
  // A secret key holding '/' ends the authority early: still nothing of it is shown.
  CHECK(redact_location("s3:https://AKID:ab/cd+ef@host/bucket") == "s3:https://***@host/bucket");
  CHECK(location_carries_secret("s3:https://AKID:ab/cd+ef@host/bucket"));
  CHECK(redact_location("azure:http://acct:KEY@127.0.0.1:10000/acct/c") == "azure:http://***@127.0.0.1:10000/acct/c");
  CHECK(redact_location("azure://acct/container/p?sv=2024-01-01&ss=b&sp=rl&se=2030-01-01&sig=SECRET%2Fx") ==
        "azure://acct/container/p?sv=2024-01-01&ss=b&sp=rl&se=2030-01-01&sig=***");
  CHECK(redact_location("s3:https://host/b?X-Amz-Credential=AKID&X-Amz-Signature=SECRET&X-Amz-Security-Token=TOK&x=1") ==
        "s3:https://host/b?X-Amz-Credential=***&X-Amz-Signature=***&X-Amz-Security-Token=***&x=1");
  CHECK(redact_location("s3:https://host/b?access_key=A&secret=B&password=C&token=D") ==
        "s3:https://host/b?access_key=***&secret=***&password=***&token=***");
  CHECK(redact_location("s3:https://host/b?SECRETONLY") == "s3:https://host/b?***");
  CHECK(redact_location("s3:https://host/b#SECRET") == "s3:https://host/b#***");
  CHECK(redact_location("s3:https://u:p@host?sig=S#F") == "s3:https://***@host?sig=***#***");
  // Nothing to hide: unchanged, and paths are never touched.
  CHECK(redact_location("s3:https://host:9000/bucket/prefix") == "s3:https://host:9000/bucket/prefix");
  CHECK(redact_location("/srv/backup/user@host?x=1") == "/srv/backup/user@host?x=1");
  CHECK(redact_location("relative/dir") == "relative/dir");

  CHECK(location_carries_secret("s3:https://AKID:SECRET@host/bucket"));
  CHECK(location_carries_secret("s3://AKID:SECRET@bucket"));
  CHECK(location_carries_secret("azure://acct/c?sig=x"));
  CHECK(location_carries_secret("s3:https://host/b#frag"));
  CHECK_FALSE(location_carries_secret("s3:https://host:9000/bucket/prefix"));
  CHECK_FALSE(location_carries_secret("azure://acct/container/prefix"));
  CHECK_FALSE(location_carries_secret("/srv/user@host"));
}

TEST_CASE("a URL carrying a secret is refused without printing the secret", "[redact]") {
  for (const std::string url : {"s3:https://AKIDXYZ:SECRETXYZ@127.0.0.1:1/bucket/p", "s3://AKIDXYZ:SECRETXYZ@bucket/p",
                                "s3:https://127.0.0.1:1/bucket/p?X-Amz-Signature=SECRETXYZ", "azure://acct/container/p?sv=1&sig=SECRETXYZ",
                                "azure:http://acct:SECRETXYZ@127.0.0.1:1/acct/container", "azure://AKIDXYZ:SECRETXYZ@acct/container",
                                "https://AKIDXYZ:SECRETXYZ@host/x", "s3:https://AKIDXYZ:SECRET/XYZ@127.0.0.1:1/bucket",
                                "azure:http://acct:SECRET/XYZ+@127.0.0.1:1/acct/c"}) {
    CAPTURE(url);
    try {
      open_backend(url, {.credentials_file = "/nonexistent", .cache_dir = "off"});
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == Errc::invalid_input);
      std::string what = e.what();
      CHECK(what.find("SECRETXYZ") == std::string::npos);
      CHECK(what.find("SECRET/XYZ") == std::string::npos);
      CHECK(what.find("AKIDXYZ") == std::string::npos);
      CHECK(what.find("***") != std::string::npos);
    }
  }
}
