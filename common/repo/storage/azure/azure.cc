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

#include <chrono>
#include <cstdlib>
#include <map>
#include <mutex>

#include "common/repo/storage/azure/shared_key.h"
#include "common/repo/storage/backend.h"
#include "common/repo/storage/http.h"
#include "common/repo/storage/object_store.h"
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
  const StoreUrlParser p(loc, "azure", "azure://account/container[/prefix], azure:https://host[:port]/account/container[/prefix]");
  const StoreUrl su = p.split("account", "a SAS token belongs in a credentials file");
  Url u;
  u.path_style = su.path_style;
  u.scheme_host = su.scheme_host;
  std::string rest = su.path;
  size_t a = rest.find('/');
  if (a == std::string::npos) throw p.bad("names no container");
  u.account = rest.substr(0, a);
  rest = rest.substr(a + 1);
  size_t c = rest.find('/');
  u.container = rest.substr(0, c);
  u.prefix = p.prefix(c == std::string::npos ? "" : rest.substr(c + 1));
  if (u.account.empty() || u.account.size() > 64) throw p.bad("names no account");
  for (char ch : u.account)
    if (!std::isalnum(static_cast<unsigned char>(ch))) throw p.bad("has an account name Azure does not allow");
  if (u.container.size() < 3 || u.container.size() > 63) throw p.bad("names no container of 3 to 63 characters");
  for (char ch : u.container)
    if (!(std::islower(static_cast<unsigned char>(ch)) || std::isdigit(static_cast<unsigned char>(ch)) || ch == '-'))
      throw p.bad("has a container name Azure does not allow (lowercase letters, digits, '-')");
  if (u.path_style)
    u.base_path = "/" + u.account;
  else
    u.scheme_host = "https://" + u.account + ".blob.core.windows.net";
  return u;
}

class AzureBackend final : public ObjectStoreBackend {
 public:
  AzureBackend(std::string loc, const StorageOptions& opt) : ObjectStoreBackend(std::move(loc), opt), creds_(opt), u_(parse_url(loc_)) {
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
    if (r.status == 403) delete_refused(r, k);
    fail(r, "delete", k);
  }

 protected:
  const std::string& prefix() const override { return u_.prefix; }
  const char* range_header() const override { return "x-ms-range"; }

  void list_keys(const std::string& pfx, const std::function<void(const ObjectInfo&)>& fn) override {
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

  // k empty: the container itself.
  HttpResponse send(const std::string& method, const std::string& k, const Query& q, const Headers& hs, std::span<const uint8_t> body,
                    Bytes* into = nullptr) override {
    Secret s = creds_.get();
    std::string path = u_.base_path + "/" + s3::uri_encode(u_.container + (k.empty() ? "" : "/" + k), false);
    HttpRequest req;
    req.method = method;
    req.headers = hs;
    req.headers.emplace_back("x-ms-date", rfc1123_now());
    req.headers.emplace_back("x-ms-version", kVersion);
    std::string qs = query_string(q);
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

  std::string error_code(const HttpResponse& r) const override {
    std::string c = r.header("x-ms-error-code");
    if (c.empty()) c = xml_value(std::string(r.body.begin(), r.body.end()), "Code");
    return c.empty() ? "HTTP " + std::to_string(r.status) : c;
  }

  bool transient_code(const std::string& code) const override {
    return code == "ServerBusy" || code == "OperationTimedOut" || code == "InternalError";
  }

  std::string denied_hint(const std::string& code) const override {
    // A HEAD's answer has no body: Azurite says AuthorizationFailure there for a wrong key too.
    if (code == "AuthenticationFailed") return ": the account key or SAS token is not the account's (or has expired)";
    if (code == "AuthorizationFailure")
      return ": the account key or SAS token is not the account's, or these credentials lack the right to do it";
    if (code == "AuthorizationPermissionMismatch" || code == "AuthorizationResourceTypeMismatch" || code == "AuthorizationServiceMismatch")
      return ": these credentials lack the right to do it";
    return "";
  }

  const char* missing_container_code() const override { return "ContainerNotFound"; }

  Error missing_container() const override {
    return Error(Errc::no_repo, "container '" + u_.container + "' does not exist at '" + loc_ +
                                    "' (create it, or run 'cairnctl repo init', which creates it)");
  }

  std::string credential_source() override { return creds_.describe(); }

 private:
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

  Credentials creds_;
  Url u_;
  int max_results_ = 0;
};

}  // namespace

std::unique_ptr<Backend> make_azure_backend(const std::string& location, const StorageOptions& opt) {
  return std::make_unique<AzureBackend>(location, opt);
}

bool is_azure_location(const std::string& location) {
  return location.rfind("azure://", 0) == 0 || location.rfind("azure:http://", 0) == 0 || location.rfind("azure:https://", 0) == 0;
}

}  // namespace cairn::repo::storage::azure
