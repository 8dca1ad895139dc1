#include "common/repo/repository.h"

#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <set>
#include <thread>

#include "common/repo/compress.h"
#include "common/repo/json_int.h"
#include "common/repo/limits.h"
#include "common/repo/storage/cache.h"
#include "common/repo/storage/registry.h"
#include "common/repo/tree.h"
#include "common/util/cpus.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::repo {

using nlohmann::json;

namespace {
constexpr std::string_view kConfigFormat = "cairn-repository";
constexpr uint8_t kFileRaw = 0, kFileZstd = 1;
// Pending index entries are written out after this many packs or seconds, so an
// interrupted backup leaves reusable data behind.
constexpr size_t kIndexFlushPacks = 2;
constexpr auto kIndexFlushInterval = std::chrono::seconds(10);
constexpr size_t kIndexMaxBlobs = 50000;
// Sharing writes (share_writes): how often the index files of other writers
// are looked for, and the largest pack, so that what one writer stores is
// seen by the others soon after.
constexpr int64_t kShareRefreshNs = 50'000'000;
constexpr size_t kSharePackSize = 4u << 20;
constexpr size_t kMaxQueuedPacks = 1;
// An object store: packs go up this many at a time (each a round trip that a
// local disk does not have); the index is written every kRemoteIndexFlushPacks
// packs instead of every kIndexFlushPacks (each index file is a request).
constexpr size_t kRemoteUploads = 4;
constexpr size_t kRemoteIndexFlushPacks = 16;
// Tree packs are closed at this size (or the repository's pack size, if smaller):
// tree blobs trickle in during the whole backup, and a pack held open until the
// end would grow with the number of directories and files.
constexpr size_t kTreePackSize = 4u << 20;
// A pack this writer fills holds at most this many blobs, however small (the
// format allows kMaxPackBlobs): an index file, split between packs after
// kIndexMaxBlobs entries, then lists at most kIndexMaxBlobs + this many, and
// what a reader holds while it reads one stays bounded (memory.h).
constexpr size_t kWritePackBlobs = 8192;

// The config's own version; the objects it describes keep kFormatVersion.
// Version 1 authenticated only `id`; version 2 authenticates every byte (§ 2);
// version 3 is version 2 whose data blobs may use compression dictionaries
// (§ 5.1), which readers of version 2 cannot open: new repositories are version
// 3, and a writer uses dictionaries only there.
constexpr int kConfigVersion = 3;

// Page dictionaries (§ 5.1): trained on this much of the first new page chunks
// a writer saves, at most this large; chunks compressed with one use at least
// zstd level 3 (small chunks are cheap to compress, and the dictionary pays off
// most at 3 and above).
constexpr size_t kDictSampleBytes = 4u << 20;
constexpr size_t kDictMaxSize = 112u << 10;
constexpr int kDictMinLevel = 3;

std::string file_aad(FileType t) { return std::string("cairn-") + file_type_name(t) + "-v1"; }
std::string config_aad_v1(const std::string& id) { return "cairn-config-v1:" + id; }
// Version 2: every field but `sealed` and `checksum`, canonical (keys sorted, no spaces).
std::string config_aad(const json& cfg) {
  json meta = cfg;
  meta.erase("sealed");
  meta.erase("checksum");
  return "cairn-config-v2\n" + meta.dump();
}
// A check of every other field that needs no key: damage shows before anything is interpreted.
std::string config_checksum(const json& cfg) {
  json rest = cfg;
  rest.erase("checksum");
  return to_hex(crypto::sha256(as_bytes(rest.dump())));
}
Error config_damaged(const std::string& location, const std::string& why) {
  return Error(Errc::corrupt,
               "'" + location + "/config' " + why + ": the repository's config is damaged; restore it from a copy of the repository");
}
}  // namespace

Repository::~Repository() {
  stop_writer();
  OPENSSL_cleanse(&mk_, sizeof mk_);
}

std::string Repository::init(Backend& be, const Secret& secret, const InitOptions& opt) {
  be.create();
  MasterKey mk;
  mk.encrypt = crypto::random_array<32>();
  mk.id = crypto::random_array<32>();
  auto seed = crypto::random_array<32>();
  std::string id = to_hex(crypto::random_array<16>());
  json sealed = {{"chunker_seed", to_base64(seed)}, {"zstd_level", opt.zstd_level}, {"pack_size", opt.pack_size}};
  std::string sealed_text = sealed.dump();
  json cfg = {{"format", kConfigFormat}, {"version", kConfigVersion}, {"id", id}, {"created", now_rfc3339()}};
  cfg["sealed"] = to_base64(crypto::Aead(mk.encrypt).seal(as_bytes(config_aad(cfg)), as_bytes(sealed_text)));
  cfg["checksum"] = config_checksum(cfg);
  // The key slot goes first: a config without a key would be a repository nobody can open.
  std::string slot = add_key_slot(be, mk, secret, opt.kdf);
  std::string text = cfg.dump(2) + "\n";
  be.save({FileType::config, ""}, as_bytes(text));
  OPENSSL_cleanse(&mk, sizeof mk);
  return slot;
}

