#include "common/plan/signing_key.h"

#include <openssl/evp.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <map>
#include <memory>

#include "common/crypto/crypto.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::plan {
namespace {

constexpr std::string_view kPrivatePrefix = "cairn-ed25519-private-v1:";
constexpr std::string_view kPublicPrefix = "ed25519:";

EVP_PKEY* as_pkey(void* p) { return static_cast<EVP_PKEY*>(p); }

struct MdCtx {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~MdCtx() { EVP_MD_CTX_free(ctx); }
  MdCtx() = default;
  MdCtx(const MdCtx&) = delete;
  MdCtx& operator=(const MdCtx&) = delete;
};

std::string mode_text(mode_t m) {
  char b[8];
  std::snprintf(b, sizeof b, "%04o", unsigned(m & 07777));
  return b;
}

}  // namespace

std::string key_id(const PublicKey& pub) {
  auto h = crypto::sha256(pub);
  return to_hex(std::span<const uint8_t>(h.data(), 8));
}

std::string format_public_key(const PublicKey& pub) {
  return std::string(kPublicPrefix) + to_base64(pub);
}

bool parse_public_key(std::string_view text, PublicKey& out) {
  if (!text.starts_with(kPublicPrefix)) return false;
  Bytes raw;
  if (!from_base64(text.substr(kPublicPrefix.size()), raw) || raw.size() != out.size()) return false;
  std::copy(raw.begin(), raw.end(), out.begin());
  return true;
}

namespace {

// Decoding a public key (a point decompression) is ~30% of a verification;
// the keys an agent verifies under are few (its trusted controller keys), so
// each thread keeps the decoded ones. Bounded: emptied when it reaches 16.
EVP_PKEY* decoded_public_key(const PublicKey& pub) {
  using Pkey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
  thread_local std::map<PublicKey, Pkey> cache;
  if (auto it = cache.find(pub); it != cache.end()) return it->second.get();
  Pkey pkey(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, pub.data(), pub.size()), EVP_PKEY_free);
  if (!pkey) return nullptr;
  if (cache.size() >= 16) cache.clear();
  return cache.emplace(pub, std::move(pkey)).first->second.get();
}

}  // namespace

bool verify_signature(const PublicKey& pub, std::span<const uint8_t> message,
                      std::span<const uint8_t> sig) {
  if (sig.size() != std::tuple_size_v<Signature>) return false;
  EVP_PKEY* pkey = decoded_public_key(pub);
  if (!pkey) return false;
  MdCtx md;
  if (!md.ctx || EVP_DigestVerifyInit(md.ctx, nullptr, nullptr, nullptr, pkey) != 1) return false;
  return EVP_DigestVerify(md.ctx, sig.data(), sig.size(), message.data(), message.size()) == 1;
}

void SigningKey::PkeyDeleter::operator()(void* p) const { EVP_PKEY_free(as_pkey(p)); }

SigningKey::SigningKey(std::unique_ptr<void, PkeyDeleter> pkey) : pkey_(std::move(pkey)) {
  size_t len = pub_.size();
  if (EVP_PKEY_get_raw_public_key(as_pkey(pkey_.get()), pub_.data(), &len) != 1 || len != pub_.size())
    throw Error(Errc::io, "cannot read the ed25519 public key from openssl");
}

SigningKey::SigningKey(SigningKey&&) noexcept = default;
SigningKey& SigningKey::operator=(SigningKey&&) noexcept = default;
SigningKey::~SigningKey() = default;

SigningKey SigningKey::generate() {
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(
      EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nullptr), EVP_PKEY_CTX_free);
  EVP_PKEY* raw = nullptr;
  if (!ctx || EVP_PKEY_keygen_init(ctx.get()) != 1 || EVP_PKEY_keygen(ctx.get(), &raw) != 1)
    throw Error(Errc::io, "cannot generate an ed25519 key with openssl");
  return SigningKey(std::unique_ptr<void, PkeyDeleter>(raw));
}

SigningKey SigningKey::from_seed(std::span<const uint8_t> seed) {
  if (seed.size() != 32)
    throw Error(Errc::invalid_input, "an ed25519 seed has 32 bytes, not " + std::to_string(seed.size()));
  EVP_PKEY* raw = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size());
  if (!raw) throw Error(Errc::invalid_input, "openssl refused the ed25519 seed");
  return SigningKey(std::unique_ptr<void, PkeyDeleter>(raw));
}

SigningKey SigningKey::load(const std::string& path) {
  // Checked here as well as in read_secret_file so the message names what
  // the file is: operators meet this first when they copy keys around.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno("cannot read signing key file", path, errno);
  if (st.st_mode & 077)
    throw Error(Errc::invalid_input, "signing key file '" + path + "' is readable by group or others (mode " +
                                         mode_text(st.st_mode) + "); run 'chmod 600 " + path + "'");
  std::string text = read_secret_file(path);
  Bytes seed;
  if (!text.starts_with(kPrivatePrefix) || !from_base64(std::string_view(text).substr(kPrivatePrefix.size()), seed) ||
      seed.size() != 32)
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
  uint8_t seed[32];
  size_t len = sizeof seed;
  if (EVP_PKEY_get_raw_private_key(as_pkey(pkey_.get()), seed, &len) != 1 || len != sizeof seed)
    throw Error(Errc::io, "cannot read the ed25519 private key from openssl");
  std::string text = std::string(kPrivatePrefix) + to_base64(std::span<const uint8_t>(seed, len)) + "\n";
  std::fill(std::begin(seed), std::end(seed), 0);
  try {
    write_file_atomic(path, as_bytes(text), 0600);
  } catch (...) {
    std::fill(text.begin(), text.end(), '\0');
    throw;
  }
  std::fill(text.begin(), text.end(), '\0');
}

Signature SigningKey::sign(std::span<const uint8_t> message) const {
  MdCtx md;
  Signature sig{};
  size_t len = sig.size();
  if (!md.ctx || EVP_DigestSignInit(md.ctx, nullptr, nullptr, nullptr, as_pkey(pkey_.get())) != 1 ||
      EVP_DigestSign(md.ctx, sig.data(), &len, message.data(), message.size()) != 1 || len != sig.size())
    throw Error(Errc::io, "cannot sign with the ed25519 key");
  return sig;
}

}  // namespace cairn::plan
