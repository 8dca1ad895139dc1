// Azure Shared Key signing (common/repo/storage/azure/shared_key.h) for fixed
// requests, and connection-string parsing. The expected strings-to-sign follow
// learn.microsoft.com "Authorize with Shared Key" (Blob service, version
// 2015-02-21 and later); the expected signatures were computed once,
// independently of this code, with Python:
//   base64.b64encode(hmac.new(base64.b64decode(KEY), STS.encode(), hashlib.sha256).digest())
// where KEY is Azurite's published devstoreaccount1 key and STS the string below.
// tests/integration/test_object_storage_azure.py checks the same code against Azurite.
#include <catch2/catch.hpp>

#include "common/repo/storage/azure/shared_key.h"
#include "common/util/encoding.h"
#include "common/util/error.h"

using namespace cairn;
using namespace cairn::repo::storage::azure;

namespace {

// Azurite's well-known development key (published in its README; not a secret).
const char* kDevKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

std::string dev_key() {
  Bytes k;
  REQUIRE(from_base64(kDevKey, k));
  return std::string(k.begin(), k.end());
}

}  // namespace

TEST_CASE("azure shared key: a conditional Put Blob, path-style (the account twice in the resource)") {
  SharedKeyRequest r{.method = "PUT",
                     .account = "devstoreaccount1",
                     .path = "/devstoreaccount1/cairn/repo/locks/abc",
                     .query = {},
                     .headers = {{"x-ms-version", "2021-08-06"},
                                 {"X-MS-Date", "Thu, 26 Nov 2026 22:47:14 GMT"},
                                 {"If-None-Match", "*"},
                                 {"x-ms-blob-type", " BlockBlob "},
                                 {"Accept", "*/*"}},  // not signed
                     .content_length = 11};
  std::string want =
      "PUT\n\n\n11\n\n\n\n\n\n*\n\n\n"
      "x-ms-blob-type:BlockBlob\nx-ms-date:Thu, 26 Nov 2026 22:47:14 GMT\nx-ms-version:2021-08-06\n"
      "/devstoreaccount1/devstoreaccount1/cairn/repo/locks/abc";
  CHECK(string_to_sign(r) == want);
  CHECK(signature(want, dev_key()) == "BI/h6pp5QCTlONYkvu7dqN/kXZkNFablALFFuhWroQw=");
  CHECK(authorization(r, dev_key()) == "SharedKey devstoreaccount1:BI/h6pp5QCTlONYkvu7dqN/kXZkNFablALFFuhWroQw=");
}

TEST_CASE("azure shared key: List Blobs, query parameters sorted and lowercased, no length when empty") {
  SharedKeyRequest r{.method = "GET",
                     .account = "myaccount",
                     .path = "/cairn",
                     .query = {{"restype", "container"}, {"comp", "list"}, {"prefix", "repo/index/"}, {"Marker", "2!96!abc"}},
                     .headers = {{"x-ms-date", "Thu, 26 Nov 2026 22:47:14 GMT"}, {"x-ms-version", "2021-08-06"}},
                     .content_length = 0};
  std::string want =
      "GET\n\n\n\n\n\n\n\n\n\n\n\n"
      "x-ms-date:Thu, 26 Nov 2026 22:47:14 GMT\nx-ms-version:2021-08-06\n"
      "/myaccount/cairn\ncomp:list\nmarker:2!96!abc\nprefix:repo/index/\nrestype:container";
  CHECK(string_to_sign(r) == want);
  CHECK(signature(want, dev_key()) == "IN5j6iWKv55oIelVambdZmbzo7DWyoIgoZmW0Ab+E4A=");
}

TEST_CASE("azure shared key: a ranged Get Blob signs x-ms-range among the x-ms- headers") {
  SharedKeyRequest r{.method = "GET",
                     .account = "acct",
                     .path = "/c/b",
                     .query = {},
                     .headers = {{"x-ms-range", "bytes=0-9"}, {"x-ms-date", "D"}, {"x-ms-version", "V"}},
                     .content_length = 0};
  CHECK(string_to_sign(r) == "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:D\nx-ms-range:bytes=0-9\nx-ms-version:V\n/acct/c/b");
}

TEST_CASE("azure connection strings") {
  auto c = parse_connection_string(
      "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
      "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
      "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;");
  CHECK(c.protocol == "http");
  CHECK(c.account_name == "devstoreaccount1");
  CHECK(c.account_key == kDevKey);  // '=' inside a value is kept
  CHECK(c.blob_endpoint == "http://127.0.0.1:10000/devstoreaccount1");
  CHECK(c.sas.empty());

  auto s = parse_connection_string(
      " blobendpoint = https://a.blob.core.windows.net/ ; "
      "SharedAccessSignature=sv=2021-08-06&ss=b&sig=x%3D;EndpointSuffix=core.windows.net");
  CHECK(s.blob_endpoint == "https://a.blob.core.windows.net/");
  CHECK(s.sas == "sv=2021-08-06&ss=b&sig=x%3D");
  CHECK(s.endpoint_suffix == "core.windows.net");
  CHECK(s.account_key.empty());

  try {
    parse_connection_string("AccountName=a;secretwithoutname");
    FAIL("parsed a part that is not Name=value");
  } catch (const Error& e) {
    CHECK(e.code() == Errc::invalid_input);
    CHECK(std::string(e.what()).find("secretwithoutname") == std::string::npos);  // never the value
  }
}

TEST_CASE("azure x-ms-date is RFC 1123 in GMT") {
  std::string d = rfc1123_now();
  REQUIRE(d.size() == 29);
  CHECK(d.substr(3, 2) == ", ");
  CHECK(d.substr(25) == " GMT");
}
