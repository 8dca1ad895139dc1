// Azure Blob Storage backend: "azure://ACCOUNT/CONTAINER[/PREFIX]" (the service at
// https://ACCOUNT.blob.core.windows.net, or a connection string's BlobEndpoint /
// EndpointSuffix) and "azure:http(s)://HOST:PORT/ACCOUNT/CONTAINER[/PREFIX]"
// (path-style: emulators such as Azurite, private endpoints).
// Layout: s3.cc's, the filesystem backend's paths under the prefix. Writes are
// whole-or-nothing: a Put Blob, or blocks committed by one Put Block List only
// when every block is in; there are no leftovers.
// Authentication: Shared Key (shared_key.h, signed here) or a SAS token (a query
// string sent with every request). Credentials come from, in this order:
//   1. StorageOptions::credentials_file: KEY=VALUE lines, mode 0600:
//      account_key= (base64), sas_token=, connection_string=;
//   2. AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, AZURE_STORAGE_CONNECTION_STRING.
// The file is read again when it changes (a rotated key is picked up). No secret
// is ever put in a message: sources are named, keys are not.
#include <sys/stat.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>
#include <sstream>

#include "common/repo/storage/azure/shared_key.h"
#include "common/repo/storage/backend.h"
#include "common/repo/storage/cache.h"
#include "common/repo/storage/http.h"
#include "common/repo/storage/redact.h"
#include "common/repo/storage/registry.h"
#include "common/repo/storage/s3/sigv4.h"  // uri_encode
#include "common/repo/storage/text.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo::storage::azure {
namespace {

constexpr uint64_t kBlocksAbove = 32ull << 20;  // objects larger go up in blocks
constexpr uint64_t kBlockSize = 16ull << 20;
constexpr const char* kVersion = "2021-08-06";  // x-ms-version

// What signs the requests: an account key (decoded) or a SAS token, and from where.
struct Secret {
  std::string key;                                              // the account key's bytes; empty with a SAS
  std::string sas;                                              // the SAS query string without '?'
  std::string cs_account, cs_endpoint, cs_protocol, cs_suffix;  // from a connection string
  std::string source;                                           // "credentials file '/x'", "environment (AZURE_STORAGE_KEY)"
};

class Credentials {
 public:
  explicit Credentials(const StorageOptions& opt) : opt_(opt) {}

  Secret get() {
    std::lock_guard g(mu_);
    auto now = std::chrono::steady_clock::now();
    if (resolved_) {
      if (!from_file_ || now - checked_ < std::chrono::seconds(1)) return s_;
      checked_ = now;
      std::string st = file_stamp(opt_.credentials_file);
      if (st == stamp_) return s_;
    }
    resolved_ = false;
    checked_ = now;
    if (!opt_.credentials_file.empty()) {
      stamp_ = file_stamp(opt_.credentials_file);
      if (load_file()) return resolved_ = from_file_ = true, s_;
    }
    from_file_ = false;
    if (!env_or_empty("AZURE_STORAGE_KEY").empty()) {
      s_ = {};
      s_.source = "environment (AZURE_STORAGE_KEY)";
      s_.key = decode_key(env_or_empty("AZURE_STORAGE_KEY"), s_.source);
    } else if (!env_or_empty("AZURE_STORAGE_SAS_TOKEN").empty()) {
      s_ = {};
      s_.source = "environment (AZURE_STORAGE_SAS_TOKEN)";
      s_.sas = strip_q(env_or_empty("AZURE_STORAGE_SAS_TOKEN"));
    } else if (!env_or_empty("AZURE_STORAGE_CONNECTION_STRING").empty()) {
      from_connection_string(env_or_empty("AZURE_STORAGE_CONNECTION_STRING"), "environment (AZURE_STORAGE_CONNECTION_STRING)");
    } else {
      throw Error(Errc::denied,
                  "no Azure credentials found: name a credentials file (mode 0600, an account_key=, sas_token= or "
                  "connection_string= line), or set AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN or "
                  "AZURE_STORAGE_CONNECTION_STRING");
    }
    resolved_ = true;
    return s_;
  }

  std::string describe() {
    std::lock_guard g(mu_);
    return s_.source.empty() ? "no credential source" : s_.source;
  }

 private:
  static std::string strip_q(std::string s) {
    s = trim_blanks(s);
    if (!s.empty() && s[0] == '?') s.erase(0, 1);
    return s;
  }

