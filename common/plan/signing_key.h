#pragma once
// Ed25519 keys for signing plans and key announcements. The private key lives
// only in a 0600 file on the controller; agents hold public keys.
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/util/encoding.h"

namespace cairn::plan {

using PublicKey = std::array<uint8_t, 32>;
using Signature = std::array<uint8_t, 64>;

// First 16 hex characters of SHA-256(public key). A hint for finding the key,
// never a security decision: the signature is what counts.
std::string key_id(const PublicKey& pub);

// "ed25519:<base64>" — the text form used in configuration and cairnctl output.
std::string format_public_key(const PublicKey& pub);
// Returns false when the text is not the form above with a 32-byte key.
bool parse_public_key(std::string_view text, PublicKey& out);

// The keys of a public key file (controller-signing.pub): one
// "ed25519:<base64>" a line; blank lines and '#' comments skipped. Throws
// cairn::Error(invalid_input) naming the file for a line that is not a key,
// or for a file with none.
std::vector<PublicKey> read_public_key_file(const std::string& path);

// True when sig is a valid Ed25519 signature of message under pub.
bool verify_signature(const PublicKey& pub, std::span<const uint8_t> message, std::span<const uint8_t> sig);

class SigningKey {
 public:
  static SigningKey generate();
  // Throws cairn::Error(invalid_input) when seed is not 32 bytes.
  static SigningKey from_seed(std::span<const uint8_t> seed);
  // Refuses (cairn::Error) a file readable by group or others, a missing file
  // or one that is not a cairn Ed25519 private key.
  static SigningKey load(const std::string& path);

  SigningKey(SigningKey&&) noexcept;
  SigningKey& operator=(SigningKey&&) noexcept;
  ~SigningKey();

  // Writes the key with mode 0600, atomically. Refuses to replace an existing
  // file unless overwrite is set: losing a signing key strands every agent
  // that trusts only it.
  void save(const std::string& path, bool overwrite = false) const;

  const PublicKey& public_key() const { return pub_; }
  std::string key_id() const { return plan::key_id(pub_); }
  Signature sign(std::span<const uint8_t> message) const;

 private:
  struct SecretDeleter {
    void operator()(uint8_t* p) const;
  };
  explicit SigningKey(std::span<const uint8_t> seed);  // 32 bytes

  std::unique_ptr<uint8_t, SecretDeleter> secret_;  // libsodium's 64-byte secret key (seed, public key), sodium_malloc'd
  PublicKey pub_{};
};

}  // namespace cairn::plan
