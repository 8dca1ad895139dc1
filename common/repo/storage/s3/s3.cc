// S3 backend: any S3-compatible store, path-style ("s3:https://host:port/bucket/prefix")
// or AWS's own ("s3://bucket/prefix", virtual-hosted, region from the
// credentials file or AWS_REGION / AWS_DEFAULT_REGION, else us-east-1).
// Layout: the filesystem backend's paths under the prefix (docs/repository-format.md
// § Object stores). Writes are whole-or-nothing (a PUT, or a multipart upload
// completed only when every part is in), so there are no leftovers.
#include <cstdlib>
#include <map>

#include "common/repo/storage/backend.h"
#include "common/repo/storage/http.h"
#include "common/repo/storage/object_store.h"
#include "common/repo/storage/registry.h"
#include "common/repo/storage/s3/credentials.h"
#include "common/repo/storage/s3/sigv4.h"
#include "common/repo/storage/text.h"
#include "common/util/error.h"

namespace cairn::repo::storage::s3 {
namespace {

constexpr uint64_t kMultipartAbove = 32ull << 20;  // objects larger go up in parts
constexpr uint64_t kPartSize = 16ull << 20;

struct Url {
  std::string scheme_host;     // "https://host:port" (no trailing slash)
  std::string host;            // the Host header
  std::string bucket, prefix;  // prefix without leading or trailing slashes
  bool path_style = true;
  std::string region;
};

Url parse_url(const std::string& loc, Credentials& creds) {
  const StoreUrlParser p(loc, "s3", "s3:https://host[:port]/bucket[/prefix], s3://bucket[/prefix]");
  const StoreUrl su = p.split("bucket");
  Url u;
  u.path_style = su.path_style;
  u.scheme_host = su.scheme_host;
  u.host = su.host;
  size_t slash = su.path.find('/');
  u.bucket = su.path.substr(0, slash);
  u.prefix = p.prefix(slash == std::string::npos ? "" : su.path.substr(slash + 1));
  if (u.bucket.size() < 3 || u.bucket.size() > 63) throw p.bad("names no bucket of 3 to 63 characters");
  for (char c : u.bucket)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_'))
      throw p.bad("has a bucket name S3 does not allow");
  u.region = creds.setting("region");
  if (u.region.empty()) u.region = env_or_empty("AWS_REGION");
  if (u.region.empty()) u.region = env_or_empty("AWS_DEFAULT_REGION");
  if (u.region.empty()) u.region = "us-east-1";
  if (!u.path_style) {
    std::string ep = env_or_empty("CAIRN_S3_ENDPOINT_FOR_TESTS");  // never set in production
    u.host = u.bucket + ".s3." + u.region + ".amazonaws.com";
    u.scheme_host = ep.empty() ? "https://" + u.host : ep;
  }
  return u;
}

class S3Backend final : public ObjectStoreBackend {
 public:
  S3Backend(std::string loc, const StorageOptions& opt)
      : ObjectStoreBackend(std::move(loc), opt), creds_(opt), u_(parse_url(loc_, creds_)) {
    sse_ = creds_.setting("sse");
    kms_key_ = creds_.setting("sse_kms_key_id");
    pack_class_ = creds_.setting("pack_storage_class");
    if (sse_ == "SSE-C" || sse_ == "sse-c" || !creds_.setting("sse_customer_key").empty())
      throw Error(Errc::unsupported, "SSE-C is refused for '" + loc_ +
                                         "': the store would need the customer key on every read, so every agent would hold "
                                         "it in its configuration; use sse=AES256 or sse=aws:kms");
    if (!sse_.empty() && sse_ != "AES256" && sse_ != "aws:kms")
      throw Error(Errc::invalid_input, "sse='" + sse_ + "' for '" + loc_ + "' is not one of AES256, aws:kms");
  }

  void create() override {
    // The bucket: made when missing (a bucket an operator made, with its policy, is kept).
    auto r = send("HEAD", "", {}, {}, {});
    if (r.status == 404) {
      std::string body;
      if (u_.region != "us-east-1")
        body = "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>" + u_.region +
               "</LocationConstraint></CreateBucketConfiguration>";
      auto c = send("PUT", "", {}, {}, {reinterpret_cast<const uint8_t*>(body.data()), body.size()});
      if (c.status != 200 && c.status != 409) fail(c, "create the bucket of", "");
    } else if (r.status != 200) {
      fail(r, "reach the bucket of", "");
    }
    if (size({FileType::config, ""})) throw Error(Errc::exists, "a repository already exists at '" + loc_ + "'");
  }

