#include "common/crypto/crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <string>

#include "common/util/error.h"

namespace cairn::crypto {

namespace {
[[noreturn]] void fail(const char* what) { throw Error(Errc::io, std::string("openssl: ") + what + " failed"); }

struct CipherCtx {
  EVP_CIPHER_CTX* c = EVP_CIPHER_CTX_new();
  ~CipherCtx() { EVP_CIPHER_CTX_free(c); }
};

const EVP_CIPHER* gcm() {
  static EVP_CIPHER* c = EVP_CIPHER_fetch(nullptr, "AES-256-GCM", nullptr);
  return c;
}
const EVP_MD* sha256_md() {
  static EVP_MD* m = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  return m;
}
}  // namespace

void random_bytes(uint8_t* out, size_t n) {
  if (RAND_bytes(out, int(n)) != 1) fail("RAND_bytes");
}

Hash sha256(std::span<const uint8_t> data) {
  Hash h{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), h.data(), &len, sha256_md(), nullptr) != 1) fail("sha256");
  return h;
}

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), sha256_md(), nullptr) != 1) fail("sha256 init");
}
Sha256::~Sha256() { EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_)); }
void Sha256::update(std::span<const uint8_t> data) {
  if (EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size()) != 1) fail("sha256 update");
}
Hash Sha256::finish() {
  Hash h{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), h.data(), &len) != 1) fail("sha256 final");
  return h;
}

KeyedHash::KeyedHash(const Key& key) {
  EVP_MAC* mac = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  if (!mac) fail("HMAC fetch");
  EVP_MAC_CTX* ctx = EVP_MAC_CTX_new(mac);
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0), OSSL_PARAM_construct_end()};
  if (!ctx || EVP_MAC_init(ctx, key.data(), key.size(), params) != 1) fail("HMAC init");
  mac_ = mac;
  base_ = ctx;
}
KeyedHash::~KeyedHash() {
  EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(base_));
  EVP_MAC_free(static_cast<EVP_MAC*>(mac_));
}
Hash KeyedHash::operator()(std::span<const uint8_t> data) const {
  EVP_MAC_CTX* c = EVP_MAC_CTX_dup(static_cast<EVP_MAC_CTX*>(base_));
  if (!c) fail("HMAC dup");
  Hash h{};
  size_t len = 0;
  bool ok = EVP_MAC_update(c, data.data(), data.size()) == 1 && EVP_MAC_final(c, h.data(), &len, h.size()) == 1;
  EVP_MAC_CTX_free(c);
  if (!ok) fail("HMAC");
  return h;
}

KeyedHash::Stream KeyedHash::stream() const {
  EVP_MAC_CTX* c = EVP_MAC_CTX_dup(static_cast<EVP_MAC_CTX*>(base_));
  if (!c) fail("HMAC dup");
  return Stream(c);
}
KeyedHash::Stream::~Stream() { EVP_MAC_CTX_free(static_cast<EVP_MAC_CTX*>(ctx_)); }
void KeyedHash::Stream::update(std::span<const uint8_t> data) {
  if (EVP_MAC_update(static_cast<EVP_MAC_CTX*>(ctx_), data.data(), data.size()) != 1) fail("HMAC");
}
Hash KeyedHash::Stream::finish() {
  Hash h{};
  size_t len = 0;
  if (EVP_MAC_final(static_cast<EVP_MAC_CTX*>(ctx_), h.data(), &len, h.size()) != 1) fail("HMAC");
  return h;
}

void Aead::seal(std::span<const uint8_t> aad, std::span<const uint8_t> plaintext, Bytes& out) const {
  size_t base = out.size();
  out.resize(base + kNonceSize + plaintext.size() + kTagSize);
  uint8_t* nonce = out.data() + base;
  random_bytes(nonce, kNonceSize);
  CipherCtx ctx;
  int len = 0;
  if (!ctx.c || EVP_EncryptInit_ex2(ctx.c, gcm(), key_.data(), nonce, nullptr) != 1) fail("aes-gcm init");
  if (!aad.empty() && EVP_EncryptUpdate(ctx.c, nullptr, &len, aad.data(), int(aad.size())) != 1) fail("aes-gcm aad");
  uint8_t* ct = nonce + kNonceSize;
  if (!plaintext.empty() && EVP_EncryptUpdate(ctx.c, ct, &len, plaintext.data(), int(plaintext.size())) != 1) fail("aes-gcm encrypt");
  if (EVP_EncryptFinal_ex(ctx.c, ct + plaintext.size(), &len) != 1) fail("aes-gcm final");
  if (EVP_CIPHER_CTX_ctrl(ctx.c, EVP_CTRL_GCM_GET_TAG, int(kTagSize), ct + plaintext.size()) != 1) fail("aes-gcm tag");
}