namespace {
// What a cache entry of this object is believed under (storage/cache.h): its size and entity tag.
std::string cache_fingerprint(const ObjectInfo& o) { return std::to_string(o.size) + ":" + o.etag; }

// The config's text checked for shape (not yet for authenticity). Throws
// config_damaged, Errc::no_repo for something that is not a cairn config, or
// Errc::unsupported for a newer format.
json parse_config(const Bytes& raw, const std::string& loc) {
  if (raw.size() > kMaxConfigFile)
    throw config_damaged(loc, "is " + std::to_string(raw.size()) + " bytes, above the limit of " + std::to_string(kMaxConfigFile));
  json cfg;
  try {
    cfg = json::parse(raw.begin(), raw.end());
  } catch (const json::exception&) {
    throw config_damaged(loc, "is not valid JSON");
  }
  auto field = [&](const char* k) -> const json& {
    static const json null;
    auto it = cfg.find(k);
    return it == cfg.end() ? null : *it;
  };
  if (!cfg.is_object()) throw config_damaged(loc, "is not a JSON object");
  bool has_checksum = cfg.contains("checksum");
  if (has_checksum && (!field("checksum").is_string() || field("checksum").get<std::string>() != config_checksum(cfg)))
    throw config_damaged(loc, "does not match its checksum");
  if (!field("format").is_string() || field("format").get<std::string>() != kConfigFormat)
    throw Error(Errc::no_repo, "'" + loc + "' is not a cairn repository");
  if (!field("version").is_number_integer() || !field("id").is_string() || !field("sealed").is_string())
    throw config_damaged(loc, "is malformed");
  int version = cfg.value("version", 0);
  if (version < 1 || version > kConfigVersion)
    throw Error(Errc::unsupported, "repository format version " + std::to_string(version) +
                                       " is not supported by this cairnctl (it reads versions 1 to " + std::to_string(kConfigVersion) +
                                       "); use a newer cairnctl");
  if (version >= 2 && !has_checksum) throw config_damaged(loc, "lacks its checksum");
  return cfg;
}

// The config's sealed parameters, when they authenticate under the master key.
std::optional<Bytes> open_config_seal(const json& cfg, const crypto::Aead& aead) {
  const int version = cfg.value("version", 0);
  std::string aad = version == 1 ? config_aad_v1(cfg.value("id", "")) : config_aad(cfg);
  Bytes sealed, plain;
  if (!from_base64(cfg.value("sealed", ""), sealed) || !aead.open(as_bytes(aad), sealed, plain)) return std::nullopt;
  return plain;
}
}  // namespace

std::unique_ptr<Repository> Repository::open(std::unique_ptr<Backend> be, const Secret& secret) {
  auto size = be->size({FileType::config, ""});
  if (!size)
    throw Error(Errc::no_repo,
                "no repository at '" + be->location() + "' (create one with 'cairnctl repo init --repo " + be->location() + "')");
  const std::string loc = be->location();
  const Handle config_handle{FileType::config, ""};
  if (*size > kMaxConfigFile)
    throw config_damaged(loc, "is " + std::to_string(*size) + " bytes, above the limit of " + std::to_string(kMaxConfigFile));
  // A damaged current config (a writer that overwrote it) is read from the newest
  // earlier version the store keeps that is whole, with a warning; check names it.
  std::optional<std::vector<ObjectVersion>> kept;
  Backend* const store = be.get();  // be moves into the repository below
  auto earlier = [&]() -> const std::vector<ObjectVersion>& {
    if (!kept) {
      try {
        kept = store->versions(config_handle);
      } catch (const Error&) {
        kept.emplace();
      }
    }
    return *kept;
  };
  std::optional<EarlierVersionUsed> used;
  json cfg;
  try {
    cfg = parse_config(be->load(config_handle), loc);
  } catch (const Error& e) {
    if (e.code() == Errc::unsupported) throw;
    for (const auto& v : earlier()) {
      if (v.marker || v.latest) continue;
      try {
        cfg = parse_config(be->load_version(config_handle, v.version), loc);
        used = EarlierVersionUsed{FileType::config, "", v.version, v.modified, e.what()};
        break;
      } catch (const Error&) {
      }
    }
    if (!used) throw;
  }
  std::unique_ptr<Repository> r(new Repository());
  r->be_ = std::move(be);
  r->mk_ = open_master_key(*r->be_, secret, &r->key_slot_, &r->earlier_used_);
  r->aead_ = crypto::Aead(r->mk_.encrypt);
  r->id_hash_ = std::make_unique<crypto::KeyedHash>(r->mk_.id);
  std::optional<Bytes> plain = open_config_seal(cfg, r->aead_);
  if (!plain && !used) {
    const std::string why = "'" + loc + "/config' fails authentication (it was changed or damaged)";
    for (const auto& v : earlier()) {
      if (v.marker || v.latest) continue;
      try {
        json c = parse_config(r->be_->load_version(config_handle, v.version), loc);
        if (auto p = open_config_seal(c, r->aead_)) {
          cfg = std::move(c);
          plain = std::move(p);
          used = EarlierVersionUsed{FileType::config, "", v.version, v.modified, why};
          break;
        }
      } catch (const Error&) {
      }
    }
  }
  if (!plain) throw config_damaged(loc, "fails authentication (it was changed or damaged)");
  if (used) {
    storage_log("the current version of '" + loc + "/config' is damaged (" + used->why + "); using the earlier version " + used->version +
                (used->modified.empty() ? "" : " of " + used->modified) +
                " the store keeps: run 'cairnctl repo check --recover' where the controller's credentials are to put it back");
    r->earlier_used_.push_back(*used);
  }
  const int version = cfg.value("version", 0);
  r->params_.id = cfg.value("id", "");
  r->params_.version = version;
  if (std::string cd = r->be_->cache_dir();
      !cd.empty() && !r->params_.id.empty() && r->params_.id.find_first_not_of("0123456789abcdef") == std::string::npos) {
    r->cache_ = std::make_unique<storage::ObjectCache>(cd + "/" + r->params_.id);
    r->cache_->trim(storage::default_cache_max());  // bounded at each open (storage/cache.h)
  }
  try {
    json p = json::parse(plain->begin(), plain->end());
    if (!from_base64(p.at("chunker_seed").get<std::string>(), r->params_.chunker_seed) || r->params_.chunker_seed.size() != 32)
      throw Error(Errc::corrupt, "config: malformed chunker seed");
    r->params_.zstd_level = json_int_at<int>(p, "zstd_level");
    r->params_.pack_size = json_int_at<uint32_t>(p, "pack_size");
    if (r->params_.pack_size < (1u << 16) || r->params_.pack_size > (1u << 30))
      throw Error(Errc::corrupt, "config: pack size out of range");
  } catch (const json::exception& e) {
    throw Error(Errc::corrupt, std::string("config: malformed sealed parameters: ") + e.what());
  }
  r->gear_ = make_gear_table(r->params_.chunker_seed);
  if (r->uses_dictionaries()) r->load_dictionaries();
  return r;
}

std::string Repository::save_json(FileType t, const json& j) { return save_text(t, j.dump()); }