  void save(const Handle& h, std::span<const uint8_t> data) override { put(h, data, true); }
  void replace(const Handle& h, std::span<const uint8_t> data) override { put(h, data, false); }

  bool create_exclusive(const Handle& h, std::span<const uint8_t> data) override {
    std::string k = key(h);
    auto hs = object_headers(h);
    hs.emplace_back("If-None-Match", "*");
    auto r = send("PUT", k, {}, hs, data);
    if (r.status == 200) return true;
    if (r.status == 412) return false;
    if (r.status == 409) return false;  // ConditionalRequestConflict: another writer's create is in flight
    fail(r, "create", k);
  }

  std::optional<ObjectInfo> stat(const Handle& h) override {
    std::string k = key(h);
    auto r = send("HEAD", k, {}, {}, {});
    if (r.status == 404) {
      // HEAD has no body: a missing bucket is told apart by asking the bucket.
      auto b = send("HEAD", "", {}, {}, {});
      if (b.status == 404) throw missing_container();
      return std::nullopt;
    }
    if (r.status == 401 || r.status == 403) {
      // HEAD answers without a body: ask for one byte to learn the store's reason.
      auto g = send("GET", k, {}, {{"Range", "bytes=0-0"}}, {});
      fail(g.status == 401 || g.status == 403 ? g : r, "look up", k);
    }
    if (r.status != 200) fail(r, "look up", k);
    return ObjectInfo{h.name, std::stoull(r.header("content-length").empty() ? "0" : r.header("content-length")),
                      bare_etag(r.header("etag"))};
  }

  void remove(const Handle& h) override {
    std::string k = key(h);
    auto r = send("DELETE", k, {}, {}, {});
    if (r.status == 204 || r.status == 200) return;
    if (r.status == 404 && error_code(r) != missing_container_code()) return;
    if (r.status == 403) delete_refused(r, k);
    fail(r, "delete", k);
  }

  // Object Lock (issue 34). With it on, the bucket is versioned: a DELETE
  // without a version id only adds a delete marker, and the bytes stay as a
  // noncurrent version until their retention ends. Without Object Lock the
  // versions of a versioned bucket are the operator's safety net, left to the
  // bucket's lifecycle rules: cairn never removes versions there.
  bool retains_deleted_versions() override {
    auto r = send("GET", "", {{"object-lock", ""}}, {}, {});
    if (r.status == 200) return xml_value(std::string(r.body.begin(), r.body.end()), "ObjectLockEnabled") == "Enabled";
    const std::string code = error_code(r);
    if (code == "NoSuchBucket") fail(r, "ask about Object Lock of", "");
    // No configuration (ObjectLockConfigurationNotFoundError), or a store without the feature.
    if (r.status == 404 || r.status == 400 || r.status == 501) return false;
    if (r.status == 401 || r.status == 403) {
      storage_log("cannot read the Object Lock configuration of '" + display("") + "' with the credentials from " + creds_.describe() +
                  " (" + code +
                  "): versions the store may keep of deleted objects are left to its "
                  "lifecycle rules (grant s3:GetBucketObjectLockConfiguration for prune to remove them)");
      return false;
    }
    fail(r, "ask about Object Lock of", "");
  }

  void list_deleted_versions(const std::function<void(const KeptVersion&)>& fn) override {
    const std::string root = u_.prefix.empty() ? "" : u_.prefix + "/";
    struct Entries {
      std::vector<KeptVersion> versions, markers;
      bool deleted = false;  // its newest version is a delete marker
    };
    std::map<std::string, Entries> by_key;
    std::string key_marker, version_marker;
    for (;;) {
      std::vector<std::pair<std::string, std::string>> q{{"prefix", root}, {"versions", ""}};
      if (!key_marker.empty()) {
        q.emplace_back("key-marker", key_marker);
        if (!version_marker.empty()) q.emplace_back("version-id-marker", version_marker);
      }
      auto r = send("GET", "", q, {}, {});
      if (r.status != 200) fail(r, "list the versions in", root);
      const std::string x(r.body.begin(), r.body.end());
      for (const std::string tag : {"Version", "DeleteMarker"}) {
        const std::string open = "<" + tag + ">", close = "</" + tag + ">";
        for (size_t pos = 0;;) {
          size_t a = x.find(open, pos);
          if (a == std::string::npos) break;
          size_t end = x.find(close, a);
          if (end == std::string::npos) break;
          pos = end;
          auto field = [&](const char* t) {
            size_t p = a;
            return xml_value(x, t, &p, end);
          };
          std::string k = field("Key"), v = field("VersionId");
          if (k.size() <= root.size() || k.compare(0, root.size(), root) != 0 || v.empty()) continue;
          KeptVersion kv{k.substr(root.size()), v, std::strtoull(field("Size").c_str(), nullptr, 10), tag == "DeleteMarker"};
          Entries& e = by_key[kv.key];
          if (kv.marker && field("IsLatest") == "true") e.deleted = true;
          (kv.marker ? e.markers : e.versions).push_back(std::move(kv));
        }
      }
      if (xml_value(x, "IsTruncated") != "true") break;
      key_marker = xml_value(x, "NextKeyMarker");
      version_marker = xml_value(x, "NextVersionIdMarker");
      if (key_marker.empty())
        throw Error(Errc::io, "the store listed the versions in '" + display(root) + "' as truncated without a next key");
    }
    for (const auto& [k, e] : by_key) {
      if (!e.deleted) continue;  // a current object: its old versions are the bucket's to keep
      for (const auto& v : e.versions) fn(v);
      for (const auto& m : e.markers) fn(m);
    }
  }

