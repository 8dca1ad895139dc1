// cairn-bench-ed25519: cairn's plan signatures (common/plan/signing_key.h,
// libsodium) against OpenSSL 3's EVP Ed25519 on the same key and message,
// in this process: the cost each plan adds on the controller (a signature)
// and on every agent (a verification). Prints one JSON line.
//
//   cairn-bench-ed25519 [--iterations N] [--message-bytes N]
#include <openssl/evp.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/plan/signing_key.h"

namespace {

// Microseconds per call: the best of 3 rounds of n calls.
double per_call_us(int n, const std::function<bool()>& f) {
  double best = 1e18;
  for (int round = 0; round < 3; ++round) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i)
      if (!f()) throw std::runtime_error("a signature or verification failed");
    best = std::min(best, std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / n);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cairn's Ed25519 (libsodium) against OpenSSL's EVP Ed25519, one thread"};
  int n = 5000;
  size_t message_bytes = 700;  // about a signed plan's PAE over one task
  app.add_option("--iterations", n)->capture_default_str();
  app.add_option("--message-bytes", message_bytes)->capture_default_str();
  CLI11_PARSE(app, argc, argv);

  std::vector<uint8_t> seed(32, 0x5a), msg(message_bytes, 0x42);
  auto key = cairn::plan::SigningKey::from_seed(seed);
  auto pub = key.public_key();
  auto sig = key.sign(msg);

  using Pkey = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
  Pkey ossl_priv(EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nullptr, seed.data(), seed.size()), EVP_PKEY_free);
  // Decoded once, as the agent's verification used to keep it.
  Pkey ossl_pub(EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, pub.data(), pub.size()), EVP_PKEY_free);
  if (!ossl_priv || !ossl_pub) return 2;
  auto ossl_sign = [&](uint8_t* out) {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    size_t len = 64;
    return EVP_DigestSignInit(md.get(), nullptr, nullptr, nullptr, ossl_priv.get()) == 1 &&
           EVP_DigestSign(md.get(), out, &len, msg.data(), msg.size()) == 1;
  };
  uint8_t ossl_sig[64];
  if (!ossl_sign(ossl_sig) || std::memcmp(ossl_sig, sig.data(), 64) != 0) {
    std::fprintf(stderr, "OpenSSL and cairn made different signatures of the same message with the same key\n");
    return 1;
  }

  double cairn_sign = per_call_us(n, [&] { return key.sign(msg)[0] == sig[0]; });
  double cairn_verify = per_call_us(n, [&] { return cairn::plan::verify_signature(pub, msg, sig); });
  double ossl_sign_us = per_call_us(n, [&] { return ossl_sign(ossl_sig); });
  double ossl_verify = per_call_us(n, [&] {
    std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
    return EVP_DigestVerifyInit(md.get(), nullptr, nullptr, nullptr, ossl_pub.get()) == 1 &&
           EVP_DigestVerify(md.get(), sig.data(), sig.size(), msg.data(), msg.size()) == 1;
  });
  auto r = [](double v) { return std::round(v * 100) / 100; };
  nlohmann::json j = {{"message_bytes", message_bytes},
                      {"iterations", n},
                      {"same_signature_bytes", true},
                      {"cairn_sign_us", r(cairn_sign)},
                      {"cairn_verify_us", r(cairn_verify)},
                      {"openssl_evp_sign_us", r(ossl_sign_us)},
                      {"openssl_evp_verify_us", r(ossl_verify)},
                      {"sign_speedup", r(ossl_sign_us / cairn_sign)},
                      {"verify_speedup", r(ossl_verify / cairn_verify)}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
