#pragma once
// The repository: config, keys, encrypted files, packed blobs and the index.
// Callers (archiver, restorer, checker, prune) build on this face only.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "common/repo/chunker.h"
#include "common/repo/compress.h"
#include "common/repo/index.h"
#include "common/repo/keys.h"
#include "common/repo/pack.h"
#include "common/repo/storage/backend.h"
#include "common/repo/types.h"

namespace cairn::repo {
namespace storage {
class ObjectCache;
}
class TreeReader;

struct RepoParams {
  int version = 0;  // the config's format version (§ 2)
  std::string id;
  Bytes chunker_seed;
  int zstd_level = 3;
  uint32_t pack_size = 16u << 20;
};

struct InitOptions {
  KdfParams kdf;
  int zstd_level = 1;
  uint32_t pack_size = 8u << 20;
};

struct WriteStats {
  uint64_t blobs_new = 0;
  uint64_t blobs_dedup = 0;
  uint64_t bytes_raw_new = 0;     // plaintext bytes of new blobs
  uint64_t bytes_stored_new = 0;  // bytes added to packs (compressed + sealed)
  uint64_t packs_written = 0;
  uint64_t index_files_written = 0;
};

// What a data blob holds, as far as the writer knows: page-structured chunks
// (databases, cut with the page profile) are compressed with the repository's
// dictionary for them (§ 5.1).
enum class BlobHint { none, page };

// A problem met while loading the index; loading goes on with the rest.
struct IndexProblem {
  std::string index_file;
  std::string message;
};

class Repository {
 public:
  // Creates a new repository; returns the first key slot's id.
  static std::string init(Backend& be, const Secret& secret, const InitOptions& opt = {});
  // Throws Errc::no_repo, Errc::wrong_key, Errc::unsupported or Errc::corrupt.
  static std::unique_ptr<Repository> open(std::unique_ptr<Backend> be, const Secret& secret);
  ~Repository();

  Backend& backend() { return *be_; }
  // The local cache of a remote repository (storage/cache.h), or null.
  const storage::ObjectCache* cache() const { return cache_.get(); }
  // Whether the cache's entries may be read (check turns it off: it reads the store, always).
  void set_cache_reads(bool on) { cache_reads_ = on; }
  // Objects this open read from an earlier version the store keeps, because the
  // current one is damaged (config, a key slot): `check` names them and
  // `check --recover` puts them back.
  const std::vector<EarlierVersionUsed>& earlier_versions_used() const { return earlier_used_; }
  void earlier_versions_put_back() { earlier_used_.clear(); }
  const RepoParams& params() const { return params_; }
  const GearTable& gear() const { return gear_; }
  const std::string& key_slot() const { return key_slot_; }
  const MasterKey& master_key() const { return mk_; }
  const crypto::Aead& aead() const { return aead_; }
  BlobId blob_id(std::span<const uint8_t> data) const { return (*id_hash_)(data); }

  // Encrypted, content-addressed JSON files (index, snapshot, lock).
  std::string save_json(FileType t, const nlohmann::json& j);
  std::string save_text(FileType t, std::string_view text);  // the same for text already written (JSON)
  nlohmann::json load_json(FileType t, const std::string& name);
  // The same file's verified plaintext, for callers with their own parser.
  Bytes load_file(FileType t, const std::string& name);
  std::vector<std::string> list(FileType t);

  // Loads every index file. Problems (unreadable, damaged) are returned, not thrown.
  std::vector<IndexProblem> load_index();
  // How many files load_index() reads at once (memory.h counts what they hold).
  static size_t index_load_threads();
  Index& index() { return index_; }
  // Names of the index files loaded by load_index().
  const std::vector<std::string>& index_files() const { return index_files_; }
  // Other writers store the same data at the same time (the replicas of a
  // Kafka partition, backed up by every broker's agent at once): packs are
  // closed at 4 MiB (and at the end of each large file, publish_open_pack)
  // and indexed at once, the index files other writers added are read at
  // most every 50 ms while storing, and at flush() the small index files of
  // this session are replaced by one (§ 13).
  void share_writes(bool on) {
    if (!on) release_claims();
    share_ = on;
    std::lock_guard g(wmu_);
    from_others_.clear();
  }
  // Reads the index files added since load_index() (or the last refresh);
  // returns how many blobs became known. Damaged ones are skipped.
  size_t refresh_index();
  // Sharing writes: queues the open data pack for writing (and indexing) now,
  // unless it holds less than min_bytes (a sliver at a file's end waits for more).
  void publish_open_pack(size_t min_bytes = 256u << 10);
  // Sharing writes: claims the content that starts with blob id (a large
  // file's first chunk) for this writer, § 13.1. True: this writer stores
  // it (no other claimed it, or the claim is older than 10 minutes, or the
  // backend cannot make claims). False: another writer stores it now; wait
  // for its blobs (wait_for_blob) before storing them too.
  bool claim(const BlobId& id);
  // Removes this writer's claims (at the end of a backup).
  void release_claims() noexcept;
  // Sharing writes: true when another writer stored blob id while this one
  // ran (it came with refresh_index()).
  bool stored_by_others(const BlobId& id) const;
  bool has_blob(const BlobId& id) const { return index_.contains(id); }
  // Waits (reading the other writers' new index files every 20 ms) until
  // the index knows id; false at the timeout or on cancel.
  bool wait_for_blob(const BlobId& id, std::chrono::milliseconds timeout, const std::atomic<bool>* cancel = nullptr);