bool Aead::open(std::span<const uint8_t> aad, std::span<const uint8_t> sealed, Bytes& plaintext) const {
  if (sealed.size() < kAeadOverhead) return false;
  const uint8_t* nonce = sealed.data();
  size_t ctlen = sealed.size() - kAeadOverhead;
  const uint8_t* ct = nonce + kNonceSize;
  uint8_t tag[kTagSize];
  std::copy(ct + ctlen, ct + ctlen + kTagSize, tag);
  plaintext.resize(ctlen);
  CipherCtx ctx;
  int len = 0;
  if (!ctx.c || EVP_DecryptInit_ex2(ctx.c, gcm(), key_.data(), nonce, nullptr) != 1) fail("aes-gcm init");
  if (!aad.empty() && EVP_DecryptUpdate(ctx.c, nullptr, &len, aad.data(), int(aad.size())) != 1) return false;
  if (ctlen && EVP_DecryptUpdate(ctx.c, plaintext.data(), &len, ct, int(ctlen)) != 1) return false;
  if (EVP_CIPHER_CTX_ctrl(ctx.c, EVP_CTRL_GCM_SET_TAG, int(kTagSize), tag) != 1) return false;
  if (EVP_DecryptFinal_ex(ctx.c, plaintext.data() + ctlen, &len) != 1) {
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    plaintext.clear();
    return false;
  }
  return true;
}

std::optional<std::span<const uint8_t>> Aead::open_in_place(std::span<const uint8_t> aad, std::span<uint8_t> sealed) const {
  if (sealed.size() < kAeadOverhead) return std::nullopt;
  const uint8_t* nonce = sealed.data();
  size_t ctlen = sealed.size() - kAeadOverhead;
  uint8_t* ct = sealed.data() + kNonceSize;
  uint8_t tag[kTagSize];
  std::copy(ct + ctlen, ct + ctlen + kTagSize, tag);
  CipherCtx ctx;
  int len = 0;
  if (!ctx.c || EVP_DecryptInit_ex2(ctx.c, gcm(), key_.data(), nonce, nullptr) != 1) fail("aes-gcm init");
  if (!aad.empty() && EVP_DecryptUpdate(ctx.c, nullptr, &len, aad.data(), int(aad.size())) != 1) return std::nullopt;
  // GCM is a stream mode: OpenSSL decrypts with out == in (only partial overlap is refused).
  bool ok = (!ctlen || EVP_DecryptUpdate(ctx.c, ct, &len, ct, int(ctlen)) == 1) &&
            EVP_CIPHER_CTX_ctrl(ctx.c, EVP_CTRL_GCM_SET_TAG, int(kTagSize), tag) == 1 && EVP_DecryptFinal_ex(ctx.c, ct + ctlen, &len) == 1;
  if (!ok) {
    OPENSSL_cleanse(ct, ctlen);
    return std::nullopt;
  }
  return std::span<const uint8_t>(ct, ctlen);
}

Key scrypt(std::string_view passphrase, std::span<const uint8_t> salt, const ScryptParams& p) {
  Key k{};
  // maxmem: 128 * r * N * 2 with slack
  uint64_t maxmem = 256ull * p.r * p.n + (64ull << 20);
  if (EVP_PBE_scrypt(passphrase.data(), passphrase.size(), salt.data(), salt.size(), p.n, p.r, p.p, maxmem, k.data(), k.size()) != 1)
    throw Error(Errc::invalid_input, "scrypt parameters are not acceptable (n must be a power of two)");
  return k;
}

Key hkdf_sha256(std::span<const uint8_t> ikm, std::span<const uint8_t> salt, std::string_view info) {
  Key k{};
  EVP_PKEY_CTX* pctx = EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr);
  bool ok = pctx && EVP_PKEY_derive_init(pctx) == 1 && EVP_PKEY_CTX_set_hkdf_md(pctx, EVP_sha256()) == 1 &&
            EVP_PKEY_CTX_set1_hkdf_salt(pctx, salt.data(), int(salt.size())) == 1 &&
            EVP_PKEY_CTX_set1_hkdf_key(pctx, ikm.data(), int(ikm.size())) == 1 &&
            EVP_PKEY_CTX_add1_hkdf_info(pctx, reinterpret_cast<const unsigned char*>(info.data()), int(info.size())) == 1;
  size_t len = k.size();
  ok = ok && EVP_PKEY_derive(pctx, k.data(), &len) == 1;
  EVP_PKEY_CTX_free(pctx);
  if (!ok) fail("hkdf");
  return k;
}

bool equal(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace cairn::crypto
