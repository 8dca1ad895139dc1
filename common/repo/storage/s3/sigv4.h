#pragma once
// AWS Signature Version 4 for request headers (docs.aws.amazon.com, "Create a
// signed AWS API request"). Our own, not libcurl's CURLOPT_AWS_SIGV4: Debian
// 12's libcurl 7.88 signs the query string as written (no sorting: curl#9717;
// a parameter without '=' signs wrong: curl#10129) and cannot sign a payload
// hash we computed while it also signs x-amz-security-token in one pass we
// control. Checked against AWS's published test vectors
// (tests/unit/common/repo/storage/sigv4_test.cc) and against botocore over
// generated requests (tests/integration/test_object_storage.py).
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cairn::repo::storage::s3 {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct SigningKey {
  std::string access_key_id, secret_access_key, session_token;  // session_token may be empty
};

struct SignRequest {
  std::string method;                                      // GET, PUT, HEAD, DELETE, POST
  std::string host;                                        // the Host header as sent (host, or host:port when the port is not the scheme's)
  std::string path;                                        // the path, not yet encoded ("/bucket/key with space")
  std::vector<std::pair<std::string, std::string>> query;  // names and values, not yet encoded
  Headers headers;                                         // further headers to sign (any case)
  std::string payload_hash;                                // lowercase hex SHA-256 of the body, or "UNSIGNED-PAYLOAD"
  // S3 sends and signs x-amz-content-sha256; the published test vectors' "service" does not.
  bool s3 = true;
};

struct Signed {
  Headers headers;  // to add to the request: x-amz-date, [x-amz-content-sha256], [x-amz-security-token], Authorization
  std::string canonical_request, string_to_sign;  // for tests and diagnostics (no secret in either)
};

// amz_date: "YYYYMMDDTHHMMSSZ" (UTC).
Signed sign(const SignRequest& r, const SigningKey& k, const std::string& region, const std::string& service, const std::string& amz_date);

// RFC 3986 unreserved characters kept, everything else %XX (uppercase); '/' kept unless encode_slash.
std::string uri_encode(std::string_view s, bool encode_slash);
// "YYYYMMDDTHHMMSSZ" for now.
std::string amz_date_now();
std::string sha256_hex(const void* data, size_t n);

}  // namespace cairn::repo::storage::s3