std::string Repository::save_text(FileType t, std::string_view text) {
  // Never write what a reader would refuse (a snapshot that could not be listed).
  if (text.size() > file_size_ceiling(t))
    throw Error(Errc::invalid_input, file_kind_text(t) + " of " + std::to_string(text.size()) + " bytes exceeds the format's limit of " +
                                         std::to_string(file_size_ceiling(t)) + " bytes");
  Bytes plain(5);
  std::span<const uint8_t> z;
  if (compress_if_useful(as_bytes(text), z, 3)) {
    plain[0] = kFileZstd;
    plain.insert(plain.end(), z.begin(), z.end());
  } else {
    plain[0] = kFileRaw;
    plain.insert(plain.end(), text.begin(), text.end());
  }
  put_u32le(plain.data() + 1, uint32_t(text.size()));
  Bytes sealed = aead_.seal(as_bytes(file_aad(t)), plain);
  std::string name = to_hex(crypto::sha256(sealed));
  be_->save({t, name}, sealed);
  // The next command reads it from the cache: with the entity tag the store gives it now.
  if (cache_ && (t == FileType::index || t == FileType::snapshot)) try {
      if (auto o = be_->stat({t, name}); o && !o->etag.empty()) {
        std::string fp = cache_fingerprint(*o);
        cache_->put(file_type_name(t), name, sealed, fp);
        std::lock_guard g(fp_mu_);
        fingerprints_[std::string(file_type_name(t)) + "/" + name] = std::move(fp);
      }
    } catch (const Error&) {
      // not cached: the next command reads it from the store
    }
  return name;
}

Bytes Repository::load_file(FileType t, const std::string& name) {
  std::string where = std::string(file_type_name(t)) + "/" + name;
  const size_t ceiling = file_size_ceiling(t);
  auto too_big = [&](uint64_t n, const char* what) {
    return Error(Errc::corrupt, "'" + where + "' " + what + " " + std::to_string(n) + " bytes, above the limit of " +
                                    std::to_string(ceiling) + " for " + file_kind_text(t) +
                                    " (docs/repository-format.md § 14): it is damaged or was not written by cairn; "
                                    "run 'cairnctl repo check'");
  };
  const char* cached_kind = cache_ && (t == FileType::index || t == FileType::snapshot) ? file_type_name(t) : nullptr;
  // Only an entry of what the store holds under the name now (its listing's entity tag).
  const std::string fp = cached_kind ? fingerprint(where) : std::string();
  Bytes sealed;
  bool from_cache = false;
  if (cached_kind && cache_reads_ && !fp.empty()) {
    if (auto b = cache_->get(cached_kind, name, fp)) {
      if (b->size() <= ceiling + 5 + crypto::kAeadOverhead && to_hex(crypto::sha256(*b)) == name) {
        sealed = std::move(*b);
        from_cache = true;
      } else {
        cache_->drop(cached_kind, name);  // damaged: the store's copy is read
      }
    }
  }
  if (!from_cache) {
    // The file is at most the text, its 5-byte header and the seal: checked before it is read.
    auto size = be_->size({t, name});
    if (!size) throw Error(Errc::not_found, "'" + where + "' does not exist");
    if (*size > ceiling + 5 + crypto::kAeadOverhead) throw too_big(*size, "has");
    sealed = be_->load({t, name});
    if (to_hex(crypto::sha256(sealed)) != name)
      throw Error(Errc::corrupt, "'" + where + "' does not match its name (truncated or damaged)");
    if (cached_kind && !fp.empty()) cache_->put(cached_kind, name, sealed, fp);
  }
  Bytes plain;
  if (!aead_.open(as_bytes(file_aad(t)), sealed, plain) || plain.size() < 5)
    throw Error(Errc::corrupt, "'" + where + "' fails authentication (damaged, or not written by this repository)");
  uint32_t raw_len = get_u32le(plain.data() + 1);
  std::span<const uint8_t> body(plain.data() + 5, plain.size() - 5);
  if (plain[0] == kFileZstd) {
    if (raw_len > ceiling) throw too_big(raw_len, "declares");
    Bytes text;
    if (std::string why = decompress(body, raw_len, text); !why.empty()) throw Error(Errc::corrupt, "'" + where + "' " + why);
    return text;
  }
  if (plain[0] != kFileRaw || body.size() != raw_len) throw Error(Errc::corrupt, "'" + where + "' has an unknown encoding");
  plain.erase(plain.begin(), plain.begin() + 5);
  return plain;
}

json Repository::load_json(FileType t, const std::string& name) {
  Bytes text = load_file(t, name);
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception&) {
    throw Error(Errc::corrupt, "'" + std::string(file_type_name(t)) + "/" + name + "' is not valid JSON");
  }
}

std::string Repository::fingerprint(const std::string& object) {
  std::lock_guard g(fp_mu_);
  auto it = fingerprints_.find(object);
  return it == fingerprints_.end() ? std::string() : it->second;
}

std::string Repository::pack_fingerprint(const std::string& pack) {
  const std::string object = "data/" + pack;
  if (std::string f = fingerprint(object); !f.empty()) return f;
  auto o = be_->stat({FileType::pack, pack});
  if (!o || o->etag.empty()) return {};
  std::string f = pack + ":" + cache_fingerprint(*o);
  std::lock_guard g(fp_mu_);
  fingerprints_[object] = f;
  return f;
}

std::vector<std::string> Repository::list(FileType t) {
  std::vector<std::string> out;
  const bool remember = cache_ && (t == FileType::index || t == FileType::snapshot);
  std::vector<std::pair<std::string, std::string>> fps;
  be_->list_info(t, [&](const ObjectInfo& o) {
    out.push_back(o.name);
    if (remember && !o.etag.empty()) fps.emplace_back(std::string(file_type_name(t)) + "/" + o.name, cache_fingerprint(o));
  });
  if (remember) {
    std::lock_guard g(fp_mu_);
    for (auto& [k, v] : fps) fingerprints_[k] = std::move(v);
  }
  std::sort(out.begin(), out.end());
  // What the store no longer lists leaves the cache.
  if (cache_ && (t == FileType::index || t == FileType::snapshot))
    cache_->keep_only(file_type_name(t), std::set<std::string>(out.begin(), out.end()));
  return out;
}

size_t Repository::index_load_threads() { return std::clamp<size_t>(usable_cpus(), 1, 4); }