  // Reads, authenticates, decompresses and verifies one blob. Throws Errc::corrupt
  // naming the blob and pack, or Errc::not_found when the index does not know it.
  Bytes load_blob(const BlobId& id);
  // A tree's nodes as they are read (tree.h). A large tree (kStreamTreeBytes of
  // text and more, compressed without a dictionary) is verified against its id
  // by a first pass that decompresses it piece by piece and then read by a
  // second one: the reader holds its compressed frame, not its text. Throws as
  // load_blob does.
  TreeReader open_tree(const BlobId& id);
  static constexpr uint32_t kStreamTreeBytes = 1u << 20;
  // Same checks on a sealed blob already read (restore and check read whole packs).
  // Returns false with why set when it does not verify.
  // The plaintext's keyed id is recomputed and compared: the AEAD tag proves who sealed
  // a blob, the id that it holds what its id names (a key holder cannot swap content).
  bool open_blob(const PackBlob& b, std::span<const uint8_t> sealed, Bytes& out, std::string& why) const;
  // The same checks, keeping nothing: a large blob (kStreamTreeBytes and more,
  // compressed without a dictionary) is decompressed and hashed a piece at a
  // time (check --read-data verifies a 200,000-entry tree without its text).
  bool verify_blob(const PackBlob& b, std::span<const uint8_t> sealed, std::string& why) const;
  // The same, decrypting in place (sealed's bytes are overwritten): `data` is then the
  // blob's content, inside `sealed` when stored uncompressed, else in `out`. The
  // restorer's buffers are its memory: this way a writer holds one read and one chunk.
  bool open_blob_in_place(const PackBlob& b, std::span<uint8_t> sealed, Bytes& out, std::span<const uint8_t>& data, std::string& why) const;

  // Stores a blob unless the repository (or this session) has it. Thread-safe.
  // Returns true when it was new.
  bool save_blob(BlobType t, std::span<const uint8_t> data, BlobId& id, BlobHint hint = BlobHint::none);
  // The same, for a caller that computed id = blob_id(data) already.
  bool save_blob_as(BlobType t, std::span<const uint8_t> data, const BlobId& id, BlobHint hint = BlobHint::none);
  // A blob written piece by piece (a large tree's text, never whole in memory):
  // hashed and compressed as its pieces come; finish() stores it unless the
  // repository has it, and returns its id. Thread-safe as save_blob is.
  class BlobStream {
   public:
    void add(std::span<const uint8_t> piece);
    BlobId finish();
    uint64_t size() const { return z_.text_size(); }

   private:
    friend class Repository;
    BlobStream(Repository& r, BlobType t);
    Repository& r_;
    BlobType t_;
    crypto::KeyedHash::Stream hash_;
    CompressStream z_;
  };
  std::unique_ptr<BlobStream> blob_stream(BlobType t);

  // Compression dictionaries (§ 5.1), loaded at open. A version-3 repository
  // gets its first one from the first few MiB of new page chunks a writer saves;
  // older versions never use them. Problems loading one (damaged, not a
  // dictionary, an id twice) are kept for check; blobs that need it fail to
  // open, naming it.
  bool uses_dictionaries() const { return params_.version >= 3; }
  size_t dictionary_count() const;
  std::vector<std::string> dictionary_problems() const;
  // Writes open packs and pending index entries. Must be called before a snapshot
  // that refers to the blobs is saved.
  void flush();
  // Writes index files describing the given packs (repair, prune): one, or several of
  // at most ~50,000 entries each for a large list; returns the last name.
  std::string write_index_file(const IndexFile& f);
  WriteStats stats() const;

