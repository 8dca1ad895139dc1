// The controller's TOML configuration (controller/config.cc), parsed as at
// start. Refusals are ConfigError ("FILE:LINE:COLUMN: reason").
#include <spdlog/spdlog.h>

#include <cstdint>
#include <string>

#include "common/util/error.h"
#include "controller/config.h"

using namespace cairn;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  spdlog::set_level(spdlog::level::off);
  try {
    (void)controller::parse_config(std::string(reinterpret_cast<const char*>(data), size), "controller.toml");
  } catch (const controller::ConfigError&) {
  } catch (const Error&) {
  }
  return 0;
}