std::vector<IndexProblem> Repository::load_index() {
  index_.clear();
  index_files_.clear();
  index_names_.clear();
  std::vector<IndexProblem> problems;
  // Reading, authenticating and parsing the files is most of the time every command
  // spends before its real work: a few at a time are decoded side by side, then added
  // in name order, so the index comes out the same and memory holds one batch.
  const std::vector<std::string> names = list(FileType::index);
  const size_t threads = index_load_threads();
  struct Decoded {
    IndexFile file;
    std::string error;
    std::exception_ptr fatal;  // anything but a damaged file (out of memory) ends the load as before
  };
  // A batch holds its files' entries until they are added: as many as threads.
  for (size_t first = 0; first < names.size(); first += threads) {
    size_t n = std::min(names.size() - first, threads);
    std::vector<Decoded> batch(n);
    std::atomic<size_t> next{0};
    auto work = [&] {
      for (size_t i; (i = next++) < n;) {
        try {
          batch[i].file = decode_index_file_bytes(load_file(FileType::index, names[first + i]), names[first + i]);
        } catch (const Error& e) {
          batch[i].error = e.what();
        } catch (...) {
          batch[i].fatal = std::current_exception();
        }
      }
    };
    std::vector<std::thread> helpers;
    for (size_t t = 1; t < std::min(threads, n); ++t) helpers.emplace_back(work);
    work();
    for (auto& t : helpers) t.join();
    for (size_t i = 0; i < n; ++i) {
      if (batch[i].fatal) std::rethrow_exception(batch[i].fatal);
      if (!batch[i].error.empty()) {
        problems.push_back({names[first + i], batch[i].error});
        continue;
      }
      size_t blobs_in_file = 0;
      for (const auto& [pack, blobs] : batch[i].file.packs) {
        index_.add_pack(pack, blobs);
        blobs_in_file += blobs.size();
      }
      index_.note_file(blobs_in_file);
      index_files_.push_back(names[first + i]);
      index_names_.insert(names[first + i]);
    }
  }
  // A damaged file is not read again by refresh_index() either.
  for (const auto& p : problems) index_names_.insert(p.index_file);
  // Cached trees the store's index no longer has (pruned) leave the cache.
  if (cache_)
    cache_->keep_if("trees", [&](const std::string& n) {
      BlobId id{};
      return from_hex(n, std::span<uint8_t>(id.data(), id.size())) && index_.contains(id);
    });
  return problems;
}

size_t Repository::refresh_index() {
  std::lock_guard rg(refresh_mu_);
  std::vector<std::string> fresh;
  {
    const std::vector<std::string> names = list(FileType::index);
    std::lock_guard g(wmu_);
    for (const auto& n : names)
      if (!index_names_.count(n)) fresh.push_back(n);
  }
  size_t before = index_.blob_count();
  for (const auto& n : fresh) {
    IndexFile f;
    try {
      f = decode_index_file_bytes(load_file(FileType::index, n), n);
    } catch (const Error&) {
      // damaged, or removed since the listing (another writer's consolidation): check reports the first
    }
    std::lock_guard g(wmu_);
    for (const auto& [pack, blobs] : f.packs) {
      if (share_)
        for (const auto& b : blobs)
          if (!index_.contains(b.id)) from_others_.insert(b.id);
      index_.add_pack(pack, blobs);
    }
    if (index_names_.insert(n).second) index_files_.push_back(n);
  }
  return index_.blob_count() - before;
}

bool Repository::claim(const BlobId& id) {
  if (!be_->exclusive_create_enforced()) return true;
  const std::string name = id_hex(id);
  {
    std::lock_guard g(claims_mu_);
    if (my_claims_.count(name)) return true;  // the same content twice in this backup
  }
  auto now = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  std::string text = json{{"host", hostname()}, {"pid", int64_t(::getpid())}, {"time", int64_t(now)}}.dump();
  for (int attempt = 0; attempt < 2; ++attempt) {
    try {
      if (be_->create_exclusive({FileType::claim, name}, as_bytes(text))) {
        std::lock_guard g(claims_mu_);
        my_claims_.insert(name);
        return true;
      }
      // Someone claims it: a writer that stopped long ago does not.
      Bytes b = be_->load({FileType::claim, name});
      json j = json::parse(std::string(b.begin(), b.end()), nullptr, false);
      int64_t t = j.is_object() && j.contains("time") && j["time"].is_number_integer() ? j["time"].get<int64_t>() : 0;
      if (now - t < 600) return false;
      be_->remove({FileType::claim, name});
    } catch (const Error&) {
      return true;  // claims only save space: without one, store
    }
  }
  return true;
}

void Repository::release_claims() noexcept {
  std::unordered_set<std::string> mine;
  {
    std::lock_guard g(claims_mu_);
    mine.swap(my_claims_);
  }
  for (const auto& n : mine) {
    try {
      be_->remove({FileType::claim, n});
    } catch (const Error& e) {
      // Left: it is ignored once 10 minutes old, and prune removes it. Credentials
      // that may not delete (an agent's on an object store) are refused every
      // time: the rest are not tried.
      if (e.code() == Errc::denied) break;
    }
  }
}

bool Repository::stored_by_others(const BlobId& id) const {
  std::lock_guard g(const_cast<std::mutex&>(wmu_));
  return from_others_.count(id) != 0;
}

bool Repository::wait_for_blob(const BlobId& id, std::chrono::milliseconds timeout, const std::atomic<bool>* cancel) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  auto known = [&] {
    if (index_.contains(id)) return true;
    std::lock_guard g(wmu_);
    return claimed_.count(id) != 0;  // this writer stores it already
  };
  // What this writer holds goes out first: another writer may be waiting for
  // it while this one waits for that one's.
  if (!known()) publish_open_pack(0);
  while (!known()) {
    if (std::chrono::steady_clock::now() >= deadline || (cancel && cancel->load())) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    try {
      refresh_index();
    } catch (const Error&) {
      return false;
    }
  }
  return true;
}

void Repository::publish_open_pack(size_t min_bytes) {
  PackBuilder pb;
  {
    std::unique_lock lk(wmu_);
    PackBuilder& open = builders_[int(BlobType::data)];
    if (open.empty() || open.size() < min_bytes) return;
    std::swap(pb, open);
  }
  queue_pack(std::move(pb));
}

void Repository::maybe_refresh_index() {
  using namespace std::chrono;
  int64_t now = duration_cast<nanoseconds>(steady_clock::now().time_since_epoch()).count();
  int64_t last = last_refresh_ns_.load(std::memory_order_relaxed);
  if (now - last < kShareRefreshNs || !last_refresh_ns_.compare_exchange_strong(last, now)) return;
  try {
    refresh_index();
  } catch (const Error&) {
    // a listing that failed costs only dedup; the next try is kShareRefreshNs away
  }
}

