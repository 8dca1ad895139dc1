#include "common/repo/storage/redact.h"

#include <algorithm>
#include <cctype>

namespace cairn::repo {
namespace {

struct UrlParts {
  size_t authority = 0;  // where the authority starts (after "://")
  // Where userinfo would end: the last '@' before the query or fragment, or
  // npos. The last one, not one in the authority alone: a secret key holds
  // '/' and '+', and one written into a URL unencoded ends the authority
  // early ("s3:https://AKID:ab/cd@host/bucket").
  size_t at = std::string_view::npos;
  size_t query = std::string_view::npos;     // the '?', if any
  size_t fragment = std::string_view::npos;  // the '#', if any
};

// The parts of loc when it is "scheme://..." (the scheme may hold ':', as in
// "s3:https://"); nothing for a path.
bool split_url(std::string_view loc, UrlParts& u) {
  size_t sep = loc.find("://");
  if (sep == std::string_view::npos || sep == 0 || !std::isalpha(static_cast<unsigned char>(loc[0]))) return false;
  for (size_t i = 0; i < sep; ++i) {
    char c = loc[i];
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '+' || c == '-' || c == '.' || c == ':')) return false;
  }
  u.authority = sep + 3;
  u.fragment = loc.find('#', u.authority);
  u.query = loc.find('?', u.authority);
  if (u.query != std::string_view::npos && u.fragment != std::string_view::npos && u.query > u.fragment)
    u.query = std::string_view::npos;  // a '?' inside the fragment
  size_t end = std::min({u.query, u.fragment, loc.size()});
  size_t at = loc.substr(0, end).rfind('@');
  if (at != std::string_view::npos && at >= u.authority) u.at = at;
  return true;
}

bool secret_name(std::string_view name) {
  std::string n;
  for (char c : name) n += char(std::tolower(static_cast<unsigned char>(c)));
  for (const char* w : {"sig", "secret", "token", "key", "pass", "pwd", "credential", "auth", "session"})
    if (n.find(w) != std::string::npos) return true;
  return false;
}

}  // namespace

std::string redact_location(std::string_view loc) {
  UrlParts u;
  if (!split_url(loc, u)) return std::string(loc);
  size_t path_end = std::min({u.query, u.fragment, loc.size()});
  std::string out(loc.substr(0, u.authority));
  if (u.at != std::string_view::npos) out += "***";
  size_t from = u.at != std::string_view::npos ? u.at : u.authority;
  out += loc.substr(from, path_end - from);
  if (u.query != std::string_view::npos) {
    size_t end = u.fragment == std::string_view::npos ? loc.size() : u.fragment;
    std::string_view q = loc.substr(u.query + 1, end - u.query - 1);
    out += '?';
    for (size_t p = 0;;) {
      size_t amp = q.find('&', p);
      std::string_view param = q.substr(p, amp == std::string_view::npos ? std::string_view::npos : amp - p);
      size_t eq = param.find('=');
      if (eq == std::string_view::npos)
        out += param.empty() ? "" : "***";
      else if (secret_name(param.substr(0, eq)))
        out += std::string(param.substr(0, eq + 1)) + "***";
      else
        out += param;
      if (amp == std::string_view::npos) break;
      out += '&';
      p = amp + 1;
    }
  }
  if (u.fragment != std::string_view::npos) out += u.fragment + 1 < loc.size() ? "#***" : "#";
  return out;
}

bool location_carries_secret(std::string_view loc) {
  UrlParts u;
  if (!split_url(loc, u)) return false;
  return u.at != std::string_view::npos || u.query != std::string_view::npos || u.fragment != std::string_view::npos;
}

}  // namespace cairn::repo
