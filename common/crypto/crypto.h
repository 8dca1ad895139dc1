#pragma once
// Thin, typed wrappers over OpenSSL: randomness, SHA-256, keyed ids (HMAC-SHA256),
// AES-256-GCM, scrypt and HKDF. Nothing here logs key material.
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "common/util/encoding.h"

namespace cairn::crypto {

using Hash = std::array<uint8_t, 32>;
using Key = std::array<uint8_t, 32>;

constexpr size_t kNonceSize = 12;
constexpr size_t kTagSize = 16;
constexpr size_t kAeadOverhead = kNonceSize + kTagSize;

void random_bytes(uint8_t* out, size_t n);
template <size_t N>
std::array<uint8_t, N> random_array() {
  std::array<uint8_t, N> a{};
  random_bytes(a.data(), N);
  return a;
}

Hash sha256(std::span<const uint8_t> data);

// Incremental SHA-256 (for whole-pack hashes while streaming).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::span<const uint8_t> data);
  Hash finish();

 private:
  void* ctx_;
};

// HMAC-SHA256 under a fixed key; thread-safe (each call works on its own context).
class KeyedHash {
 public:
  explicit KeyedHash(const Key& key);
  ~KeyedHash();
  KeyedHash(const KeyedHash&) = delete;
  KeyedHash& operator=(const KeyedHash&) = delete;
  Hash operator()(std::span<const uint8_t> data) const;

  // The same hash of data fed piece by piece (a large tree read or written
  // without its text whole in memory).
  class Stream {
   public:
    Stream(Stream&& o) noexcept : ctx_(o.ctx_) { o.ctx_ = nullptr; }
    Stream& operator=(Stream&&) = delete;
    ~Stream();
    void update(std::span<const uint8_t> data);
    Hash finish();

   private:
    friend class KeyedHash;
    explicit Stream(void* ctx) : ctx_(ctx) {}
    void* ctx_;  // EVP_MAC_CTX*
  };
  Stream stream() const;

 private:
  void* mac_ = nullptr;   // EVP_MAC*
  void* base_ = nullptr;  // EVP_MAC_CTX* keyed, duplicated per call
};

// AES-256-GCM. Sealed format: nonce(12) || ciphertext || tag(16).
class Aead {
 public:
  explicit Aead(const Key& key) : key_(key) {}
  // Appends the sealed form of plaintext to out.
  void seal(std::span<const uint8_t> aad, std::span<const uint8_t> plaintext, Bytes& out) const;
  Bytes seal(std::span<const uint8_t> aad, std::span<const uint8_t> plaintext) const {
    Bytes out;
    seal(aad, plaintext, out);
    return out;
  }
  // Returns false when the input is too short or fails authentication.
  bool open(std::span<const uint8_t> aad, std::span<const uint8_t> sealed, Bytes& plaintext) const;
  // The same, decrypting in place: on success the plaintext is the returned span
  // inside `sealed` (after the nonce); on failure nothing is returned and the
  // ciphertext's bytes are wiped. No buffer besides the one read into.
  std::optional<std::span<const uint8_t>> open_in_place(std::span<const uint8_t> aad, std::span<uint8_t> sealed) const;

 private:
  Key key_;
};

struct ScryptParams {
  uint64_t n = 1u << 15;
  uint32_t r = 8;
  uint32_t p = 1;
};
Key scrypt(std::string_view passphrase, std::span<const uint8_t> salt, const ScryptParams& params);
Key hkdf_sha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt, std::string_view info);

// Constant-time comparison.
bool equal(std::span<const uint8_t> a, std::span<const uint8_t> b);

}  // namespace cairn::crypto