bool Repository::open_blob(const PackBlob& b, std::span<const uint8_t> sealed, Bytes& out, std::string& why) const {
  auto aad = blob_aad(b.type, b.id);
  thread_local Bytes plain;  // reused: a fresh buffer per blob costs page faults on every byte read
  struct Trim {              // but a huge tree's buffer is not kept by a long-lived thread
    ~Trim() {
      if (plain.capacity() > (16u << 20)) Bytes().swap(plain);
    }
  } trim;
  if (!aead_.open(aad, sealed, plain)) {
    why = "fails authentication (the stored bytes were changed)";
    return false;
  }
  std::span<const uint8_t> data;
  if (!finish_blob(b, plain, out, data, why)) return false;
  if (data.data() == plain.data()) std::swap(out, plain);  // stored uncompressed; plain gets out's old buffer to reuse
  return true;
}

bool Repository::verify_blob(const PackBlob& b, std::span<const uint8_t> sealed, std::string& why) const {
  if (!(b.flags & kBlobCompressed) || (b.flags & kBlobDictionary) || b.raw_length < kStreamTreeBytes ||
      b.raw_length > max_blob_size(b.type)) {
    Bytes out;
    return open_blob(b, sealed, out, why);
  }
  Bytes frame;
  if (!aead_.open(blob_aad(b.type, b.id), sealed, frame)) {
    why = "fails authentication (the stored bytes were changed)";
    return false;
  }
  DecompressStream z(std::span<const uint8_t>(frame), b.raw_length);
  auto h = id_hash_->stream();
  Bytes piece;
  while (z.more(piece)) {
    h.update(piece);
    piece.clear();
  }
  if (!z.error().empty()) {
    why = z.error();
    return false;
  }
  if (!crypto::equal(h.finish(), b.id)) {
    why = "content does not match its id";
    return false;
  }
  return true;
}

bool Repository::open_blob_in_place(const PackBlob& b, std::span<uint8_t> sealed, Bytes& out, std::span<const uint8_t>& data,
                                    std::string& why) const {
  auto plain = aead_.open_in_place(blob_aad(b.type, b.id), sealed);
  if (!plain) {
    why = "fails authentication (the stored bytes were changed)";
    return false;
  }
  return finish_blob(b, *plain, out, data, why);
}

bool Repository::finish_blob(const PackBlob& b, std::span<const uint8_t> plain, Bytes& out, std::span<const uint8_t>& data,
                             std::string& why) const {
  if (b.flags & kBlobCompressed) {
    if (b.raw_length > max_blob_size(b.type)) {
      why = "declares " + std::to_string(b.raw_length) + " bytes, above the limit of " + std::to_string(max_blob_size(b.type)) + " for a " +
            (b.type == BlobType::tree ? "tree" : "data") + " blob (docs/repository-format.md § 14)";
      return false;
    }
    std::string e;
    if (b.flags & kBlobDictionary) {
      uint32_t did = frame_dictionary_id(plain);
      auto dict = dictionary(did);
      if (!dict)
        e = "needs compression dictionary " + std::to_string(did) +
            ", which the repository does not have (dicts/ lost or damaged: see 'cairnctl repo check')";
      else
        e = dict->decompress(plain, b.raw_length, out);
    } else {
      e = decompress(plain, b.raw_length, out);
    }
    if (!e.empty()) {
      why = e;
      return false;
    }
    data = out;
  } else {
    if (plain.size() != b.raw_length) {
      why = "has the wrong length";
      return false;
    }
    data = plain;
  }
  if (!crypto::equal(blob_id(data), b.id)) {
    why = "content does not match its id";
    return false;
  }
  return true;
}

Bytes Repository::load_blob(const BlobId& id) {
  auto loc = index_.lookup(id);
  if (!loc) throw Error(Errc::not_found, "blob '" + id_hex(id) + "' is not in the index (run 'cairnctl repo check')");
  std::string pack = id_hex(loc->pack);
  PackBlob b{id, loc->type, loc->flags, loc->offset, loc->length, loc->raw_length};
  Bytes out;
  std::string why;
  // Trees of a remote repository: the cached sealed copy, if it still authenticates.
  // Believed only while the pack holds what it held when the entry was made (its entity tag).
  const bool cached = cache_ && cache_reads_ && loc->type == BlobType::tree;
  const std::string fp = cached ? pack_fingerprint(pack) : std::string();
  if (cached && !fp.empty()) {
    if (auto c = cache_->get("trees", id_hex(id), fp)) {
      if (c->size() == loc->length && open_blob(b, *c, out, why)) return out;
      cache_->drop("trees", id_hex(id));
    }
  }
  Bytes sealed;
  try {
    sealed = be_->load({FileType::pack, pack}, loc->offset, loc->length);
  } catch (const Error& e) {
    throw Error(e.code() == Errc::not_found ? Errc::corrupt : e.code(), "blob '" + id_hex(id) + "' in pack '" + pack + "': " + e.what());
  }
  if (!open_blob(b, sealed, out, why)) throw Error(Errc::corrupt, "blob '" + id_hex(id) + "' in pack '" + pack + "' " + why);
  if (cached && !fp.empty()) cache_->put("trees", id_hex(id), sealed, fp);
  return out;
}

namespace {
// The second pass over a large tree's frame, verified by the first.
class StreamedTreeText : public TreeTextSource {
 public:
  StreamedTreeText(Bytes frame, size_t raw, std::string name) : z_(std::move(frame), raw), name_(std::move(name)) {}
  bool more(Bytes& out) override {
    if (z_.more(out)) return true;
    if (!z_.error().empty()) throw Error(Errc::corrupt, name_ + " " + z_.error());
    return false;
  }

 private:
  DecompressStream z_;
  std::string name_;
};
}  // namespace

