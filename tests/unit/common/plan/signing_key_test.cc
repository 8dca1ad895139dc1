#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <vector>

#include "common/plan/envelope.h"
#include "common/plan/signing_key.h"
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

TEST_CASE("verification keeps decoded keys per thread and still tells every key apart") {
  // Keys are decoded once and kept (bounded at 16); 40 keys cycle the cache
  // twice, and each signature verifies only under its own key every time.
  std::vector<SigningKey> keys;
  std::vector<Signature> sigs;
  std::vector<uint8_t> msg = {'p', 'l', 'a', 'n'};
  for (int i = 0; i < 40; ++i) {
    keys.push_back(SigningKey::generate());
    sigs.push_back(keys.back().sign(msg));
  }
  for (int round = 0; round < 2; ++round)
    for (size_t i = 0; i < keys.size(); ++i) {
      CHECK(verify_signature(keys[i].public_key(), msg, sigs[i]));
      CHECK_FALSE(verify_signature(keys[(i + 1) % keys.size()].public_key(), msg, sigs[i]));
    }
  PublicKey not_a_point{};
  not_a_point.fill(0xff);
  CHECK_FALSE(verify_signature(not_a_point, msg, sigs[0]));
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
