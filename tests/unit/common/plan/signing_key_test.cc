#include "common/plan/signing_key.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <vector>

#include "common/plan/envelope.h"
#include "common/util/error.h"
#include "plan_fixture.h"

using namespace cairn;
using namespace cairn::plan;
using namespace cairn::plan::test;

TEST_CASE("PAE follows DSSE v1 byte for byte") {
  // The example from the DSSE specification.
  Bytes got = pae("http://example.com/HelloWorld", as_bytes("hello world"));
  std::string want = "DSSEv1 29 http://example.com/HelloWorld 11 hello world";
  REQUIRE(std::string(got.begin(), got.end()) == want);
  Bytes empty = pae("", {});
  REQUIRE(std::string(empty.begin(), empty.end()) == "DSSEv1 0  0 ");
}

TEST_CASE("a signature verifies only for the key and message it was made with") {
  SigningKey a = SigningKey::generate();
  SigningKey b = SigningKey::generate();
  Signature sig = a.sign(as_bytes("plan"));
  REQUIRE(verify_signature(a.public_key(), as_bytes("plan"), sig));
  REQUIRE_FALSE(verify_signature(b.public_key(), as_bytes("plan"), sig));
  REQUIRE_FALSE(verify_signature(a.public_key(), as_bytes("plan!"), sig));
  REQUIRE_FALSE(verify_signature(a.public_key(), as_bytes("plan"), std::span<const uint8_t>(sig.data(), 63)));
}

TEST_CASE("verification tells every key apart, and refuses a key that is not a point") {
  std::vector<SigningKey> keys;
  std::vector<Signature> sigs;
  std::vector<uint8_t> msg = {'p', 'l', 'a', 'n'};
  for (int i = 0; i < 40; ++i) {
    keys.push_back(SigningKey::generate());
    sigs.push_back(keys.back().sign(msg));
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    CHECK(verify_signature(keys[i].public_key(), msg, sigs[i]));
    CHECK_FALSE(verify_signature(keys[(i + 1) % keys.size()].public_key(), msg, sigs[i]));
  }
  PublicKey not_a_point{};
  not_a_point.fill(0xff);
  CHECK_FALSE(verify_signature(not_a_point, msg, sigs[0]));
  PublicKey zero{};  // the identity's encoding would verify anything against a forged R under a lax verifier
  CHECK_FALSE(verify_signature(zero, msg, sigs[0]));
}

namespace {
Bytes hex(std::string_view h) {
  Bytes out;
  REQUIRE(from_hex(h, out));
  return out;
}
}  // namespace

TEST_CASE("signatures are RFC 8032's, byte for byte (its test vectors 1 and 2)") {
  // The same bytes OpenSSL and every other Ed25519 make: keys and plans
  // signed before the switch to libsodium verify, and agents built with
  // either library agree.
  struct Vector {
    const char *seed, *pub, *msg, *sig;
  } vectors[] = {
      {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
       "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
       "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"},
      {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
       "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
       "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"},
  };
  for (const auto& v : vectors) {
    SigningKey k = SigningKey::from_seed(hex(v.seed));
    CHECK(to_hex(k.public_key()) == v.pub);
    Bytes msg = hex(v.msg);
    Signature sig = k.sign(msg);
    CHECK(to_hex(sig) == v.sig);
    CHECK(verify_signature(k.public_key(), msg, sig));
  }
}

TEST_CASE("a signature whose S is not reduced modulo the group order is refused") {
  // S + L verifies under the plain equation, so a lax verifier accepts a
  // second encoding of the same signature (malleability).
  SigningKey k = SigningKey::from_seed(Bytes(32, 9));
  auto msg = as_bytes("plan");
  Signature sig = k.sign(msg);
  REQUIRE(verify_signature(k.public_key(), msg, sig));
  const Bytes l = hex("edd3f55c1a631258d69cf7a2def9de1400000000000000000000000000000010");  // L, little-endian
  unsigned carry = 0;
  for (size_t i = 0; i < 32; ++i) {
    unsigned v = unsigned(sig[32 + i]) + l[i] + carry;
    sig[32 + i] = uint8_t(v);
    carry = v >> 8;
  }
  REQUIRE(carry == 0);
  CHECK_FALSE(verify_signature(k.public_key(), msg, sig));
}

TEST_CASE("key ids are 16 lowercase hex characters of the public key's hash") {
  SigningKey k = SigningKey::from_seed(Bytes(32, 7));
  std::string id = k.key_id();
  REQUIRE(id.size() == 16);
  REQUIRE(id.find_first_not_of("0123456789abcdef") == std::string::npos);
  REQUIRE(id == SigningKey::from_seed(Bytes(32, 7)).key_id());
  REQUIRE(id != SigningKey::from_seed(Bytes(32, 8)).key_id());
}

TEST_CASE("public keys round-trip through their text form") {
  SigningKey k = SigningKey::generate();
  PublicKey back{};
  REQUIRE(parse_public_key(format_public_key(k.public_key()), back));
  REQUIRE(back == k.public_key());
  REQUIRE_FALSE(parse_public_key("ed25519:AAAA", back));
  REQUIRE_FALSE(parse_public_key("rsa:" + to_base64(k.public_key()), back));
}

TEST_CASE("a saved signing key is mode 0600 and loads to the same key") {
  TempDir dir;
  SigningKey k = SigningKey::generate();
  k.save(dir.file("plan.key"));
  struct stat st {};
  REQUIRE(::stat(dir.file("plan.key").c_str(), &st) == 0);
  REQUIRE((st.st_mode & 0777) == 0600);
  SigningKey back = SigningKey::load(dir.file("plan.key"));
  REQUIRE(back.public_key() == k.public_key());
  Signature sig = back.sign(as_bytes("x"));
  REQUIRE(verify_signature(k.public_key(), as_bytes("x"), sig));
}

TEST_CASE("saving over an existing key file is refused unless asked for") {
  TempDir dir;
  SigningKey::generate().save(dir.file("plan.key"));
  SigningKey other = SigningKey::generate();
  REQUIRE_THROWS_WITH(other.save(dir.file("plan.key")), Catch::Contains("already exists"));
  other.save(dir.file("plan.key"), /*overwrite=*/true);
  REQUIRE(SigningKey::load(dir.file("plan.key")).public_key() == other.public_key());
}

TEST_CASE("a key file readable by group or others is refused with the fix in the message") {
  TempDir dir;
  SigningKey::generate().save(dir.file("plan.key"));
  REQUIRE(::chmod(dir.file("plan.key").c_str(), 0640) == 0);
  try {
    SigningKey::load(dir.file("plan.key"));
    FAIL("loaded a group-readable key");
  } catch (const Error& e) {
    REQUIRE(e.code() == Errc::invalid_input);
    std::string msg = e.what();
    REQUIRE_THAT(msg, Catch::Contains("readable by group or others") && Catch::Contains("chmod 600"));
    REQUIRE_THAT(msg, Catch::Contains("'" + dir.file("plan.key") + "'"));
  }
}

TEST_CASE("a file that is not a signing key is refused") {
  TempDir dir;
  {
    std::ofstream f(dir.file("plan.key"));
    f << "hello\n";
  }
  REQUIRE(::chmod(dir.file("plan.key").c_str(), 0600) == 0);
  REQUIRE_THROWS_WITH(SigningKey::load(dir.file("plan.key")), Catch::Contains("not a cairn ed25519 private key"));
  REQUIRE_THROWS_AS(SigningKey::load(dir.file("missing.key")), Error);
}