TreeReader Repository::open_tree(const BlobId& id) {
  auto loc = index_.lookup(id);
  if (!loc || loc->type != BlobType::tree || !(loc->flags & kBlobCompressed) || (loc->flags & kBlobDictionary) ||
      loc->raw_length < kStreamTreeBytes)
    return TreeReader(load_blob(id));
  const std::string pack = id_hex(loc->pack), name = "blob '" + id_hex(id) + "' in pack '" + pack + "'";
  PackBlob b{id, loc->type, loc->flags, loc->offset, loc->length, loc->raw_length};
  // A remote repository's cached copy is read by load_blob, which drops it when it does not verify.
  const std::string fp = cache_ && cache_reads_ ? pack_fingerprint(pack) : std::string();
  if (!fp.empty() && cache_->get("trees", id_hex(id), fp)) return TreeReader(load_blob(id));
  Bytes sealed, frame;
  try {
    sealed = be_->load({FileType::pack, pack}, loc->offset, loc->length);
  } catch (const Error& e) {
    throw Error(e.code() == Errc::not_found ? Errc::corrupt : e.code(), name + ": " + e.what());
  }
  if (!aead_.open(blob_aad(b.type, id), sealed, frame))
    throw Error(Errc::corrupt, name + " fails authentication (the stored bytes were changed)");
  if (b.raw_length > max_blob_size(b.type))
    throw Error(Errc::corrupt, name + " declares " + std::to_string(b.raw_length) + " bytes, above the limit of " +
                                   std::to_string(max_blob_size(b.type)) + " for a tree blob (docs/repository-format.md § 14)");
  {
    // First pass: the text's id, a piece at a time.
    DecompressStream z(frame, b.raw_length);
    auto h = id_hash_->stream();
    Bytes piece;
    while (z.more(piece)) {
      h.update(piece);
      piece.clear();
    }
    if (!z.error().empty()) throw Error(Errc::corrupt, name + " " + z.error());
    if (!crypto::equal(h.finish(), id)) throw Error(Errc::corrupt, name + " content does not match its id");
  }
  if (!fp.empty()) cache_->put("trees", id_hex(id), sealed, fp);
  Bytes().swap(sealed);
  return TreeReader(std::make_unique<StreamedTreeText>(std::move(frame), b.raw_length, name));
}

bool Repository::save_blob(BlobType t, std::span<const uint8_t> data, BlobId& id, BlobHint hint) {
  id = blob_id(data);
  return save_blob_as(t, data, id, hint);
}

bool Repository::save_blob_as(BlobType t, std::span<const uint8_t> data, const BlobId& id, BlobHint hint) {
  // Never store what a reader would refuse: that would be a snapshot that cannot restore.
  if (data.size() > max_blob_size(t))
    throw Error(Errc::invalid_input, std::string(t == BlobType::tree ? "a directory listing" : "a chunk") + " of " +
                                         std::to_string(data.size()) + " bytes exceeds the format's limit of " +
                                         std::to_string(max_blob_size(t)) + " bytes");
  if (!claim_new(id)) return false;
  std::shared_ptr<const CompressionDictionary> dict;
  if (t == BlobType::data && hint == BlobHint::page && uses_dictionaries()) {
    dict = page_dictionary();
    if (!dict && sample_for_dictionary(id, data)) return true;  // held back; stored with the dictionary
    if (!dict) dict = page_dictionary();
  }
  store_claimed(t, id, data, dict.get());
  return true;
}

bool Repository::claim_new(const BlobId& id) {
  if (share_ && !index_.contains(id)) maybe_refresh_index();
  std::unique_lock lk(wmu_);
  if (index_.contains(id) || !claimed_.insert(id).second) {
    ++stats_.blobs_dedup;
    return false;
  }
  return true;
}

// Compresses (with `dict` when given), seals and adds a claimed blob to the open
// pack of its type; queues the pack when it is full.
void Repository::store_claimed(BlobType t, const BlobId& id, std::span<const uint8_t> data, const CompressionDictionary* dict) {
  std::span<const uint8_t> z;
  uint8_t flags = 0;
  if (dict ? dict->compress_if_useful(data, z) : compress_if_useful(data, z, params_.zstd_level))
    flags = dict ? kBlobCompressed | kBlobDictionary : kBlobCompressed;
  pack_blob(t, id, flags, flags ? z : data, data.size());
}

Repository::BlobStream::BlobStream(Repository& r, BlobType t) : r_(r), t_(t), hash_(r.id_hash_->stream()), z_(r.params_.zstd_level) {}

std::unique_ptr<Repository::BlobStream> Repository::blob_stream(BlobType t) {
  return std::unique_ptr<BlobStream>(new BlobStream(*this, t));
}

void Repository::BlobStream::add(std::span<const uint8_t> piece) {
  // Never store what a reader would refuse (as save_blob_as).
  if (z_.text_size() + piece.size() > max_blob_size(t_))
    throw Error(Errc::invalid_input, std::string(t_ == BlobType::tree ? "a directory listing" : "a chunk") + " of more than " +
                                         std::to_string(max_blob_size(t_)) + " bytes exceeds the format's limit");
  hash_.update(piece);
  z_.add(piece);
}

BlobId Repository::BlobStream::finish() {
  BlobId id = hash_.finish();
  if (!r_.claim_new(id)) return id;
  Bytes frame = z_.finish();
  r_.pack_blob(t_, id, kBlobCompressed, frame, size_t(z_.text_size()));
  return id;
}

void Repository::pack_blob(BlobType t, const BlobId& id, uint8_t flags, std::span<const uint8_t> payload, size_t raw_size) {
  thread_local Bytes sealed;
  auto aad = blob_aad(t, id);
  sealed.clear();
  aead_.seal(aad, payload, sealed);
  PackBuilder full;
  {
    std::unique_lock lk(wmu_);
    PackBuilder& pb = builders_[int(t)];
    size_t limit = t == BlobType::tree ? std::min<size_t>(params_.pack_size, kTreePackSize) : params_.pack_size;
    if (share_) limit = std::min(limit, kSharePackSize);
    // Close the pack before it would overflow, its header counted (small files:
    // 42 bytes an entry), so its buffer never reallocates.
    if (!pb.empty() && (pb.size() + sealed.size() + (pb.count() + 1) * kPackHeaderEntrySize > limit || pb.count() >= kWritePackBlobs))
      std::swap(full, pb);
    if (pb.empty()) {
      if (!spare_packs_.empty()) {
        pb.adopt(std::move(spare_packs_.back()));
        spare_packs_.pop_back();
      }
      pb.reserve(std::max<size_t>(limit, sealed.size()) + (256u << 10));
    }
    pb.add(id, t, flags, uint32_t(raw_size), sealed);
    ++stats_.blobs_new;
    stats_.bytes_raw_new += raw_size;
    stats_.bytes_stored_new += sealed.size();
    if (full.empty() && pb.size() >= limit) std::swap(full, pb);
  }
  if (!full.empty()) queue_pack(std::move(full));
}