  static std::string decode_key(const std::string& b64, const std::string& source) {
    Bytes k;
    if (!from_base64(trim_blanks(b64), k) || k.empty())
      throw Error(Errc::invalid_input, "the Azure account key from " + source + " is not base64");
    return std::string(k.begin(), k.end());
  }

  void from_connection_string(const std::string& text, const std::string& source) {
    ConnectionString cs;
    try {
      cs = parse_connection_string(text);
    } catch (const Error& e) {
      throw Error(Errc::invalid_input, "the connection string from " + source + ": " + e.what());
    }
    s_ = {};
    s_.source = source;
    if (!cs.account_key.empty())
      s_.key = decode_key(cs.account_key, source);
    else if (!cs.sas.empty())
      s_.sas = strip_q(cs.sas);
    else
      throw Error(Errc::invalid_input, "the connection string from " + source + " has neither AccountKey nor SharedAccessSignature");
    s_.cs_account = cs.account_name;
    s_.cs_endpoint = cs.blob_endpoint;
    s_.cs_protocol = cs.protocol;
    s_.cs_suffix = cs.endpoint_suffix;
  }

  bool load_file() {
    const std::string& path = opt_.credentials_file;
    auto kv = read_credentials_file(path, "account_key, sas_token, connection_string");
    std::string source = "credentials file '" + path + "'";
    int given = !kv["account_key"].empty() + !kv["sas_token"].empty() + !kv["connection_string"].empty();
    if (given > 1) throw Error(Errc::invalid_input, source + " names more than one of account_key, sas_token, connection_string");
    if (!kv["account_key"].empty()) {
      s_ = {};
      s_.source = source;
      s_.key = decode_key(kv["account_key"], source);
    } else if (!kv["sas_token"].empty()) {
      s_ = {};
      s_.source = source;
      s_.sas = strip_q(kv["sas_token"]);
    } else if (!kv["connection_string"].empty()) {
      from_connection_string(kv["connection_string"], source);
    } else {
      return false;  // nothing for Azure there: the environment
    }
    return true;
  }

  StorageOptions opt_;
  std::mutex mu_;
  Secret s_;
  bool resolved_ = false, from_file_ = false;
  std::string stamp_;
  std::chrono::steady_clock::time_point checked_{};
};

struct Url {
  std::string scheme_host;                 // "https://host[:port]" (no trailing slash)
  std::string base_path;                   // "" or "/ACCOUNT" (path-style), encoded, no trailing slash
  std::string account, container, prefix;  // prefix without leading or trailing slashes
  bool path_style = false;
};

Url parse_url(const std::string& loc) {
  Url u;
  auto bad = [&](const std::string& why) {
    return Error(Errc::invalid_input, "repository URL '" + redact_location(loc) + "' " + why +
                                          " (forms: azure://account/container[/prefix], "
                                          "azure:https://host[:port]/account/container[/prefix])");
  };
  // Credentials are never taken from a URL. An '@' anywhere before the query
  // is userinfo (a secret key's '/' may end the authority early); the
  // refusal shows the URL redacted (redact.h).
  if (loc.substr(0, loc.find_first_of("?#")).find('@') != std::string::npos)
    throw bad("carries credentials: they are never taken from a URL (use a credentials file of mode 0600)");
  std::string rest;
  if (loc.rfind("azure://", 0) == 0) {
    rest = loc.substr(8);
  } else if (loc.rfind("azure:http://", 0) == 0 || loc.rfind("azure:https://", 0) == 0) {
    u.path_style = true;
    size_t s = loc.find("://") + 3;
    size_t slash = loc.find('/', s);
    if (slash == std::string::npos) throw bad("names no account");
    std::string authority = loc.substr(s, slash - s);
    if (authority.empty()) throw bad("names no host");
    u.scheme_host = loc.substr(6, slash - 6);
    rest = loc.substr(slash + 1);
  } else {
    throw bad("is not an Azure URL");
  }
  if (rest.find('?') != std::string::npos || rest.find('#') != std::string::npos)
    throw bad("has a query or fragment (a SAS token belongs in a credentials file)");
  size_t a = rest.find('/');
  if (a == std::string::npos) throw bad("names no container");
  u.account = rest.substr(0, a);
  rest = rest.substr(a + 1);
  size_t c = rest.find('/');
  u.container = rest.substr(0, c);
  u.prefix = c == std::string::npos ? "" : rest.substr(c + 1);
  while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
  if (u.account.empty() || u.account.size() > 64) throw bad("names no account");
  for (char ch : u.account)
    if (!std::isalnum(static_cast<unsigned char>(ch))) throw bad("has an account name Azure does not allow");
  if (u.container.size() < 3 || u.container.size() > 63) throw bad("names no container of 3 to 63 characters");
  for (char ch : u.container)
    if (!(std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)) || ch == '-'))
      throw bad("has a container name Azure does not allow (lowercase letters, digits, '-')");
  if (u.prefix.find("//") != std::string::npos || u.prefix.find("..") != std::string::npos) throw bad("has an empty or '..' path segment");
  if (u.path_style)
    u.base_path = "/" + u.account;
  else
    u.scheme_host = "https://" + u.account + ".blob.core.windows.net";
  return u;
}

