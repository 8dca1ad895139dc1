// The repository config file. The input is the config text; if it contains
// a NUL byte, what follows is the plaintext of the sealed parameters, sealed
// with the repository key in place of every "@SEALED@" in the text before it
// (so the fuzzer reaches the parameters someone with the password can write).
// Opening the repository parses both, as every command does.
#include <cstdint>
#include <string>
#include <string_view>

#include "common/util/error.h"
#include "fuzz_repo.h"

using namespace cairn;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  size_t nul = in.find('\0');
  std::string config = nul == std::string_view::npos ? std::string(in) : fuzz::FuzzRepo::config_with(in.substr(0, nul), in.substr(nul + 1));
  fuzz::FuzzRepo fr(config, fuzz::FuzzRepo::valid_slot());
  try {
    auto r = fr.open();
    (void)r->params();
  } catch (const Error&) {
  }
  return 0;
}
