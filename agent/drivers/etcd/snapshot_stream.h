#pragma once
// The check of etcd's snapshot stream (Maintenance.Snapshot), message by
// message as it passes: each SnapshotResponse carries a piece of the bbolt
// database and how many bytes of it are still to come (remaining_bytes); after
// the last piece the server sends the SHA-256 of the database (32 bytes), so the
// stream is the database followed by its hash (what `etcdctl snapshot save`
// writes, and what `etcdctl snapshot restore` checks again). A stream is good
// only when every announced byte came, exactly 32 bytes of hash followed, and
// the hash matches.
#include <openssl/evp.h>

#include <cstdint>
#include <string>
#include <string_view>

namespace cairn::agent::etcd {

constexpr size_t kSnapshotHashSize = 32;

class SnapshotStreamCheck {
 public:
  SnapshotStreamCheck();
  ~SnapshotStreamCheck();
  SnapshotStreamCheck(const SnapshotStreamCheck&) = delete;
  SnapshotStreamCheck& operator=(const SnapshotStreamCheck&) = delete;

  // One message. Throws cairn::Error (Errc::corrupt) when it contradicts what
  // came before (remaining_bytes not counting down with the bytes received,
  // bytes beyond the database and its hash).
  void feed(std::string_view blob, uint64_t remaining_bytes);
  // The server ended the stream without an error: throws cairn::Error
  // (Errc::corrupt) unless the database came whole, its hash followed and
  // matches. The message says how far it got.
  void finish();

  uint64_t received() const { return received_; }  // every byte so far, hash included
  // The database's size as the first piece announced it; 0 before.
  uint64_t db_size() const { return expected_ < 0 ? 0 : uint64_t(expected_); }
  std::string sha256_hex() const;  // the hash (after finish)

 private:
  EVP_MD_CTX* md_ = nullptr;
  int64_t expected_ = -1;  // database bytes, known from the first non-empty piece
  uint64_t received_ = 0;
  std::string trailer_;  // the bytes after the database: its hash
  bool finished_ = false;
};

}  // namespace cairn::agent::etcd