class AzureBackend final : public Backend {
 public:
  AzureBackend(std::string loc, const StorageOptions& opt)
      : loc_(std::move(loc)), creds_(opt), http_(HttpSettings::from_env({})), u_(parse_url(loc_)) {
    cache_dir_ = opt.cache_dir == "off" ? "" : opt.cache_dir.empty() ? default_cache_dir() : opt.cache_dir;
    if (const char* m = std::getenv("CAIRN_AZURE_MAX_RESULTS_FOR_TESTS")) max_results_ = std::atoi(m);  // never set in production
    if (!u_.path_style) {
      // azure://: a connection string may say where the account's Blob service is.
      Secret s;
      try {
        s = creds_.get();
      } catch (const Error&) {
        return;  // said again, with the source, by the first request
      }
      if (!s.cs_account.empty() && s.cs_account != u_.account)
        throw Error(Errc::invalid_input, "the connection string from " + s.source + " is for account '" + s.cs_account +
                                             "', the repository URL '" + loc_ + "' names account '" + u_.account + "'");
      if (!s.cs_endpoint.empty()) {
        std::string ep = s.cs_endpoint;
        while (!ep.empty() && ep.back() == '/') ep.pop_back();
        size_t p = ep.find("://");
        size_t slash = p == std::string::npos ? std::string::npos : ep.find('/', p + 3);
        u_.scheme_host = ep.substr(0, slash);
        u_.base_path = slash == std::string::npos ? "" : ep.substr(slash);
      } else if (!s.cs_suffix.empty()) {
        u_.scheme_host = (s.cs_protocol.empty() ? "https" : s.cs_protocol) + "://" + u_.account + ".blob." + s.cs_suffix;
      }
    }
  }

  std::string location() const override { return loc_; }

  BackendCaps caps() const override { return {.local = false, .remote = true, .atomic_replace = true, .exclusive_create = true}; }

  bool exclusive_create_enforced() override {
    std::call_once(probe_once_, [&] { exclusive_ = probe_exclusive(); });
    return exclusive_;
  }

  void create() override {
    // The container: made when missing (one an operator made, with its policies, is kept).
    auto r = send("PUT", "", {{"restype", "container"}}, {}, {});
    if (r.status != 201 && !(r.status == 409 && error_code(r) == "ContainerAlreadyExists")) fail(r, "create the container of", "");
    if (size({FileType::config, ""})) throw Error(Errc::exists, "a repository already exists at '" + loc_ + "'");
  }

  // save: If-None-Match: * (a SAS without w suffices); replace: whatever is there.
  void save(const Handle& h, std::span<const uint8_t> data) override { put(h, data, true); }
  void replace(const Handle& h, std::span<const uint8_t> data) override { put(h, data, false); }

  void put(const Handle& h, std::span<const uint8_t> data, bool create) {
    std::string k = key(h);
    Headers cond;
    if (create) cond.emplace_back("If-None-Match", "*");
    HttpResponse r;
    if (data.size() > kBlocksAbove) {
      r = save_blocks(k, data, cond, /*fail_on_error=*/!create);
    } else {
      Headers hs{{"x-ms-blob-type", "BlockBlob"}};
      hs.insert(hs.end(), cond.begin(), cond.end());
      r = send("PUT", k, {}, hs, data);
    }
    if (r.status == 201) return;
    // A SAS without w is refused (403) before the condition is looked at when the name exists.
    const bool refused_existing = create && r.status == 403 && stat(h).has_value();
    if (create && (r.status == 412 || r.status == 409 || refused_existing)) return require_created(*this, h, data.size(), display(k));
    fail(r, "store", k);
  }

