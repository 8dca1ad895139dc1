#pragma once
// The storage backend: named, immutable objects and nothing more. It does not
// assume rename or an atomic directory listing; save() must make an object appear
// whole or not at all. Packs, index, keys and locks are built on top of this.
//
// Backends live in this folder, one folder each (fs/, s3/, ...), and are listed
// once in registry.cc; open_backend() picks one by the repository URL. Nothing
// above storage switches on which backend it has: it reads caps().
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/util/encoding.h"

namespace cairn::repo {

// set_record: a backup set's record the controller signed when the set ended
// (controller/set_record.h), what `cairnctl catalog rebuild` trusts.
// exported: an archive of `cairnctl export` kept in an object store
// (exports/<name>), not part of any repository.
enum class FileType { config, key, pack, index, snapshot, lock, dict, claim, set_record, exported };

const char* file_type_name(FileType t);

struct Handle;
// An object's path relative to the repository's root, the same in every
// backend: "config", "data/<2 hex>/<name>" for packs, "<type dir>/<name>".
std::string object_path(const Handle& h);

struct Handle {
  FileType type;
  std::string name;  // empty for config
};

// What a backend can do; callers read this instead of switching on the backend type.
struct BackendCaps {
  bool local = false;             // a local filesystem path (restore can stream without copies)
  bool remote = false;            // objects travel over a network: worth a local cache and parallel requests
  bool atomic_replace = false;    // save() over an existing name replaces it atomically
  bool exclusive_create = false;  // create_exclusive() exists; whether the store enforces it: exclusive_create_enforced()
};

// What a backend did, for progress, results and /metrics. Counts since open.
struct StorageCounters {
  uint64_t requests = 0;  // requests sent (every try counts)
  uint64_t retries = 0;   // of those, tries again after a transient failure
  uint64_t failures = 0;  // operations that failed after every try
  uint64_t bytes_sent = 0, bytes_received = 0;
};

// A version a versioning store keeps of an object the repository deleted
// (S3 with Object Lock on the bucket: a delete adds a delete marker, and the
// bytes stay as a noncurrent version until their retention ends).
struct KeptVersion {
  std::string key;      // the object's path relative to the repository ("data/ab/ab12...")
  std::string version;  // the store's version id
  uint64_t size = 0;
  bool marker = false;  // a delete marker (no bytes)
};

// What keeps a repository's objects from being replaced or deleted by a
// credential that may write (a stolen agent credential, docs/configuration.md
// § Protecting the repository from its writers): the store keeping earlier
// versions, or the credential itself being unable to replace or delete.
enum class Protection {
  not_applicable,  // a local filesystem: its permissions are the host's
  none,            // neither: an overwrite or delete loses the bytes
  unknown,         // the store did not say (a refused question: its detail says which)
  versioning,      // the store keeps every earlier version (S3 bucket versioning)
  object_lock,     // versioning with a retention no delete shortens (S3 Object Lock)
  create_only,     // this credential can only create (an Azure SAS without w and d)
};
const char* protection_name(Protection p);
inline bool overwrite_safe(Protection p) {
  return p == Protection::versioning || p == Protection::object_lock || p == Protection::create_only;
}
struct StoreProtection {
  Protection state = Protection::not_applicable;
  std::string detail{};  // how it was found ("bucket versioning Enabled", "GetBucketVersioning refused (AccessDenied)")
};

// One object as a listing shows it. etag: the store's entity tag (changes
// whenever the bytes do; S3, Azure), empty where the store has none.
struct ObjectInfo {
  std::string name;
  uint64_t size = 0;
  std::string etag{};
};

// One version of an object a versioning store keeps, newest first.
struct ObjectVersion {
  std::string version;  // the store's version id
  uint64_t size = 0;
  bool marker = false;     // a delete marker
  bool latest = false;     // the current version
  std::string modified{};  // as the store gives it (RFC 3339)
};

// An object an open read from an earlier version because the current one is damaged.
struct EarlierVersionUsed {
  FileType type;
  std::string name;     // "" for config
  std::string version;  // the store's version id
  std::string modified;
  std::string why;  // what is wrong with the current version
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string location() const = 0;
  virtual BackendCaps caps() const = 0;
  // Creates the layout for a new repository; fails with Errc::exists if one is there.
  virtual void create() = 0;
  // Stores a new object. Every object cairn writes has a name never used before
  // (content-addressed, or fresh), so remote backends send If-None-Match: * and
  // never replace: an agent needs no right to overwrite (docs/configuration.md §
  // Two roles). An existing object of the same size counts as this write (a try
  // whose answer was lost); one of another size fails with Errc::corrupt.
  virtual void save(const Handle& h, std::span<const uint8_t> data) = 0;
  // Replaces an object whatever is there (check --recover putting back an intact
  // earlier version); needs the right to overwrite.
  virtual void replace(const Handle& h, std::span<const uint8_t> data) { save(h, data); }
  // Creates h with data unless it exists (false then), atomically against
  // other writers; only where caps().exclusive_create.
  virtual bool create_exclusive(const Handle& h, std::span<const uint8_t> data) {
    (void)h;
    (void)data;
    return true;
  }
  // length == 0 loads to the end. Short objects raise Errc::corrupt.
  virtual Bytes load(const Handle& h, uint64_t offset = 0, uint64_t length = 0) = 0;
  // The same into a caller's buffer, so that a reader looping over packs reuses one
  // allocation instead of faulting in fresh pages for every read.
  virtual void load_into(const Handle& h, uint64_t offset, uint64_t length, Bytes& out) { out = load(h, offset, length); }
  virtual std::optional<uint64_t> size(const Handle& h) = 0;
  virtual void remove(const Handle& h) = 0;
  virtual void list(FileType t, const std::function<void(const std::string& name, uint64_t size)>& fn) = 0;
  // Temporary files of writes that never finished (a writer killed between
  // writing and renaming): their paths relative to the repository and sizes.
  // Backends whose writes are whole-or-nothing have none.
  virtual void list_leftovers(const std::function<void(const std::string& path, uint64_t size)>& fn) { (void)fn; }
  // Removes one of them (only under the exclusive lock: no writer is live then).
  virtual void remove_leftover(const std::string& path) { (void)path; }
  // Whether the store keeps what the repository deletes under a retention no
  // delete can shorten (S3: Object Lock enabled on the bucket). Then prune
  // removes those versions itself once the store allows (prune.cc § 7).
  virtual bool retains_deleted_versions() { return false; }
  // The versions the store keeps of deleted objects (those whose newest version
  // is a delete marker), each key's versions before its delete markers.
  virtual void list_deleted_versions(const std::function<void(const KeptVersion&)>& fn) { (void)fn; }
  // Removes one such version: "" when it is gone, else what keeps it ("until
  // 2026-12-01T10:00:00Z", "a legal hold"). Never bypasses a retention.
  virtual std::string remove_version(const KeptVersion& v) {
    (void)v;
    return {};
  }
  virtual StorageCounters counters() const { return {}; }
  // What protects the objects from a credential that may write (see Protection).
  // Asked of the store each call: callers keep the answer.
  virtual StoreProtection protection() { return {}; }
  // list() with each object's entity tag, where the store has one.
  virtual void list_info(FileType t, const std::function<void(const ObjectInfo&)>& fn) {
    list(t, [&](const std::string& n, uint64_t s) { fn(ObjectInfo{n, s, {}}); });
  }
  // One object's size and entity tag; nullopt when it does not exist.
  virtual std::optional<ObjectInfo> stat(const Handle& h) {
    auto s = size(h);
    if (!s) return std::nullopt;
    return ObjectInfo{h.name, *s, {}};
  }
  // The versions a versioning store keeps of h (newest first), empty where it keeps none.
  virtual std::vector<ObjectVersion> versions(const Handle& h) {
    (void)h;
    return {};
  }
  // One kept version's bytes (only where versions() lists it).
  virtual Bytes load_version(const Handle& h, const std::string& version);
  // create_exclusive() is atomic against other writers (claims of writers sharing
  // data, § 13.1). A remote store is asked once, by trying (s3: If-None-Match may be
  // accepted and ignored); the answer is kept.
  virtual bool exclusive_create_enforced() { return caps().exclusive_create; }
  // Where a remote repository keeps its local cache (storage/cache.h); empty: none.
  virtual std::string cache_dir() const { return {}; }
};

// Where a backend takes what a URL does not say. Secrets are never here: each
// backend reads them from its credential sources (files of mode 0600, the
// environment) when it needs them, so a rewritten file is picked up.
struct StorageOptions {
  // A file of KEY=VALUE lines (mode 0600) naming credentials and settings, e.g.
  // s3: access_key_id, secret_access_key, session_token, region, profile;
  // empty: the backend's own defaults (environment, shared files, metadata service).
  std::string credentials_file{};
  // A remote repository's local cache (storage/cache.h): empty: the default
  // (CAIRN_CACHE_DIR, $XDG_CACHE_HOME/cairn, ~/.cache/cairn); "off": none.
  std::string cache_dir{};
  // For tests and benchmarks only: a backend built for the URL is wrapped in a
  // retrying one unless this is false.
  bool retry = true;
};

// The backend for a repository location: a path ("/srv/backup", "./repo") or a
// URL of a registered scheme ("s3:https://host:9000/bucket/prefix",
// "s3://bucket/prefix"). Remote backends come wrapped in retries (retry.h).
std::unique_ptr<Backend> open_backend(const std::string& location, const StorageOptions& opt = {});
// True when location names a remote store (a URL of a registered scheme).
bool is_remote_location(const std::string& location);

std::unique_ptr<Backend> make_fs_backend(const std::string& path);

}  // namespace cairn::repo
