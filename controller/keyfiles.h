#pragma once
// Key files of the controller and of the operator, as `cairnctl keys init`
// writes them into one directory. Secrets are 0600 files and never printed;
// public keys are text files (Z85 for CURVE, "ed25519:<base64>" for signing).
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace cairn::controller {

using CurveKey = std::array<uint8_t, 32>;

inline constexpr const char* kSigningKeyFile = "controller-signing.key";
inline constexpr const char* kSigningPubFile = "controller-signing.pub";
inline constexpr const char* kCurveSecretFile = "controller-curve.key";
inline constexpr const char* kCurvePublicFile = "controller-curve.pub";
inline constexpr const char* kOperatorSecretFile = "operator-curve.key";
inline constexpr const char* kOperatorPublicFile = "operator-curve.pub";

// Z85 text (40 characters) <-> 32 raw bytes; nullopt for anything else.
std::optional<CurveKey> z85_to_key(std::string_view z85);
std::string key_to_z85(const CurveKey& key);

struct CurveKeypair {
  std::string public_z85;
  std::string secret_z85;
};
CurveKeypair generate_curve_keypair();

// A CURVE public key file: one Z85 key, surrounding whitespace ignored.
// Throws cairn::Error naming the file when it is missing or not a key.
std::string read_curve_public(const std::string& path);
// A CURVE secret key file: refused when readable by group or others.
std::string read_curve_secret(const std::string& path);

struct InitializedKeys {
  std::string signing_public;  // "ed25519:<base64>"
  std::string signing_key_id;
  std::string controller_curve;  // Z85
  std::string operator_curve;    // Z85
};
// Creates the controller's Ed25519 signing key, its CURVE keypair and an
// operator CURVE keypair in dir (created 0700 if missing). Refuses
// (cairn::Error exists) to replace any existing key file: losing a key
// strands every agent or operator that trusts it.
InitializedKeys init_keys(const std::string& dir);

}  // namespace cairn::controller
