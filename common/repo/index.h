#pragma once
// The in-memory index: blob id -> pack, offset, length. Built from index files,
// which can always be rebuilt from pack headers.
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/repo/pack.h"

namespace cairn::repo {

struct BlobLocation {
  BlobId pack{};
  BlobType type = BlobType::data;
  uint8_t flags = 0;
  uint32_t offset = 0;
  uint32_t length = 0;
  uint32_t raw_length = 0;
};

class Index {
 public:
  void add_pack(const BlobId& pack, const std::vector<PackBlob>& blobs);
  std::optional<BlobLocation> lookup(const BlobId& id) const;
  bool contains(const BlobId& id) const;
  size_t blob_count() const;
  size_t pack_count() const;
  bool has_pack(const BlobId& pack) const;
  std::vector<BlobId> packs() const;
  void clear();

 private:
  // Fixed-size records in blocks that never move (no per-blob allocation, no copy
  // when growing), found through an open-addressing table of record numbers. Blob
  // ids are keyed hashes, so their first bytes are already uniformly distributed.
  struct Record {
    BlobId id;
    uint32_t pack;
    uint32_t offset;
    uint32_t length;
    uint32_t raw_length;
    BlobType type;
    uint8_t flags;
  };
  static constexpr size_t kBlockShift = 10;  // 1024 records (52 KiB) per block
  static constexpr size_t kBlockSize = size_t(1) << kBlockShift;
  const Record& rec(uint32_t i) const { return blocks_[i >> kBlockShift][i & (kBlockSize - 1)]; }
  // The slot holding id, or the empty slot where it would go.
  size_t find_slot(const BlobId& id) const;
  void grow_table();

  mutable std::shared_mutex mu_;
  std::vector<BlobId> packs_;
  std::unordered_map<BlobId, uint32_t, BlobIdHash> pack_no_;
  std::vector<std::unique_ptr<Record[]>> blocks_;
  uint32_t count_ = 0;
  std::vector<uint32_t> table_;  // record number + 1; 0 is empty; size a power of two

  size_t largest_file_ = 0;
  uint32_t largest_tree_raw_ = 0, largest_tree_sealed_ = 0;

 public:
  // Bytes held for blobs (records and table), for measurements and tests.
  size_t memory_bytes() const;
  // What memory.h's model of a command reads from the repository: the most
  // blobs one index file listed (noted by the loaders), and the largest tree
  // blob, its text and its stored size.
  void note_file(size_t blobs);
  size_t largest_file_blobs() const;
  uint32_t largest_tree_raw() const;
  uint32_t largest_tree_sealed() const;
};

// One index file's content: the packs it describes and the index files it replaces.
struct IndexFile {
  std::vector<std::string> supersedes;
  std::vector<std::pair<BlobId, std::vector<PackBlob>>> packs;
};

nlohmann::json encode_index_file(const IndexFile& f);
// The text encode_index_file(f).dump() gives, byte for byte, written straight:
// no document of ~200 bytes an entry before it.
std::string encode_index_file_bytes(const IndexFile& f);
// Throws Error(Errc::corrupt) on any malformed field.
// A file in encode_index_file's layout is parsed one pack at a time; the text
// taken by value is freed once its entries are read.
IndexFile decode_index_file_bytes(std::span<const uint8_t> text, const std::string& name);
IndexFile decode_index_file_bytes(Bytes&& text, const std::string& name);
IndexFile decode_index_file(const nlohmann::json& j, const std::string& name);

}  // namespace cairn::repo