  std::string remove_version(const KeptVersion& v) override {
    const std::string k = key_of(v.key);
    // Never with x-amz-bypass-governance-retention: a retention is the operator's to end.
    auto r = send("DELETE", k, {{"versionId", v.version}}, {}, {});
    if (r.status == 204 || r.status == 200 || r.status == 404) return {};
    if (r.status == 400 || r.status == 403) {
      auto h = send("HEAD", k, {{"versionId", v.version}}, {}, {});
      if (h.header("x-amz-object-lock-legal-hold") == "ON") return "a legal hold";
      if (std::string until = h.header("x-amz-object-lock-retain-until-date"); !until.empty()) return "until " + until;
      if (r.status == 403)
        throw Error(Errc::denied, "the store refused to delete version '" + v.version + "' of '" + display(k) +
                                      "' with the credentials from " + creds_.describe() + " (" + error_code(r) +
                                      "), and it is under no retention: run maintenance where the controller's credentials are");
    }
    fail(r, "delete version '" + v.version + "' of", k);
  }

  // What protects the objects from these credentials: the bucket's versioning
  // (and Object Lock), else whether a replace of an existing object is refused
  // (a policy that denies PutObject without If-None-Match).
  StoreProtection protection() override {
    std::string detail;
    bool versioning_unknown = false;
    auto r = send("GET", "", {{"versioning", ""}}, {}, {});
    if (r.status == 200) {
      const std::string st = xml_value(std::string(r.body.begin(), r.body.end()), "Status");
      if (st == "Enabled") {
        if (retains_deleted_versions()) return {Protection::object_lock, "bucket versioning Enabled, Object Lock on"};
        return {Protection::versioning, "bucket versioning Enabled"};
      }
      detail = st.empty() ? "bucket versioning never enabled" : "bucket versioning " + st;
    } else if (r.status == 0 || r.status >= 500 || r.status == 429) {
      fail(r, "ask about versioning of", "");
    } else {
      versioning_unknown = true;
      detail = (r.status == 401 || r.status == 403 ? "GetBucketVersioning refused (" : "GetBucketVersioning not answered (") +
               error_code(r) + ")";
    }
    // Can these credentials replace an object? One fixed object, hidden by its '.',
    // made once, then written again without the condition.
    Handle h{FileType::claim, ".probe-overwrite"};
    const std::string k = key(h);
    const uint8_t one[1] = {'1'};
    Headers cond = object_headers(h);
    cond.emplace_back("If-None-Match", "*");
    auto c = send("PUT", k, {}, cond, one);
    if (c.status != 200 && c.status != 412 && c.status != 409) {
      // Refused: a store may check the right to replace before the condition (the probe exists already).
      if ((c.status == 401 || c.status == 403) && !stat(h))
        return {Protection::unknown, detail + "; these credentials may not create objects"};
      if (c.status != 401 && c.status != 403) fail(c, "probe", k);
    }
    auto w = send("PUT", k, {}, object_headers(h), one);
    if (w.status == 401 || w.status == 403 || w.status == 412)
      return {Protection::create_only,
              detail + "; these credentials may only create objects (a replace was refused: " + error_code(w) + ")"};
    if (w.status != 200) fail(w, "probe", k);
    return {versioning_unknown ? Protection::unknown : Protection::none, detail + "; these credentials can replace and delete objects"};
  }

