#include "common/repo/storage/object_store.h"

#include <cctype>

#include "common/repo/storage/cache.h"
#include "common/repo/storage/redact.h"
#include "common/repo/storage/registry.h"
#include "common/repo/storage/s3/sigv4.h"  // uri_encode

namespace cairn::repo::storage {

Error StoreUrlParser::bad(const std::string& why) const {
  return Error(Errc::invalid_input, "repository URL '" + redact_location(loc_) + "' " + why + " (forms: " + forms_ + ")");
}

StoreUrl StoreUrlParser::split(const std::string& first, const std::string& query_hint) const {
  // Credentials are never taken from a URL. An '@' anywhere before the query
  // is userinfo (a secret key's '/' may end the authority early); the
  // refusal shows the URL redacted (redact.h).
  if (loc_.substr(0, loc_.find_first_of("?#")).find('@') != std::string::npos)
    throw bad("carries credentials: they are never taken from a URL (use a credentials file of mode 0600)");
  StoreUrl u;
  const std::string own = scheme_ + "://", http = scheme_ + ":http://", https = scheme_ + ":https://";
  if (loc_.rfind(own, 0) == 0) {
    u.path = loc_.substr(own.size());
  } else if (loc_.rfind(http, 0) == 0 || loc_.rfind(https, 0) == 0) {
    u.path_style = true;
    size_t s = loc_.find("://") + 3;
    size_t slash = loc_.find('/', s);
    if (slash == std::string::npos) throw bad("names no " + first);
    std::string authority = loc_.substr(s, slash - s);
    if (authority.empty()) throw bad("names no host");
    u.scheme_host = loc_.substr(scheme_.size() + 1, slash - scheme_.size() - 1);
    u.host = authority;
    u.path = loc_.substr(slash + 1);
  } else {
    throw bad(scheme_ == "azure" ? "is not an Azure URL" : "is not an S3 URL");
  }
  if (u.path.find('?') != std::string::npos || u.path.find('#') != std::string::npos)
    throw bad("has a query or fragment" + (query_hint.empty() ? "" : " (" + query_hint + ")"));
  return u;
}

std::string StoreUrlParser::prefix(std::string p) const {
  while (!p.empty() && p.back() == '/') p.pop_back();
  if (p.find("//") != std::string::npos || p.find("..") != std::string::npos) throw bad("has an empty or '..' path segment");
  return p;
}

std::string byte_range(uint64_t offset, uint64_t length) {
  return "bytes=" + std::to_string(offset) + "-" + (length ? std::to_string(offset + length - 1) : "");
}

std::string query_string(const Query& q) {
  std::string qs;
  for (const auto& [n, v] : q) qs += (qs.empty() ? "?" : "&") + s3::uri_encode(n, true) + "=" + s3::uri_encode(v, true);
  return qs;
}

std::string choose_cache_dir(const StorageOptions& opt) {
  if (opt.cache_dir == "off") return "";
  return opt.cache_dir.empty() ? default_cache_dir() : opt.cache_dir;
}

ObjectStoreBackend::ObjectStoreBackend(std::string loc, const StorageOptions& opt)
    : loc_(std::move(loc)), http_(HttpSettings::from_env({})), cache_dir_(choose_cache_dir(opt)) {}

StorageCounters ObjectStoreBackend::counters() const {
  return {.requests = http_.requests(),
          .retries = 0,
          .failures = 0,
          .bytes_sent = http_.bytes_sent(),
          .bytes_received = http_.bytes_received()};
}

bool ObjectStoreBackend::exclusive_create_enforced() {
  std::call_once(probe_once_, [&] { exclusive_ = probe_exclusive(); });
  return exclusive_;
}

Bytes ObjectStoreBackend::load(const Handle& h, uint64_t offset, uint64_t length) {
  Bytes out;
  load_into(h, offset, length, out);
  return out;
}

void ObjectStoreBackend::load_into(const Handle& h, uint64_t offset, uint64_t length, Bytes& out) {
  const std::string k = key(h);
  Headers hs;
  if (offset || length) hs.emplace_back(range_header(), byte_range(offset, length));
  auto r = send("GET", k, {}, hs, {}, &out);
  auto short_object = [&] { return Error(Errc::corrupt, "'" + display(k) + "' is shorter than expected"); };
  if (r.status == 416) throw short_object();
  if (r.status != 200 && r.status != 206) fail(r, "read", k);
  if (r.status == 200 && (offset || length)) {  // a server that ignored the range: cut it out
    if (out.size() < offset) throw short_object();
    out.erase(out.begin(), out.begin() + static_cast<ptrdiff_t>(offset));
    if (length && out.size() > length) out.resize(length);
  }
  if (length && out.size() != length) throw short_object();
}

std::optional<uint64_t> ObjectStoreBackend::size(const Handle& h) {
  auto o = stat(h);
  if (!o) return std::nullopt;
  return o->size;
}

void ObjectStoreBackend::list(FileType t, const std::function<void(const std::string&, uint64_t)>& fn) {
  list_info(t, [&](const ObjectInfo& o) { fn(o.name, o.size); });
}

void ObjectStoreBackend::list_info(FileType t, const std::function<void(const ObjectInfo&)>& fn) {
  if (t == FileType::config) {
    if (auto o = stat({t, ""})) fn(ObjectInfo{"config", o->size, o->etag});
    return;
  }
  list_keys((prefix().empty() ? "" : prefix() + "/") + file_type_name(t) + "/", fn);
}

std::string ObjectStoreBackend::display(const std::string& k) const {
  return loc_.substr(0, loc_.size() - (prefix().empty() ? 0 : prefix().size() + 1)) + (k.empty() ? "" : "/" + k);
}

void ObjectStoreBackend::fail(const HttpResponse& r, const std::string& op, const std::string& k) {
  const std::string what = "cannot " + op + " '" + display(k) + "'";
  if (r.status == 0) throw Error(Errc::unavailable, what + ": " + r.transport_error);
  const std::string code = error_code(r);
  if (r.status >= 500 || r.status == 429 || transient_code(code))
    throw Error(Errc::unavailable, what + ": the store answered " + code + " (HTTP " + std::to_string(r.status) + ")");
  if (r.status == 401 || r.status == 403)
    throw Error(Errc::denied,
                what + ": the store refused the credentials from " + credential_source() + " (" + code + ")" + denied_hint(code));
  if (code == missing_container_code()) throw missing_container();
  if (r.status == 404) throw Error(Errc::not_found, what + ": no such object");
  if (r.status == 416) throw Error(Errc::corrupt, "'" + display(k) + "' is shorter than expected");
  throw Error(Errc::io, what + ": the store answered " + code + " (HTTP " + std::to_string(r.status) + ")");
}

void ObjectStoreBackend::delete_refused(const HttpResponse& r, const std::string& k) {
  throw Error(Errc::denied, "the store refused to delete '" + display(k) + "' with the credentials from " + credential_source() + " (" +
                                error_code(r) + "): credentials without the right to delete " +
                                "cannot prune or forget; run maintenance where the controller's credentials are");
}

// Conditional creates of one fixed name under locks/ (hidden from listings by
// its leading '.'): refused means enforced. The object is left in place:
// every later probe is answered by the first refusal, credentials without
// the right to delete (an agent's) need none, and concurrent probes cannot
// spoil each other. (It was removed after each probe: a writer whose first
// create succeeded could find its second one succeed too because another
// writer's probe had just removed the object, and took the store for one
// that ignores If-None-Match: three Kafka replicas backed up at once then
// stored 1.53x one copy instead of 1.0x.) Any error is "not enforced": the
// safe protocol.
bool ObjectStoreBackend::probe_exclusive() {
  Handle h{FileType::lock, ".probe-exclusive"};
  const uint8_t one[1] = {'1'};
  bool enforced = false;
  try {
    enforced = !create_exclusive(h, one) || !create_exclusive(h, one);
  } catch (const Error&) {
    return false;
  }
  if (!enforced)
    storage_log("the store at '" + loc_ +
                "' accepts If-None-Match: * but does not enforce it: writers sharing data "
                "store their own copies instead of claiming (docs/repository-format.md § Object stores)");
  return enforced;
}

}  // namespace cairn::repo::storage