  bool create_exclusive(const Handle& h, std::span<const uint8_t> data) override {
    std::string k = key(h);
    HttpResponse r;
    if (data.size() > kBlocksAbove) {
      r = save_blocks(k, data, {{"If-None-Match", "*"}});
    } else {
      r = send("PUT", k, {}, {{"x-ms-blob-type", "BlockBlob"}, {"If-None-Match", "*"}}, data);
    }
    if (r.status == 201) return true;
    if (r.status == 412 || r.status == 409) return false;  // BlobAlreadyExists / ConditionNotMet
    fail(r, "create", k);
  }

  Bytes load(const Handle& h, uint64_t offset, uint64_t length) override {
    Bytes out;
    load_into(h, offset, length, out);
    return out;
  }

  void load_into(const Handle& h, uint64_t offset, uint64_t length, Bytes& out) override {
    std::string k = key(h);
    Headers hs;
    if (offset || length)
      hs.emplace_back("x-ms-range", "bytes=" + std::to_string(offset) + "-" + (length ? std::to_string(offset + length - 1) : ""));
    auto r = send("GET", k, {}, hs, {}, &out);
    if (r.status == 416) throw Error(Errc::corrupt, "'" + display(k) + "' is shorter than expected");
    if (r.status != 200 && r.status != 206) fail(r, "read", k);
    if (r.status == 200 && (offset || length)) {  // a server that ignored the range: cut it out
      if (out.size() < offset) throw Error(Errc::corrupt, "'" + display(k) + "' is shorter than expected");
      out.erase(out.begin(), out.begin() + offset);
      if (length && out.size() > length) out.resize(length);
    }
    if (length && out.size() != length) throw Error(Errc::corrupt, "'" + display(k) + "' is shorter than expected");
  }

  std::optional<uint64_t> size(const Handle& h) override {
    auto o = stat(h);
    if (!o) return std::nullopt;
    return o->size;
  }

  std::optional<ObjectInfo> stat(const Handle& h) override {
    std::string k = key(h);
    auto r = send("HEAD", k, {}, {}, {});
    // HEAD has no body; Azure names the error in x-ms-error-code (BlobNotFound, ContainerNotFound).
    if (r.status == 404 && error_code(r) != "ContainerNotFound") return std::nullopt;
    if (r.status != 200) fail(r, "look up", k);
    std::string cl = r.header("content-length");
    return ObjectInfo{h.name, std::stoull(cl.empty() ? "0" : cl), bare_etag(r.header("etag"))};
  }

  // Whether these credentials can replace an object, and if they can, whether the
  // account keeps versions: one fixed object, hidden by its '.', made once, then
  // written again without the condition. Versioning is an account setting the
  // data plane does not show, except as the version id every write then answers with.
  StoreProtection protection() override {
    Handle h{FileType::claim, ".probe-overwrite"};
    const std::string k = key(h);
    const uint8_t one[1] = {'1'};
    auto c = send("PUT", k, {}, {{"x-ms-blob-type", "BlockBlob"}, {"If-None-Match", "*"}}, one);
    if (c.status != 201 && c.status != 412 && c.status != 409) {
      // Refused: Azure checks the right to replace before the condition (the probe exists already).
      if ((c.status == 401 || c.status == 403) && !stat(h)) return {Protection::unknown, "these credentials may not create objects"};
      if (c.status != 401 && c.status != 403) fail(c, "probe", k);
    }
    auto w = send("PUT", k, {}, {{"x-ms-blob-type", "BlockBlob"}}, one);
    if (w.status == 401 || w.status == 403 || w.status == 412)
      return {Protection::create_only, "these credentials may only create objects (a replace was refused: " + error_code(w) + ")"};
    if (w.status != 201) fail(w, "probe", k);
    if (!w.header("x-ms-version-id").empty())
      return {Protection::versioning, "blob versioning on (a write was answered with a version id); these credentials can replace objects"};
    return {Protection::none,
            "no blob versioning (a write was answered without a version id); these credentials can replace and delete objects"};
  }