  std::vector<ObjectVersion> versions(const Handle& h) override {
    const std::string k = key(h);
    std::vector<ObjectVersion> out;
    std::string key_marker, version_marker;
    for (;;) {
      std::vector<std::pair<std::string, std::string>> q{{"prefix", k}, {"versions", ""}};
      if (!key_marker.empty()) {
        q.emplace_back("key-marker", key_marker);
        if (!version_marker.empty()) q.emplace_back("version-id-marker", version_marker);
      }
      auto r = send("GET", "", q, {}, {});
      if (r.status == 404 || r.status == 400 || r.status == 501) return {};  // a store without versions
      if (r.status != 200) fail(r, "list the versions of", k);
      const std::string x(r.body.begin(), r.body.end());
      // In the listing's order (a key's versions newest first), versions and markers interleaved.
      for (size_t pos = 0;;) {
        size_t v = x.find("<Version>", pos), m = x.find("<DeleteMarker>", pos);
        if (v == std::string::npos && m == std::string::npos) break;
        const bool marker = m < v;
        const size_t a = marker ? m : v;
        const size_t end = x.find(marker ? "</DeleteMarker>" : "</Version>", a);
        if (end == std::string::npos) break;
        pos = end;
        auto field = [&](const char* t) {
          size_t p = a;
          return xml_value(x, t, &p, end);
        };
        if (field("Key") != k) continue;
        std::string id = field("VersionId");
        if (id.empty()) continue;
        out.push_back(ObjectVersion{id, std::strtoull(field("Size").c_str(), nullptr, 10), marker, field("IsLatest") == "true",
                                    field("LastModified")});
      }
      if (xml_value(x, "IsTruncated") != "true") break;
      key_marker = xml_value(x, "NextKeyMarker");
      version_marker = xml_value(x, "NextVersionIdMarker");
      if (key_marker.empty() || key_marker > k) break;
    }
    return out;
  }

  Bytes load_version(const Handle& h, const std::string& version) override {
    const std::string k = key(h);
    Bytes out;
    auto r = send("GET", k, {{"versionId", version}}, {}, {}, &out);
    if (r.status != 200) fail(r, "read version '" + version + "' of", k);
    return out;
  }

 protected:
  const std::string& prefix() const override { return u_.prefix; }
  const char* range_header() const override { return "Range"; }

  void list_keys(const std::string& pfx, const std::function<void(const ObjectInfo&)>& fn) override {
    std::string token;
    for (;;) {
      std::vector<std::pair<std::string, std::string>> q{{"list-type", "2"}, {"prefix", pfx}};
      if (!token.empty()) q.emplace_back("continuation-token", token);
      auto r = send("GET", "", q, {}, {});
      if (r.status != 200) fail(r, "list", pfx);
      std::string x(r.body.begin(), r.body.end());
      each_listed_info(x, "Contents", "Key", "Size", "ETag", pfx, [&](const std::string& n, uint64_t sz, const std::string& e) {
        fn(ObjectInfo{n, sz, e});
      });
      if (xml_value(x, "IsTruncated") != "true") break;
      token = xml_value(x, "NextContinuationToken");
      if (token.empty()) throw Error(Errc::io, "the store listed '" + display(pfx) + "' as truncated without a continuation token");
    }
  }

 private:
  Headers object_headers(const Handle& h) const {
    Headers hs;
    if (!sse_.empty()) hs.emplace_back("x-amz-server-side-encryption", sse_);
    if (sse_ == "aws:kms" && !kms_key_.empty()) hs.emplace_back("x-amz-server-side-encryption-aws-kms-key-id", kms_key_);
    if (h.type == FileType::pack && !pack_class_.empty()) hs.emplace_back("x-amz-storage-class", pack_class_);
    return hs;
  }

  HttpResponse send(const std::string& method, const std::string& k, const Query& q, const Headers& hs, std::span<const uint8_t> body,
                    Bytes* into = nullptr) override {
    SignRequest sr;
    sr.method = method;
    sr.host = u_.host;
    sr.path = u_.path_style ? "/" + u_.bucket + (k.empty() ? std::string() : "/" + k) : "/" + k;
    sr.query = q;
    sr.headers = hs;
    sr.payload_hash = sha256_hex(body.data(), body.size());
    SigningKey key = creds_.get(http_);
    Signed s = sign(sr, key, u_.region, "s3", amz_date_now());
    HttpRequest req;
    req.method = method;
    req.url = u_.scheme_host + uri_encode(sr.path, false) + query_string(q);
    req.headers = hs;
    for (auto& h : s.headers) req.headers.push_back(h);
    req.body = body;
    req.into = into;
    return http_.perform(req);
  }

