#pragma once
// The agent's CURVE keypair: created on first start in the key directory
// (secret 0600, directory 0700), loaded afterwards. The public key is what an
// operator approves and what every plan names as its target.
#include <array>
#include <cstdint>
#include <string>

namespace cairn::agent {

struct CurveIdentity {
  std::string public_z85;  // 40 characters
  std::string secret_z85;  // never logged
  std::array<uint8_t, 32> public_raw{};
};

// Loads <dir>/agent.key (and derives the public key), or creates the pair when
// the file does not exist. Throws cairn::Error when the secret file is
// readable by others, damaged, or cannot be written.
CurveIdentity load_or_create_identity(const std::string& dir, bool* created = nullptr);

}  // namespace cairn::agent