void Repository::load_dictionaries() {
  std::vector<std::string> names = list(FileType::dict);
  if (names.size() > kMaxDictionaries) {
    dict_problems_.push_back("dicts/ holds " + std::to_string(names.size()) + " files, more than the " + std::to_string(kMaxDictionaries) +
                             " a reader loads (§ 14): only the first are used");
    names.resize(kMaxDictionaries);
  }
  for (const auto& name : names) {
    std::string where = "dicts/" + name;
    try {
      json j = load_json(FileType::dict, name);
      Bytes content;
      if (!j.is_object() || !j.contains("kind") || !j["kind"].is_string() || !j.contains("dictionary") || !j["dictionary"].is_string() ||
          !from_base64(j["dictionary"].get<std::string>(), content))
        throw Error(Errc::corrupt, "'" + where + "' is malformed");
      std::string why;
      auto d = CompressionDictionary::make(std::move(content), std::max(params_.zstd_level, kDictMinLevel), why);
      if (!d) throw Error(Errc::corrupt, "'" + where + "' " + why);
      if (!j.contains("id") || !j["id"].is_number_unsigned() || j["id"].get<uint64_t>() != d->id() || d->id() < 32768)
        throw Error(Errc::corrupt, "'" + where + "' names an id that is not its dictionary's (or one in zstd's reserved range)");
      if (dicts_.count(d->id()))
        throw Error(Errc::corrupt, "'" + where + "' has dictionary id " + std::to_string(d->id()) + ", which another file has too");
      dicts_[d->id()] = d;
      // Several page dictionaries (two writers trained at once): writers agree on the first by name.
      if (j["kind"] == "page" && !page_dict_) page_dict_ = d;
    } catch (const Error& e) {
      dict_problems_.push_back(e.what());
    }
  }
  trained_ = page_dict_ != nullptr;
}

size_t Repository::dictionary_count() const {
  std::shared_lock lk(dmu_);
  return dicts_.size();
}

std::vector<std::string> Repository::dictionary_problems() const {
  std::shared_lock lk(dmu_);
  return dict_problems_;
}

std::shared_ptr<const CompressionDictionary> Repository::dictionary(uint32_t id) const {
  std::shared_lock lk(dmu_);
  auto it = dicts_.find(id);
  return it == dicts_.end() ? nullptr : it->second;
}

std::shared_ptr<const CompressionDictionary> Repository::page_dictionary() const {
  std::shared_lock lk(dmu_);
  return page_dict_;
}

// Collects new page chunks until there are enough to train on, then trains the
// page dictionary (on the thread that brought the last sample), stores it, and
// only then lets writers use it: no blob names a dictionary the repository does
// not hold. The sampled chunks themselves are held back (claimed, not yet in a
// pack) and stored compressed with the dictionary once it exists, so none of a
// database's chunks is stored without it; a writer that flushes before it has
// enough stores them compressed alone (flush_held_samples). Other writers of
// page chunks wait for the training (a tenth of a second, once per repository):
// going on without it, they would store a whole backup's worth of chunks
// compressed alone on a busy machine. Returns false when the dictionary's
// question is settled (the caller stores the chunk itself), true when the chunk
// was taken.
bool Repository::sample_for_dictionary(const BlobId& id, std::span<const uint8_t> data) {
  std::unique_lock lk(smu_);
  if (trained_) return false;
  samples_.insert(samples_.end(), data.begin(), data.end());
  sample_sizes_.push_back(data.size());
  sample_ids_.push_back(id);
  if (samples_.size() < kDictSampleBytes) return true;
  trained_ = true;  // one try per session, whatever comes of it
  std::vector<uint32_t> taken;
  {
    std::shared_lock dl(dmu_);
    for (const auto& [did, d] : dicts_) taken.push_back(did);
  }
  Bytes dict = train_dictionary(samples_, sample_sizes_, kDictMaxSize, taken);
  std::shared_ptr<const CompressionDictionary> d;
  if (!dict.empty()) {
    std::string why;
    d = CompressionDictionary::make(dict, std::max(params_.zstd_level, kDictMinLevel), why);
  }
  if (d) {
    json j = {{"version", 1}, {"kind", "page"}, {"id", d->id()}, {"created", now_rfc3339()}, {"dictionary", to_base64(dict)}};
    save_json(FileType::dict, j);  // before any blob names it
    std::unique_lock dl(dmu_);
    dicts_[d->id()] = d;
    page_dict_ = d;
  }
  store_held_samples(lk, d.get());  // with the dictionary, or alone when there is none worth having
  return true;
}

void Repository::flush_held_samples() {
  std::unique_lock lk(smu_);
  store_held_samples(lk, nullptr);
}

void Repository::store_held_samples(std::unique_lock<std::mutex>&, const CompressionDictionary* dict) {
  size_t off = 0;
  for (size_t i = 0; i < sample_ids_.size(); ++i) {
    store_claimed(BlobType::data, sample_ids_[i], std::span<const uint8_t>(samples_).subspan(off, sample_sizes_[i]), dict);
    off += sample_sizes_[i];
  }
  Bytes().swap(samples_);
  std::vector<size_t>().swap(sample_sizes_);
  std::vector<BlobId>().swap(sample_ids_);
}

// Packs are written by one background thread so that the workers keep hashing,
// compressing and encrypting while a pack is fsynced (kRemoteUploads threads for
// an object store, where a pack's upload is a round trip). At most
// kMaxQueuedPacks wait, which bounds memory.
void Repository::queue_pack(PackBuilder&& pb) {
  std::unique_lock lk(wq_mu_);
  if (write_error_) std::rethrow_exception(write_error_);
  if (writers_.empty())
    for (size_t i = 0, n = be_->caps().remote ? kRemoteUploads : 1; i < n; ++i) writers_.emplace_back([this] { writer_loop(); });
  wq_cv_.wait(lk, [&] { return wq_.size() < kMaxQueuedPacks || write_error_; });
  if (write_error_) std::rethrow_exception(write_error_);
  wq_.push_back(std::move(pb));
  wq_cv_.notify_all();
}

