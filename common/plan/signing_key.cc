#include "common/plan/signing_key.h"

#include <sodium.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/crypto/crypto.h"
#include "common/util/error.h"
#include "common/util/fs.h"

// Ed25519 is libsodium's (RFC 8032; the same signatures as OpenSSL's, byte
// for byte; a unit test checks RFC 8032's vectors) at less than half the
// cost of OpenSSL 3.0's EVP Ed25519: 15 µs a signature and 37 µs a
// verification where OpenSSL takes 33 and 83 µs (cairn-bench-ed25519,
// bench/fleet/README.md). A plan is signed once on the controller and
// verified by its agent; a set over 10,000 agents is 10,000 signatures.
// libsodium is in every cairn process already, as libzmq's CURVE.

namespace cairn::plan {
namespace {

constexpr std::string_view kPrivatePrefix = "cairn-ed25519-private-v1:";
constexpr std::string_view kPublicPrefix = "ed25519:";

std::string mode_text(mode_t m) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", unsigned(m & 07777));
  return b;
}

void sodium_ready() {
  static const bool ok = sodium_init() >= 0;
  if (!ok) throw Error(Errc::io, "libsodium could not initialise (sodium_init failed)");
}

}  // namespace

std::string key_id(const PublicKey& pub) {
  auto h = crypto::sha256(pub);
  return to_hex(std::span<const uint8_t>(h.data(), 8));
}

std::string format_public_key(const PublicKey& pub) { return std::string(kPublicPrefix) + to_base64(pub); }

bool parse_public_key(std::string_view text, PublicKey& out) {
  if (!text.starts_with(kPublicPrefix)) return false;
  Bytes raw;
  if (!from_base64(text.substr(kPublicPrefix.size()), raw) || raw.size() != out.size()) return false;
  std::copy(raw.begin(), raw.end(), out.begin());
  return true;
}

std::vector<PublicKey> read_public_key_file(const std::string& path) {
  Bytes b = read_file(path, kMaxSecretFile);
  std::string text(b.begin(), b.end());
  std::vector<PublicKey> keys;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t end = text.find('\n', pos);
    std::string line = text.substr(pos, end == std::string::npos ? std::string::npos : end - pos);
    pos = end == std::string::npos ? text.size() + 1 : end + 1;
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
    if (line.empty() || line[0] == '#') continue;
    PublicKey pub{};
    if (!parse_public_key(line, pub))
      throw Error(Errc::invalid_input, "'" + path + "' holds a line that is not an 'ed25519:<base64>' public key");
    keys.push_back(pub);
  }
  if (keys.empty()) throw Error(Errc::invalid_input, "'" + path + "' holds no public key");
  return keys;
}

bool verify_signature(const PublicKey& pub, std::span<const uint8_t> message, std::span<const uint8_t> sig) {
  if (sig.size() != std::tuple_size_v<Signature>) return false;
  sodium_ready();
  // Stricter than RFC 8032 requires: a non-canonical S, a small-order R or
  // public key are refused (libsodium 1.0.18); no honest signer makes them.
  return crypto_sign_ed25519_verify_detached(sig.data(), message.data(), message.size(), pub.data()) == 0;
}

void SigningKey::SecretDeleter::operator()(uint8_t* p) const { sodium_free(p); }

SigningKey::SigningKey(std::span<const uint8_t> seed) {
  sodium_ready();
  // Guarded, locked memory, wiped when freed: the controller's one signing secret.
  secret_.reset(static_cast<uint8_t*>(sodium_malloc(crypto_sign_ed25519_SECRETKEYBYTES)));
  if (!secret_) throw Error(Errc::io, "cannot allocate memory for the ed25519 signing key (sodium_malloc)");
  if (crypto_sign_ed25519_seed_keypair(pub_.data(), secret_.get(), seed.data()) != 0)
    throw Error(Errc::io, "cannot derive the ed25519 key from its seed");
}

SigningKey::SigningKey(SigningKey&&) noexcept = default;
SigningKey& SigningKey::operator=(SigningKey&&) noexcept = default;
SigningKey::~SigningKey() = default;

SigningKey SigningKey::generate() {
  sodium_ready();
  uint8_t seed[crypto_sign_ed25519_SEEDBYTES];
  randombytes_buf(seed, sizeof seed);
  SigningKey k{std::span<const uint8_t>(seed, sizeof seed)};
  sodium_memzero(seed, sizeof seed);
  return k;
}

SigningKey SigningKey::from_seed(std::span<const uint8_t> seed) {
  if (seed.size() != crypto_sign_ed25519_SEEDBYTES)
    throw Error(Errc::invalid_input, "an ed25519 seed has 32 bytes, not " + std::to_string(seed.size()));
  return SigningKey(seed);
}

SigningKey SigningKey::load(const std::string& path) {
  // Checked here as well as in read_secret_file so the message names what
  // the file is: operators meet this first when they copy keys around.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno("cannot read signing key file", path, errno);
  if (st.st_mode & 077)
    throw Error(Errc::invalid_input, "signing key file '" + path + "' is readable by group or others (mode " + mode_text(st.st_mode) +
                                         "); run 'chmod 600 " + path + "'");
  std::string text = read_secret_file(path);
  Bytes seed;
  if (!text.starts_with(kPrivatePrefix) || !from_base64(std::string_view(text).substr(kPrivatePrefix.size()), seed) || seed.size() != 32)
    throw Error(Errc::invalid_input, "signing key file '" + path + "' is not a cairn ed25519 private key");
  SigningKey key = from_seed(seed);
  std::fill(seed.begin(), seed.end(), 0);
  std::fill(text.begin(), text.end(), '\0');
  return key;
}

void SigningKey::save(const std::string& path, bool overwrite) const {
  struct stat st {};
  if (!overwrite && ::stat(path.c_str(), &st) == 0)
    throw Error(Errc::exists, "signing key file '" + path + "' already exists; remove it first to replace the key");
  uint8_t seed[crypto_sign_ed25519_SEEDBYTES];
  crypto_sign_ed25519_sk_to_seed(seed, secret_.get());
  std::string text = std::string(kPrivatePrefix) + to_base64(std::span<const uint8_t>(seed, sizeof seed)) + "\n";
  sodium_memzero(seed, sizeof seed);
  try {
    write_file_atomic(path, as_bytes(text), 0600);
  } catch (...) {
    std::fill(text.begin(), text.end(), '\0');
    throw;
  }
  std::fill(text.begin(), text.end(), '\0');
}

Signature SigningKey::sign(std::span<const uint8_t> message) const {
  Signature sig{};
  if (crypto_sign_ed25519_detached(sig.data(), nullptr, message.data(), message.size(), secret_.get()) != 0)
    throw Error(Errc::io, "cannot sign with the ed25519 key");
  return sig;
}

}  // namespace cairn::plan