 private:
  // Decompresses a blob's plaintext when it is compressed (into out) and checks its
  // length and id; data is then its content (out or plain).
  bool finish_blob(const PackBlob& b, std::span<const uint8_t> plain, Bytes& out, std::span<const uint8_t>& data, std::string& why) const;
  Repository() = default;
  void write_pack(PackBuilder& pb);
  void queue_pack(PackBuilder&& pb);
  void writer_loop();
  void drain_writer();
  void stop_writer();
  void maybe_flush_index(std::unique_lock<std::mutex>& lk, bool force);
  void maybe_refresh_index();
  void consolidate_session_index();
  void load_dictionaries();
  std::shared_ptr<const CompressionDictionary> dictionary(uint32_t id) const;
  std::shared_ptr<const CompressionDictionary> page_dictionary() const;
  bool sample_for_dictionary(const BlobId& id, std::span<const uint8_t> data);
  void flush_held_samples();
  void store_held_samples(std::unique_lock<std::mutex>& smu_held, const CompressionDictionary* dict);
  void store_claimed(BlobType t, const BlobId& id, std::span<const uint8_t> data, const CompressionDictionary* dict);
  // False when the repository (or this session) has id already: counted as deduplicated.
  bool claim_new(const BlobId& id);
  // Seals a blob's payload (compressed when flags say so) and adds it to the open pack of its type.
  void pack_blob(BlobType t, const BlobId& id, uint8_t flags, std::span<const uint8_t> payload, size_t raw_size);

  std::unique_ptr<Backend> be_;
  std::unique_ptr<storage::ObjectCache> cache_;  // a remote repository's local cache, or none
  std::atomic<bool> cache_reads_{true};
  // What the store holds under each name, as far as this open knows (storage/cache.h):
  // "index/<name>", "snapshots/<name>" -> entity tag from the listing; "data/<pack>" -> from a HEAD.
  std::string fingerprint(const std::string& object);
  std::string pack_fingerprint(const std::string& pack);
  std::mutex fp_mu_;
  std::unordered_map<std::string, std::string> fingerprints_;
  std::vector<EarlierVersionUsed> earlier_used_;
  RepoParams params_;
  MasterKey mk_;
  std::string key_slot_;
  crypto::Aead aead_{crypto::Key{}};
  std::unique_ptr<crypto::KeyedHash> id_hash_;
  GearTable gear_{};
  Index index_;
  std::vector<std::string> index_files_;
  std::unordered_set<std::string> index_names_;  // index_files_, for refresh_index()

  // share_writes(): refresh at most once a second; this session's index files
  std::atomic<bool> share_{false};
  std::mutex refresh_mu_;
  std::atomic<int64_t> last_refresh_ns_{0};
  std::vector<std::pair<std::string, IndexFile>> session_index_;  // under wmu_
  std::unordered_set<BlobId, BlobIdHash> from_others_;            // under wmu_: blobs refresh_index() brought
  std::mutex claims_mu_;
  std::unordered_set<std::string> my_claims_;

  // compression dictionaries, by id; the one page chunks are written with
  mutable std::shared_mutex dmu_;
  std::map<uint32_t, std::shared_ptr<const CompressionDictionary>> dicts_;
  std::shared_ptr<const CompressionDictionary> page_dict_;
  std::vector<std::string> dict_problems_;
  // samples of new page chunks until the first page dictionary is trained
  std::mutex smu_;
  Bytes samples_;
  std::vector<size_t> sample_sizes_;
  std::vector<BlobId> sample_ids_;  // held back: claimed, stored once the dictionary is settled
  bool trained_ = false;

  // writer state
  std::mutex wmu_;
  std::unordered_set<BlobId, BlobIdHash> claimed_;
  PackBuilder builders_[2];
  IndexFile pending_;
  size_t pending_blobs_ = 0;
  std::chrono::steady_clock::time_point last_index_write_ = std::chrono::steady_clock::now();
  WriteStats stats_;

  // background pack writer
  std::mutex wq_mu_;
  std::condition_variable wq_cv_;
  std::deque<PackBuilder> wq_;
  std::vector<Bytes> spare_packs_;  // buffers of written packs, for the next ones (under wmu_)
  int wq_busy_ = 0;
  bool wq_stop_ = false;
  std::exception_ptr write_error_;
  std::vector<std::thread> writers_;  // one for a local disk; kRemoteUploads for an object store
};

}  // namespace cairn::repo
