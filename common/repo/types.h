#pragma once
#include <array>
#include <cstdint>
#include <cstring>
#include <functional>
#include <string>

#include "common/crypto/crypto.h"

namespace cairn::repo {

constexpr int kFormatVersion = 1;

using BlobId = crypto::Hash;

enum class BlobType : uint8_t { data = 0, tree = 1 };

struct BlobIdHash {
  size_t operator()(const BlobId& id) const noexcept {
    size_t v;
    std::memcpy(&v, id.data(), sizeof v);
    return v;
  }
};

inline std::string id_hex(const BlobId& id) { return to_hex(id); }
bool parse_id(std::string_view hex, BlobId& out);

// Master key material: one key encrypts, one keys the blob-id hash.
struct MasterKey {
  crypto::Key encrypt{};
  crypto::Key id{};
};

}  // namespace cairn::repo
