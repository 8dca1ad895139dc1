#pragma once
// The in-memory index: blob id -> pack, offset, length. Built from index files,
// which can always be rebuilt from pack headers.
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

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
  struct Entry {
    uint32_t pack;
    uint32_t offset;
    uint32_t length;
    uint32_t raw_length;
    BlobType type;
    uint8_t flags;
  };
  mutable std::shared_mutex mu_;
  std::vector<BlobId> packs_;
  std::unordered_map<BlobId, uint32_t, BlobIdHash> pack_no_;
  std::unordered_map<BlobId, Entry, BlobIdHash> blobs_;
};

// One index file's content: the packs it describes and the index files it replaces.
struct IndexFile {
  std::vector<std::string> supersedes;
  std::vector<std::pair<BlobId, std::vector<PackBlob>>> packs;
};

nlohmann::json encode_index_file(const IndexFile& f);
// Throws Error(Errc::corrupt) on any malformed field.
IndexFile decode_index_file(const nlohmann::json& j, const std::string& name);

}  // namespace cairn::repo
