#pragma once
// Pack files: sealed blobs back to back, then a sealed header listing them, then
// an 8-byte trailer (header length, magic). See docs/repository-format.md.
#include <vector>

#include "common/repo/chunker.h"
#include "common/repo/storage/backend.h"
#include "common/repo/types.h"

namespace cairn::repo {

constexpr uint8_t kBlobCompressed = 1;
// With kBlobCompressed: the zstd frame was made with the repository's compression
// dictionary that its header names (docs/repository-format.md § 5.1).
constexpr uint8_t kBlobDictionary = 2;
constexpr size_t kPackHeaderEntrySize = 42;
constexpr size_t kPackTrailerSize = 8;
constexpr char kPackMagic[4] = {'C', 'P', 'K', '1'};

struct PackBlob {
  BlobId id{};
  BlobType type = BlobType::data;
  uint8_t flags = 0;
  uint32_t offset = 0;      // of the sealed blob in the pack
  uint32_t length = 0;      // sealed length
  uint32_t raw_length = 0;  // plaintext length before compression
};

// Largest plaintext a blob may have (its decompression ceiling): a data blob is one
// chunk, at most the chunker's largest size; a tree lists a whole directory,
// including files with millions of chunk ids, so it may be far larger.
constexpr uint32_t max_blob_size(BlobType t) { return t == BlobType::tree ? (1u << 30) : kMaxChunkSize; }

// The additional authenticated data of a sealed blob binds it to its type and id.
std::array<uint8_t, 33> blob_aad(BlobType t, const BlobId& id);

class PackBuilder {
 public:
  // sealed: the blob after compression and encryption.
  void add(const BlobId& id, BlobType type, uint8_t flags, uint32_t raw_length, std::span<const uint8_t> sealed);
  size_t size() const { return data_.size(); }
  void reserve(size_t n) { data_.reserve(n); }
  // Starts the next pack in a buffer a finished pack was written from: its pages are
  // already faulted in, a fresh 16 MiB allocation would fault in every page again.
  void adopt(Bytes&& buf) {
    data_ = std::move(buf);
    data_.clear();
  }
  size_t count() const { return blobs_.size(); }
  bool empty() const { return blobs_.empty(); }
  // Appends the sealed header and trailer; returns the pack's bytes. The builder is left empty.
  Bytes finish(const crypto::Aead& aead, std::vector<PackBlob>& blobs);

 private:
  Bytes data_;
  std::vector<PackBlob> blobs_;
};

// A pack's name: SHA-256 of its header box and trailer. The header authenticates
// every blob's id, type and length, and each blob authenticates itself, so hashing
// the whole pack again would only cost time. A pack too short to have a trailer
// hashes whole (and will not match any name a writer gave it).
BlobId pack_id(std::span<const uint8_t> pack);

// Reads and authenticates a pack's header. Throws Error(Errc::corrupt) with the
// pack named when the trailer, header or any entry is malformed.
std::vector<PackBlob> read_pack_header(Backend& be, const std::string& pack_id, const crypto::Aead& aead, uint64_t pack_size);
// Parses a header from the tail of a pack already in memory.
std::vector<PackBlob> parse_pack_header(std::span<const uint8_t> pack, const crypto::Aead& aead, const std::string& pack_id);

}  // namespace cairn::repo
