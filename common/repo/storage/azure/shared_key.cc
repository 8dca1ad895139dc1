#include "common/repo/storage/azure/shared_key.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <map>

#include "common/util/encoding.h"
#include "common/util/error.h"

namespace cairn::repo::storage::azure {
namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string& v) {
  size_t a = 0, b = v.size();
  while (a < b && (v[a] == ' ' || v[a] == '\t')) ++a;
  while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t' || v[b - 1] == '\r' || v[b - 1] == '\n')) --b;
  return v.substr(a, b - a);
}

}  // namespace

std::string string_to_sign(const SharedKeyRequest& r) {
  auto header = [&](const char* name) {
    for (const auto& [n, v] : r.headers)
      if (lower(n) == name) return trim(v);
    return std::string();
  };
  std::string s = r.method + "\n";
  s += header("content-encoding") + "\n";
  s += header("content-language") + "\n";
  s += (r.content_length ? std::to_string(r.content_length) : std::string()) + "\n";
  s += header("content-md5") + "\n";
  s += header("content-type") + "\n";
  s += header("date") + "\n";
  s += header("if-modified-since") + "\n";
  s += header("if-match") + "\n";
  s += header("if-none-match") + "\n";
  s += header("if-unmodified-since") + "\n";
  s += header("range") + "\n";
  // x-ms- headers: names lowercased and sorted, values trimmed, "name:value\n" each.
  std::map<std::string, std::string> ms;
  for (const auto& [n, v] : r.headers) {
    std::string l = lower(n);
    if (l.rfind("x-ms-", 0) == 0) ms[l] = trim(v);
  }
  for (const auto& [n, v] : ms) s += n + ":" + v + "\n";
  // The resource: "/account" + the encoded path, then "\nname:v1,v2" per parameter,
  // names lowercased and sorted, a name's values sorted.
  s += "/" + r.account + (r.path.empty() ? "/" : r.path);
  std::map<std::string, std::vector<std::string>> q;
  for (const auto& [n, v] : r.query) q[lower(n)].push_back(v);
  for (auto& [n, vs] : q) {
    std::sort(vs.begin(), vs.end());
    s += "\n" + n + ":";
    for (size_t i = 0; i < vs.size(); ++i) s += (i ? "," : "") + vs[i];
  }
  return s;
}

std::string signature(const std::string& sts, const std::string& key) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  HMAC(EVP_sha256(), key.data(), int(key.size()), reinterpret_cast<const unsigned char*>(sts.data()), sts.size(), out, &n);
  return to_base64({out, n});
}

std::string authorization(const SharedKeyRequest& r, const std::string& key) {
  return "SharedKey " + r.account + ":" + signature(string_to_sign(r), key);
}

std::string rfc1123_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  static const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char b[64];
  std::snprintf(b, sizeof b, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                tm.tm_hour, tm.tm_min, tm.tm_sec);
  return b;
}

ConnectionString parse_connection_string(const std::string& s) {
  ConnectionString c;
  size_t pos = 0;
  int part = 0;
  while (pos <= s.size()) {
    size_t semi = s.find(';', pos);
    std::string item = trim(s.substr(pos, semi == std::string::npos ? std::string::npos : semi - pos));
    pos = semi == std::string::npos ? s.size() + 1 : semi + 1;
    ++part;
    if (item.empty()) continue;
    size_t eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      throw Error(Errc::invalid_input, "the connection string's part " + std::to_string(part) + " is not Name=value");
    std::string name = lower(trim(item.substr(0, eq))), value = trim(item.substr(eq + 1));
    if (name == "accountname")
      c.account_name = value;
    else if (name == "accountkey")
      c.account_key = value;
    else if (name == "sharedaccesssignature")
      c.sas = value;
    else if (name == "blobendpoint")
      c.blob_endpoint = value;
    else if (name == "defaultendpointsprotocol")
      c.protocol = value;
    else if (name == "endpointsuffix")
      c.endpoint_suffix = value;
  }
  return c;
}

}  // namespace cairn::repo::storage::azure