  void remove(const Handle& h) override {
    std::string k = key(h);
    auto r = send("DELETE", k, {}, {}, {});
    if (r.status == 202 || r.status == 200) return;
    if (r.status == 404 && error_code(r) != "ContainerNotFound") return;
    if (r.status == 403)
      throw Error(Errc::denied, "the store refused to delete '" + display(k) + "' with the credentials from " + creds_.describe() + " (" +
                                    error_code(r) + "): credentials without the right to delete " +
                                    "cannot prune or forget; run maintenance where the controller's credentials are");
    fail(r, "delete", k);
  }

  void list(FileType t, const std::function<void(const std::string&, uint64_t)>& fn) override {
    list_info(t, [&](const ObjectInfo& o) { fn(o.name, o.size); });
  }

  void list_info(FileType t, const std::function<void(const ObjectInfo&)>& fn) override {
    if (t == FileType::config) {
      if (auto o = stat({t, ""})) fn(ObjectInfo{"config", o->size, o->etag});
      return;
    }
    std::string pfx = (u_.prefix.empty() ? "" : u_.prefix + "/") + file_type_name(t) + "/";
    std::string marker;
    for (;;) {
      std::vector<std::pair<std::string, std::string>> q{{"restype", "container"}, {"comp", "list"}, {"prefix", pfx}};
      if (max_results_ > 0) q.emplace_back("maxresults", std::to_string(max_results_));
      if (!marker.empty()) q.emplace_back("marker", marker);
      auto r = send("GET", "", q, {}, {});
      if (r.status != 200) fail(r, "list", pfx);
      std::string x(r.body.begin(), r.body.end());
      each_listed_info(x, "Blob", "Name", "Content-Length", "Etag", pfx, [&](const std::string& n, uint64_t sz, const std::string& e) {
        fn(ObjectInfo{n, sz, e});
      });
      marker = xml_value(x, "NextMarker");
      if (marker.empty()) break;
    }
  }

  std::string cache_dir() const override { return cache_dir_; }

  StorageCounters counters() const override {
    return {.requests = http_.requests(),
            .retries = 0,
            .failures = 0,
            .bytes_sent = http_.bytes_sent(),
            .bytes_received = http_.bytes_received()};
  }

 private:
  std::string key(const Handle& h) const { return u_.prefix.empty() ? object_path(h) : u_.prefix + "/" + object_path(h); }

  std::string display(const std::string& k) const {
    return loc_.substr(0, loc_.size() - (u_.prefix.empty() ? 0 : u_.prefix.size() + 1)) + (k.empty() ? "" : "/" + k);
  }

  // k empty: the container itself.
  HttpResponse send(const std::string& method, const std::string& k, const std::vector<std::pair<std::string, std::string>>& q,
                    const Headers& hs, std::span<const uint8_t> body, Bytes* into = nullptr) {
    Secret s = creds_.get();
    std::string path = u_.base_path + "/" + s3::uri_encode(u_.container + (k.empty() ? "" : "/" + k), false);
    HttpRequest req;
    req.method = method;
    req.headers = hs;
    req.headers.emplace_back("x-ms-date", rfc1123_now());
    req.headers.emplace_back("x-ms-version", kVersion);
    std::string qs;
    for (const auto& [n, v] : q) qs += (qs.empty() ? "?" : "&") + s3::uri_encode(n, true) + "=" + s3::uri_encode(v, true);
    if (!s.sas.empty()) {
      qs += (qs.empty() ? "?" : "&") + s.sas;
    } else {
      SharedKeyRequest sr{
          .method = method, .account = u_.account, .path = path, .query = q, .headers = req.headers, .content_length = body.size()};
      req.headers.emplace_back("Authorization", authorization(sr, s.key));
    }
    req.url = u_.scheme_host + path + qs;
    req.body = body;
    req.into = into;
    return http_.perform(req);
  }

  static std::string error_code(const HttpResponse& r) {
    std::string c = r.header("x-ms-error-code");
    if (c.empty()) c = xml_value(std::string(r.body.begin(), r.body.end()), "Code");
    return c.empty() ? "HTTP " + std::to_string(r.status) : c;
  }

