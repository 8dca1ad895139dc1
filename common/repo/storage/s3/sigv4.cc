#include "common/repo/storage/s3/sigv4.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>

namespace cairn::repo::storage::s3 {
namespace {

std::string hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s(n * 2, '0');
  for (size_t i = 0; i < n; ++i) {
    s[2 * i] = d[p[i] >> 4];
    s[2 * i + 1] = d[p[i] & 15];
  }
  return s;
}

std::string hmac(const std::string& key, const std::string& msg) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), out, &n);
  return std::string(reinterpret_cast<char*>(out), n);
}

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Header values: leading and trailing spaces dropped, inner runs of spaces made one.
std::string trim_value(const std::string& v) {
  std::string out;
  bool space = false;
  for (char c : v) {
    if (c == ' ' || c == '\t') {
      space = !out.empty();
      continue;
    }
    if (space) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

}  // namespace

std::string sha256_hex(const void* data, size_t n) {
  unsigned char d[SHA256_DIGEST_LENGTH];
  SHA256(static_cast<const unsigned char*>(data), n, d);
  return hex(d, sizeof d);
}

std::string uri_encode(std::string_view s, bool encode_slash) {
  static const char* d = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (c == '/' && !encode_slash)) {
      out += char(c);
    } else {
      out += '%';
      out += d[c >> 4];
      out += d[c & 15];
    }
  }
  return out;
}

std::string amz_date_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char b[20];
  std::strftime(b, sizeof b, "%Y%m%dT%H%M%SZ", &tm);
  return b;
}

Signed sign(const SignRequest& r, const SigningKey& k, const std::string& region, const std::string& service, const std::string& amz_date) {
  Signed out;
  // Canonical URI: the path encoded once (S3 wants exactly that; the published test
  // vectors use plain paths, where once and twice agree).
  std::string path = r.path.empty() ? "/" : r.path;
  std::string uri = uri_encode(path, false);

  // Canonical query: names and values encoded (slashes too), sorted by name, then value.
  std::vector<std::pair<std::string, std::string>> q;
  for (const auto& [n, v] : r.query) q.emplace_back(uri_encode(n, true), uri_encode(v, true));
  std::sort(q.begin(), q.end());
  std::string cq;
  for (const auto& [n, v] : q) {
    if (!cq.empty()) cq += '&';
    cq += n + "=" + v;
  }

  // Headers: ours added, then lowercased, sorted; duplicates joined with ','.
  out.headers.emplace_back("x-amz-date", amz_date);
  if (r.s3) out.headers.emplace_back("x-amz-content-sha256", r.payload_hash);
  if (!k.session_token.empty()) out.headers.emplace_back("x-amz-security-token", k.session_token);
  std::map<std::string, std::string> h;
  auto add = [&](const std::string& name, const std::string& value) {
    auto& slot = h[lower(name)];
    slot = slot.empty() ? trim_value(value) : slot + "," + trim_value(value);
  };
  add("host", r.host);
  for (const auto& [n, v] : r.headers) add(n, v);
  for (const auto& [n, v] : out.headers) add(n, v);
  std::string ch, sh;
  for (const auto& [n, v] : h) {
    ch += n + ":" + v + "\n";
    if (!sh.empty()) sh += ';';
    sh += n;
  }

  out.canonical_request = r.method + "\n" + uri + "\n" + cq + "\n" + ch + "\n" + sh + "\n" + r.payload_hash;
  std::string date = amz_date.substr(0, 8);
  std::string scope = date + "/" + region + "/" + service + "/aws4_request";
  out.string_to_sign =
      "AWS4-HMAC-SHA256\n" + amz_date + "\n" + scope + "\n" + sha256_hex(out.canonical_request.data(), out.canonical_request.size());
  std::string key = hmac(hmac(hmac(hmac("AWS4" + k.secret_access_key, date), region), service), "aws4_request");
  std::string sig = hmac(key, out.string_to_sign);
  out.headers.emplace_back("Authorization", "AWS4-HMAC-SHA256 Credential=" + k.access_key_id + "/" + scope + ", SignedHeaders=" + sh +
                                                ", Signature=" + hex(reinterpret_cast<const unsigned char*>(sig.data()), sig.size()));
  return out;
}

}  // namespace cairn::repo::storage::s3
