#pragma once
// Key slots: the master key wrapped by a passphrase (scrypt) or a key file (HKDF).
// Adding, removing or changing a slot never touches data.
#include <string>
#include <vector>

#include "common/repo/storage/backend.h"
#include "common/repo/types.h"

namespace cairn::repo {

struct Secret {
  enum class Kind { passphrase, key_file } kind = Kind::passphrase;
  std::string value;
  Secret() = default;
  Secret(Kind k, std::string v) : kind(k), value(std::move(v)) {}
  Secret(const Secret&) = default;
  Secret& operator=(const Secret&) = default;
  ~Secret();
};

struct KeySlotInfo {
  std::string id;
  std::string created;
  std::string hostname;
  std::string username;
  std::string kdf;
};

struct KdfParams {
  crypto::ScryptParams scrypt;
};

// Writes a new key slot and returns its id.
std::string add_key_slot(Backend& be, const MasterKey& mk, const Secret& secret, const KdfParams& kdf = {});
// Tries every slot; throws Error(Errc::wrong_key) when none opens. slot_id gets the one that did.
// When none opens and the store keeps versions, an earlier whole version of a
// damaged or deleted slot is tried too; one that opens is added to `used`.
MasterKey open_master_key(Backend& be, const Secret& secret, std::string* slot_id = nullptr,
                          std::vector<EarlierVersionUsed>* used = nullptr);
std::vector<KeySlotInfo> list_key_slots(Backend& be);

std::string now_rfc3339();

}  // namespace cairn::repo
