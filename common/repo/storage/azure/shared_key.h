#pragma once
// Azure Storage Shared Key authorization for the Blob service
// (learn.microsoft.com, "Authorize with Shared Key"): our own, like s3/sigv4,
// so that it is a pure function a unit test pins down
// (tests/unit/common/storage/azure_shared_key_test.cc) and no Azure SDK is needed.
// Also the parsing of a storage connection string.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cairn::repo::storage::azure {

using Headers = std::vector<std::pair<std::string, std::string>>;

struct SharedKeyRequest {
  std::string method;   // GET, PUT, HEAD, DELETE
  std::string account;  // the account whose key signs
  // The URL's path as sent (already percent-encoded): "/container/blob" for
  // https://ACCOUNT.blob.core.windows.net, "/ACCOUNT/container/blob" for a
  // path-style endpoint (Azurite), whose canonicalized resource then names the
  // account twice ("/ACCOUNT/ACCOUNT/container/blob").
  std::string path;
  std::vector<std::pair<std::string, std::string>> query;  // names and values, not encoded
  Headers headers;                                         // every header sent, any case (x-ms-date and x-ms-version among them)
  uint64_t content_length = 0;                             // the body's length; signed as empty when 0 (versions since 2015-02-21)
};

// The string-to-sign: VERB, the eleven standard headers, Range, then the
// canonicalized x-ms- headers and the canonicalized resource.
std::string string_to_sign(const SharedKeyRequest& r);
// base64(HMAC-SHA256(key, string_to_sign)); key is the account key decoded from base64.
std::string signature(const std::string& string_to_sign, const std::string& key);
// "SharedKey ACCOUNT:SIGNATURE".
std::string authorization(const SharedKeyRequest& r, const std::string& key);

// "Thu, 26 Nov 2026 22:47:14 GMT" (RFC 1123) for x-ms-date.
std::string rfc1123_now();

// A storage connection string: "Name=value;Name=value" (values may hold '=').
// Unknown names are ignored; names are matched without regard to case.
struct ConnectionString {
  std::string account_name, account_key, sas, blob_endpoint;
  std::string protocol, endpoint_suffix;  // DefaultEndpointsProtocol, EndpointSuffix
};
// Errc::invalid_input (naming the part, never a value) when it is not Name=value pairs.
ConnectionString parse_connection_string(const std::string& s);

}  // namespace cairn::repo::storage::azure
