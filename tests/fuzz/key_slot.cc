// Key slot files (keys/<id>): the input is the whole slot (JSON with the KDF
// parameters, salt and wrapped master key), next to a valid config. Opening
// the repository tries the slot with the passphrase; listing shows its
// metadata, as `cairnctl repo key list` does. KDF parameters come from the
// file: memory or time they ask for must be bounded before the KDF runs.
#include <cstdint>
#include <string_view>

#include "common/repo/keys.h"
#include "common/util/error.h"
#include "fuzz_repo.h"

using namespace cairn;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzRepo fr(fuzz::FuzzRepo::valid_config(), std::string_view(reinterpret_cast<const char*>(data), size));
  try {
    auto be = fr.backend();
    (void)repo::list_key_slots(*be);
    (void)fr.open();
  } catch (const Error&) {
  }
  return 0;
}