  std::string error_code(const HttpResponse& r) const override {
    std::string x(r.body.begin(), r.body.end());
    std::string c = xml_value(x, "Code");
    return c.empty() ? "HTTP " + std::to_string(r.status) : c;
  }

  bool transient_code(const std::string& code) const override {
    return code == "SlowDown" || code == "RequestTimeout" || code == "InternalError" || code == "ServiceUnavailable";
  }

  std::string denied_hint(const std::string& code) const override {
    if (code == "SignatureDoesNotMatch") return ": the secret key does not match the access key id";
    if (code == "InvalidAccessKeyId") return ": the store does not know the access key id";
    if (code == "AccessDenied") return ": these credentials lack the right to do it";
    return "";
  }

  const char* missing_container_code() const override { return "NoSuchBucket"; }

  Error missing_container() const override {
    return Error(Errc::no_repo,
                 "bucket '" + u_.bucket + "' does not exist at '" + loc_ + "' (create it, or run 'cairnctl repo init', which creates it)");
  }

  std::string credential_source() override { return creds_.describe(); }

  // create: If-None-Match: * (save); without it the object is replaced (replace).
  void put(const Handle& h, std::span<const uint8_t> data, bool create) {
    std::string k = key(h);
    HttpResponse r;
    if (data.size() > kMultipartAbove) {
      r = save_multipart(h, k, data, create);
    } else {
      Headers hs = object_headers(h);
      if (create) hs.emplace_back("If-None-Match", "*");
      r = send("PUT", k, {}, hs, data);
    }
    if (r.status == 200) return;
    if (create && (r.status == 412 || r.status == 409)) return require_created(*this, h, data.size(), display(k));
    fail(r, "store", k);
  }

  HttpResponse save_multipart(const Handle& h, const std::string& k, std::span<const uint8_t> data, bool create) {
    auto init = send("POST", k, {{"uploads", ""}}, object_headers(h), {});
    if (init.status != 200) fail(init, "start an upload of", k);
    std::string upload = xml_value(std::string(init.body.begin(), init.body.end()), "UploadId");
    if (upload.empty()) throw Error(Errc::io, "the store started an upload of '" + display(k) + "' without an upload id");
    try {
      std::string done = "<CompleteMultipartUpload>";
      int part = 1;
      for (uint64_t off = 0; off < data.size(); off += kPartSize, ++part) {
        auto piece = data.subspan(off, std::min<uint64_t>(kPartSize, data.size() - off));
        auto r = send("PUT", k, {{"partNumber", std::to_string(part)}, {"uploadId", upload}}, {}, piece);
        if (r.status != 200) fail(r, "upload part " + std::to_string(part) + " of", k);
        done += "<Part><PartNumber>" + std::to_string(part) + "</PartNumber><ETag>" + r.header("etag") + "</ETag></Part>";
      }
      done += "</CompleteMultipartUpload>";
      Headers ch;
      if (create) ch.emplace_back("If-None-Match", "*");
      auto c = send("POST", k, {{"uploadId", upload}}, ch, {reinterpret_cast<const uint8_t*>(done.data()), done.size()});
      if (create && (c.status == 412 || c.status == 409)) {
        try {
          send("DELETE", k, {{"uploadId", upload}}, {}, {});
        } catch (...) {
        }
        return c;
      }
      // S3 may answer 200 with an error in the body.
      std::string cx(c.body.begin(), c.body.end());
      if (c.status != 200 || cx.find("<Error>") != std::string::npos) fail(c, "complete the upload of", k);
      return c;
    } catch (...) {
      // Aborted so that no parts are left billed; a failure here is left to the
      // bucket's lifecycle rule for incomplete uploads (docs/configuration.md).
      try {
        send("DELETE", k, {{"uploadId", upload}}, {}, {});
      } catch (...) {
      }
      throw;
    }
  }

  Credentials creds_;
  Url u_;
  std::string sse_, kms_key_, pack_class_;
};

}  // namespace

std::unique_ptr<Backend> make_s3_backend(const std::string& location, const StorageOptions& opt) {
  return std::make_unique<S3Backend>(location, opt);
}

bool is_s3_location(const std::string& location) {
  return location.rfind("s3://", 0) == 0 || location.rfind("s3:http://", 0) == 0 || location.rfind("s3:https://", 0) == 0;
}

}  // namespace cairn::repo::storage::s3
