#pragma once
// What the object-store backends (s3/, azure/) share: the form of their
// repository URLs, the keys under the repository's prefix, ranged reads, what
// a failed answer means to cairn, the local cache's place and the probe of
// If-None-Match: *. A backend derives from ObjectStoreBackend and supplies
// how it signs and sends a request and how its store names errors; its own
// folder keeps what only its store does (multipart uploads or blocks,
// versions, Object Lock, credentials).
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/repo/storage/backend.h"
#include "common/repo/storage/http.h"
#include "common/util/error.h"

namespace cairn::repo::storage {

using Query = std::vector<std::pair<std::string, std::string>>;
using Headers = std::vector<std::pair<std::string, std::string>>;

// A repository URL of an object store, cut where every store cuts it:
// "<scheme>://<path>" (the provider's own service) or
// "<scheme>:http(s)://host[:port]/<path>" (path-style: any endpoint). `forms`
// lists the accepted forms for the refusal; `first` names what a path-style
// URL without a path lacks ("bucket", "account").
struct StoreUrl {
  bool path_style = false;
  std::string scheme_host;  // path-style: "https://host[:port]" (no trailing slash)
  std::string host;         // path-style: "host[:port]"
  std::string path;         // what follows the host: "bucket/prefix", "account/container/prefix"
};
class StoreUrlParser {
 public:
  StoreUrlParser(std::string loc, std::string scheme, std::string forms)
      : loc_(std::move(loc)), scheme_(std::move(scheme)), forms_(std::move(forms)) {}
  // Refuses credentials in the URL (an '@' before the query: a secret key's '/'
  // may end the authority early), another scheme, and a query or fragment
  // (query_hint added to that refusal).
  StoreUrl split(const std::string& first, const std::string& query_hint = "") const;
  // A prefix without trailing slashes; refused with an empty or '..' segment.
  std::string prefix(std::string p) const;
  // The refusal, naming the URL redacted (redact.h) and the accepted forms.
  Error bad(const std::string& why) const;

 private:
  std::string loc_, scheme_, forms_;
};

// "bytes=OFFSET-END" for a read of length bytes at offset (to the end when
// length is 0); what Range (S3) and x-ms-range (Azure) carry.
std::string byte_range(uint64_t offset, uint64_t length);

// "?n=v&..." with names and values URI-encoded; "" when q is empty.
std::string query_string(const Query& q);

// Where a remote repository's cache goes: opt.cache_dir, "off" for none, else
// default_cache_dir() (cache.h).
std::string choose_cache_dir(const StorageOptions& opt);

class ObjectStoreBackend : public Backend {
 public:
  ObjectStoreBackend(std::string loc, const StorageOptions& opt);

  std::string location() const override { return loc_; }
  BackendCaps caps() const override { return {.local = false, .remote = true, .atomic_replace = true, .exclusive_create = true}; }
  std::string cache_dir() const override { return cache_dir_; }
  StorageCounters counters() const override;

  // Asked of the store once (probe_exclusive), the answer kept.
  bool exclusive_create_enforced() override;

  Bytes load(const Handle& h, uint64_t offset, uint64_t length) override;
  // A ranged GET; a store that ignores the range sends the whole object, and
  // the range is cut out of it here. A range past the end is Errc::corrupt.
  void load_into(const Handle& h, uint64_t offset, uint64_t length, Bytes& out) override;
  std::optional<uint64_t> size(const Handle& h) override;
  void list(FileType t, const std::function<void(const std::string&, uint64_t)>& fn) override;
  // The config object by stat(), every other type by list_keys() under its directory.
  void list_info(FileType t, const std::function<void(const ObjectInfo&)>& fn) override;

 protected:
  // The store's side: the repository's prefix in the container (no leading or
  // trailing slash), one signed request (k empty: the bucket or container
  // itself), the names of the objects under pfx, and the store's words.
  virtual const std::string& prefix() const = 0;
  virtual HttpResponse send(const std::string& method, const std::string& k, const Query& q, const Headers& hs,
                            std::span<const uint8_t> body, Bytes* into = nullptr) = 0;
  virtual void list_keys(const std::string& pfx, const std::function<void(const ObjectInfo&)>& fn) = 0;
  // The header a ranged GET carries the range in.
  virtual const char* range_header() const = 0;
  // The store's error code of an answer ("NoSuchKey", "BlobNotFound"), else "HTTP <status>".
  virtual std::string error_code(const HttpResponse& r) const = 0;
  // Codes that mean "try again later" besides HTTP 5xx and 429.
  virtual bool transient_code(const std::string& code) const = 0;
  // What a refusal of the credentials with this code means (": ..."), or "".
  virtual std::string denied_hint(const std::string& code) const = 0;
  // The code of a missing bucket or container, and the Errc::no_repo that says so.
  virtual const char* missing_container_code() const = 0;
  virtual Error missing_container() const = 0;
  // Where the credentials came from ("credentials file '/x'"), never a secret.
  virtual std::string credential_source() = 0;

  // The store's key of an object, and of a path relative to the repository.
  std::string key(const Handle& h) const { return key_of(object_path(h)); }
  std::string key_of(const std::string& path) const { return prefix().empty() ? path : prefix() + "/" + path; }
  // A key as messages show it: the URL up to the container, then the key.
  std::string display(const std::string& k) const;

  // A failed answer as an Error: no answer, 5xx, 429 and the store's transient
  // codes are Errc::unavailable (retried by retry.h); a refusal of the
  // credentials Errc::denied naming their source; a missing bucket or container
  // Errc::no_repo; 404 Errc::not_found; 416 Errc::corrupt; anything else Errc::io.
  [[noreturn]] void fail(const HttpResponse& r, const std::string& op, const std::string& k);
  // A DELETE refused (403): these credentials may not delete.
  [[noreturn]] void delete_refused(const HttpResponse& r, const std::string& k);

  const std::string loc_;
  mutable HttpClient http_;

 private:
  // Does the store enforce If-None-Match: * ? See object_store.cc.
  bool probe_exclusive();

  std::string cache_dir_;
  std::once_flag probe_once_;
  bool exclusive_ = false;
};

}  // namespace cairn::repo::storage
