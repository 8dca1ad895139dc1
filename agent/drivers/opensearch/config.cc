#include "agent/drivers/opensearch/config.h"

#include "agent/drivers/opensearch/opensearch_driver.h"
#include "common/util/fs.h"

namespace cairn::agent::opensearch {

namespace {

std::string strip_slashes(std::string p) {
  while (p.size() > 1 && p.back() == '/') p.pop_back();
  return p;
}

// A repository's or index pattern's name as the server accepts it, and
// nothing that changes a URL's path or query.
bool plain_name(const std::string& s, bool pattern) {
  if (s.empty() || s.size() > 255) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '+' ||
              (pattern && (c == '*' || c == '-'));
    if (!ok) return false;
  }
  return true;
}

}  // namespace

Settings parse_settings(TableReader& r) {
  Settings s;
  if (auto u = r.string("url")) {
    if (u->rfind("http://", 0) != 0 && u->rfind("https://", 0) != 0) r.fail("url", "'" + *u + "' must start with http:// or https://");
    s.url = *u;
    while (!s.url.empty() && s.url.back() == '/') s.url.pop_back();
  }
  for (auto [key, field] : {std::pair{"ca_file", &s.ca_file},
                            {"cert_file", &s.cert_file},
                            {"key_file", &s.key_file},
                            {"credentials_file", &s.credentials_file}}) {
    if (auto v = r.string(key)) {
      if (!is_clean_absolute_path(*v)) r.fail(key, "'" + *v + "' is not an absolute path without '..'");
      *field = *v;
    }
  }
  if (s.url.rfind("https://", 0) == 0 && s.ca_file.empty())
    r.fail("ca_file", "url '" + s.url + "' is https: name the CA that signed the server's certificate in 'ca_file'");
  if (s.cert_file.empty() != s.key_file.empty())
    r.fail(s.cert_file.empty() ? "cert_file" : "key_file", "a client certificate needs both 'cert_file' and 'key_file'");
  if (!s.cert_file.empty() && s.url.rfind("https://", 0) != 0)
    r.fail("cert_file", "a client certificate is only sent over https (url '" + s.url + "')");
  if (auto n = r.string("snapshot_repository")) {
    if (!plain_name(*n, false) || (*n)[0] == '_' || (*n)[0] == '.')
      r.fail("snapshot_repository", "'" + *n + "' is not a repository name (lowercase letters, digits, '-', '_', '.')");
    s.snapshot_repository = *n;
  }
  s.snapshot_path = strip_slashes(r.required_string("snapshot_path"));
  if (!is_clean_absolute_path(s.snapshot_path) || s.snapshot_path == "/")
    r.fail("snapshot_path", "'" + s.snapshot_path +
                                "' must be an absolute directory other than '/', without '..' (a directory below the "
                                "nodes' path.repo, shared by every node)");
  if (auto l = r.string_list("indices")) {
    if (l->empty()) r.fail("indices", "names no index pattern (leave it out for every index)");
    for (const auto& p : *l)
      if (!plain_name(p, true)) r.fail("indices", "'" + p + "' is not an index name or pattern (lowercase, '*' for any)");
    s.indices = *l;
  }
  if (auto g = r.boolean("include_global_state")) s.include_global_state = *g;
  return s;
}

std::unique_ptr<Driver> make_driver(TableReader& settings, const std::string& component) {
  return std::make_unique<OpenSearchDriver>(component, parse_settings(settings));
}

}  // namespace cairn::agent::opensearch