void Repository::writer_loop() {
  std::unique_lock lk(wq_mu_);
  for (;;) {
    wq_cv_.wait(lk, [&] { return !wq_.empty() || wq_stop_; });
    if (wq_.empty()) return;
    PackBuilder pb = std::move(wq_.front());
    wq_.pop_front();
    ++wq_busy_;
    lk.unlock();
    try {
      write_pack(pb);
    } catch (...) {
      lk.lock();
      if (!write_error_) write_error_ = std::current_exception();
      wq_.clear();
      --wq_busy_;
      wq_cv_.notify_all();
      continue;
    }
    lk.lock();
    --wq_busy_;
    wq_cv_.notify_all();
  }
}

void Repository::drain_writer() {
  std::unique_lock lk(wq_mu_);
  wq_cv_.wait(lk, [&] { return (wq_.empty() && wq_busy_ == 0) || write_error_; });
  if (write_error_) std::rethrow_exception(write_error_);
}

void Repository::stop_writer() {
  {
    std::lock_guard lk(wq_mu_);
    wq_stop_ = true;
  }
  wq_cv_.notify_all();
  for (auto& w : writers_)
    if (w.joinable()) w.join();
  writers_.clear();
}

void Repository::write_pack(PackBuilder& pb) {
  std::vector<PackBlob> blobs;
  Bytes pack = pb.finish(aead_, blobs);
  BlobId pid = pack_id(pack);
  be_->save({FileType::pack, id_hex(pid)}, pack);
  // A remote repository's next backup reads these trees back as its parent's: from the
  // cache, under the pack's entity tag as the store gives it now.
  if (cache_ && !blobs.empty() && blobs.front().type == BlobType::tree) try {
      const std::string hex = id_hex(pid);
      if (auto o = be_->stat({FileType::pack, hex}); o && !o->etag.empty()) {
        std::string fp = hex + ":" + cache_fingerprint(*o);
        for (const auto& b : blobs)
          if (b.type == BlobType::tree && size_t(b.offset) + b.length <= pack.size())
            cache_->put("trees", id_hex(b.id), std::span<const uint8_t>(pack.data() + b.offset, b.length), fp);
        std::lock_guard g(fp_mu_);
        fingerprints_["data/" + hex] = std::move(fp);
      }
    } catch (const Error&) {
      // not cached: the next backup reads them from the store
    }
  std::unique_lock lk(wmu_);
  index_.add_pack(pid, blobs);
  for (const auto& b : blobs) claimed_.erase(b.id);
  pending_blobs_ += blobs.size();
  pending_.packs.emplace_back(pid, std::move(blobs));
  ++stats_.packs_written;
  // One spare per pack that can be in flight (filling, queued, writing) is enough.
  if (spare_packs_.size() < 2 && pack.capacity() >= params_.pack_size) spare_packs_.push_back(std::move(pack));
  maybe_flush_index(lk, false);
}

void Repository::maybe_flush_index(std::unique_lock<std::mutex>& lk, bool force) {
  if (pending_.packs.empty()) return;
  const size_t flush_packs = be_->caps().remote ? kRemoteIndexFlushPacks : kIndexFlushPacks;
  bool due = force || share_ || pending_.packs.size() >= flush_packs || pending_blobs_ >= kIndexMaxBlobs ||
             std::chrono::steady_clock::now() - last_index_write_ >= kIndexFlushInterval;
  if (!due) return;
  IndexFile f = std::move(pending_);
  pending_ = {};
  pending_blobs_ = 0;
  last_index_write_ = std::chrono::steady_clock::now();
  lk.unlock();
  std::string name = write_index_file(f);
  lk.lock();
  index_files_.push_back(name);
  index_names_.insert(name);
  ++stats_.index_files_written;
  if (share_) session_index_.emplace_back(name, std::move(f));
}

// The index files written after every pack while sharing writes become one:
// it names them as superseded, and they are removed once it is stored.
void Repository::consolidate_session_index() {
  std::vector<std::pair<std::string, IndexFile>> files;
  {
    std::lock_guard g(wmu_);
    files.swap(session_index_);
  }
  if (files.size() < 2) return;
  IndexFile all;
  for (auto& [name, f] : files) {
    all.supersedes.push_back(name);
    for (auto& p : f.packs) all.packs.push_back(std::move(p));
  }
  std::string name = write_index_file(all);
  {
    std::lock_guard g(wmu_);
    index_files_.push_back(name);
    index_names_.insert(name);
    ++stats_.index_files_written;
  }
  for (const auto& [old, f] : files) {
    try {
      be_->remove({FileType::index, old});
    } catch (const Error&) {
      // left: it lists the same packs, and the next prune removes it
    }
  }
}

std::string Repository::write_index_file(const IndexFile& f) {
  // Split between packs after kIndexMaxBlobs entries, so no index file nears its
  // ceiling however large the repository (a pack's own list is never split: it is
  // at most kMaxPackBlobs entries). Every part names the superseded files.
  IndexFile part;
  part.supersedes = f.supersedes;
  size_t in_part = 0;
  for (size_t i = 0; i < f.packs.size(); ++i) {
    part.packs.push_back(f.packs[i]);
    in_part += f.packs[i].second.size();
    if (in_part >= kIndexMaxBlobs && i + 1 < f.packs.size()) {
      save_text(FileType::index, encode_index_file_bytes(part));
      part.packs.clear();
      in_part = 0;
    }
  }
  return save_text(FileType::index, encode_index_file_bytes(part));
}

void Repository::flush() {
  flush_held_samples();  // every claimed blob is in a pack before the index is written
  for (int t = 0; t < 2; ++t) {
    PackBuilder pb;
    {
      std::unique_lock lk(wmu_);
      std::swap(pb, builders_[t]);
    }
    if (!pb.empty()) queue_pack(std::move(pb));
  }
  drain_writer();
  std::unique_lock lk(wmu_);
  spare_packs_.clear();  // a long-running agent does not keep them between backups
  maybe_flush_index(lk, true);
  lk.unlock();
  if (share_) consolidate_session_index();
}

WriteStats Repository::stats() const {
  std::unique_lock lk(const_cast<std::mutex&>(wmu_));
  return stats_;
}

}  // namespace cairn::repo