  [[noreturn]] void fail(const HttpResponse& r, const std::string& op, const std::string& k) {
    std::string what = "cannot " + op + " '" + display(k) + "'";
    if (r.status == 0) throw Error(Errc::unavailable, what + ": " + r.transport_error);
    std::string code = error_code(r);
    if (r.status >= 500 || r.status == 429 || code == "ServerBusy" || code == "OperationTimedOut" || code == "InternalError")
      throw Error(Errc::unavailable, what + ": the store answered " + code + " (HTTP " + std::to_string(r.status) + ")");
    if (r.status == 401 || r.status == 403) {
      std::string hint;
      // A HEAD's answer has no body: Azurite says AuthorizationFailure there for a wrong key too.
      if (code == "AuthenticationFailed")
        hint = ": the account key or SAS token is not the account's (or has expired)";
      else if (code == "AuthorizationFailure")
        hint = ": the account key or SAS token is not the account's, or these credentials lack the right to do it";
      else if (code == "AuthorizationPermissionMismatch" || code == "AuthorizationResourceTypeMismatch" ||
               code == "AuthorizationServiceMismatch")
        hint = ": these credentials lack the right to do it";
      throw Error(Errc::denied, what + ": the store refused the credentials from " + creds_.describe() + " (" + code + ")" + hint);
    }
    if (code == "ContainerNotFound")
      throw Error(Errc::no_repo, "container '" + u_.container + "' does not exist at '" + loc_ +
                                     "' (create it, or run 'cairnctl repo init', which creates it)");
    if (r.status == 404) throw Error(Errc::not_found, what + ": no such object");
    if (r.status == 416) throw Error(Errc::corrupt, "'" + display(k) + "' is shorter than expected");
    throw Error(Errc::io, what + ": the store answered " + code + " (HTTP " + std::to_string(r.status) + ")");
  }

  // Put Block of each 16 MiB, then one Put Block List (with extra, e.g. If-None-Match):
  // the blob appears whole when the list is committed. Blocks of an upload that
  // fails before that stay uncommitted, invisible, and Azure discards them after
  // 7 days: there is nothing to abort. Returns the Put Block List's answer.
  HttpResponse save_blocks(const std::string& k, std::span<const uint8_t> data, const Headers& extra, bool fail_on_error = false) {
    std::string list = "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>";
    int n = 0;
    for (uint64_t off = 0; off < data.size(); off += kBlockSize, ++n) {
      char raw[32];
      std::snprintf(raw, sizeof raw, "cairn-block-%08d", n);  // ids of one length, as Azure requires
      std::string id = to_base64(as_bytes(raw));
      auto piece = data.subspan(off, std::min<uint64_t>(kBlockSize, data.size() - off));
      auto r = send("PUT", k, {{"comp", "block"}, {"blockid", id}}, {}, piece);
      if (r.status != 201) fail(r, "upload block " + std::to_string(n) + " of", k);
      list += "<Latest>" + id + "</Latest>";
    }
    list += "</BlockList>";
    Headers hs = extra;
    auto r = send("PUT", k, {{"comp", "blocklist"}}, hs, as_bytes(list));
    if (r.status != 201 && (extra.empty() || fail_on_error)) fail(r, "commit the blocks of", k);
    return r;
  }

  // Does the store enforce If-None-Match: * ? Conditional puts of one fixed name
  // under locks/ (hidden from listings by its leading '.'): refused while it exists
  // means enforced. The name is fixed so that credentials that may not delete it
  // (an agent's SAS) leave one such object, not one per probe.
  bool probe_exclusive() {
    Handle h{FileType::lock, ".probe-exclusive"};
    const uint8_t one[1] = {'1'};
    bool enforced = false;
    try {
      enforced = !create_exclusive(h, one) || !create_exclusive(h, one);
    } catch (const Error&) {
      return false;  // unknown: the safe protocol
    }
    try {
      remove(h);
    } catch (const Error&) {
      // no right to delete: it stays, and the next probe finds it refused at once
    }
    if (!enforced)
      storage_log("the store at '" + loc_ +
                  "' accepts If-None-Match: * but does not enforce it: writers sharing data "
                  "store their own copies instead of claiming (docs/repository-format.md § Object stores)");
    return enforced;
  }

  std::string loc_;
  Credentials creds_;
  mutable HttpClient http_;
  Url u_;
  std::string cache_dir_;
  int max_results_ = 0;
  mutable std::once_flag probe_once_;
  mutable bool exclusive_ = false;
};

}  // namespace

std::unique_ptr<Backend> make_azure_backend(const std::string& location, const StorageOptions& opt) {
  return std::make_unique<AzureBackend>(location, opt);
}

bool is_azure_location(const std::string& location) {
  return location.rfind("azure://", 0) == 0 || location.rfind("azure:http://", 0) == 0 || location.rfind("azure:https://", 0) == 0;
}

}  // namespace cairn::repo::storage::azure
