#include "agent/drivers/etcd/snapshot_stream.h"

#include <openssl/crypto.h>

#include "common/util/encoding.h"
#include "common/util/error.h"

namespace cairn::agent::etcd {

SnapshotStreamCheck::SnapshotStreamCheck() : md_(EVP_MD_CTX_new()) {
  if (!md_ || EVP_DigestInit_ex(md_, EVP_sha256(), nullptr) != 1) throw Error(Errc::io, "cannot start a SHA-256 digest (OpenSSL)");
}

SnapshotStreamCheck::~SnapshotStreamCheck() { EVP_MD_CTX_free(md_); }

void SnapshotStreamCheck::feed(std::string_view blob, uint64_t remaining) {
  if (finished_) throw Error(Errc::corrupt, "etcd snapshot stream: a message after the end");
  if (blob.empty()) return;  // a header-only message (newer servers) carries no data
  if (expected_ < 0) {
    if (remaining > (uint64_t(1) << 50))
      throw Error(Errc::corrupt, "etcd snapshot stream: announced size " + std::to_string(remaining) + " is not plausible");
    expected_ = int64_t(blob.size() + remaining);
  }
  const uint64_t db = uint64_t(expected_);
  size_t data_part = 0;
  if (received_ < db) {
    data_part = size_t(std::min<uint64_t>(blob.size(), db - received_));
    // While the database streams, what came plus what is announced is its size.
    if (data_part == blob.size() && received_ + blob.size() + remaining != db)
      throw Error(Errc::corrupt, "etcd snapshot stream: remaining_bytes " + std::to_string(remaining) + " after " +
                                     std::to_string(received_ + blob.size()) + " bytes contradicts the announced size " +
                                     std::to_string(db));
    if (EVP_DigestUpdate(md_, blob.data(), data_part) != 1) throw Error(Errc::io, "SHA-256 update failed (OpenSSL)");
  }
  if (data_part < blob.size()) {
    if (trailer_.size() + (blob.size() - data_part) > kSnapshotHashSize)
      throw Error(Errc::corrupt, "etcd snapshot stream: more bytes than the announced " + std::to_string(db) + " and a 32-byte hash");
    trailer_.append(blob.substr(data_part));
  }
  received_ += blob.size();
}

void SnapshotStreamCheck::finish() {
  if (expected_ < 0) throw Error(Errc::corrupt, "etcd snapshot stream ended before any data came");
  const uint64_t db = uint64_t(expected_);
  if (received_ < db)
    throw Error(Errc::corrupt, "etcd snapshot stream ended early: " + std::to_string(received_) + " of " + std::to_string(db) +
                                   " database bytes received");
  if (trailer_.size() != kSnapshotHashSize)
    throw Error(Errc::corrupt,
                "etcd snapshot stream ended without its SHA-256 (" + std::to_string(trailer_.size()) + " of 32 bytes after the database)");
  unsigned char sum[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(md_, sum, &n) != 1 || n != kSnapshotHashSize) throw Error(Errc::io, "SHA-256 final failed (OpenSSL)");
  if (CRYPTO_memcmp(sum, trailer_.data(), kSnapshotHashSize) != 0)
    throw Error(Errc::corrupt, "etcd snapshot hash mismatch: the server sent " +
                                   to_hex(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(trailer_.data()), 32)) + ", the " +
                                   std::to_string(db) + " bytes received hash to " + to_hex(std::span<const uint8_t>(sum, 32)));
  // bbolt files are whole pages; etcdctl refuses a snapshot whose size is not
  // a multiple of 512 plus the hash.
  if (db % 512 != 0) throw Error(Errc::corrupt, "etcd snapshot of " + std::to_string(db) + " bytes is not whole 512-byte pages");
  finished_ = true;
}

std::string SnapshotStreamCheck::sha256_hex() const {
  return to_hex(std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(trailer_.data()), trailer_.size()));
}

}  // namespace cairn::agent::etcd
