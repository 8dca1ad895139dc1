// The agent's TOML configuration (agent/config.cc): parsed and checked as at
// start and by --check-config. Refusals are ConfigError ("FILE:LINE: reason").
#include <spdlog/spdlog.h>

#include <cstdint>
#include <string_view>

#include "agent/config.h"
#include "agent/config_reader.h"
#include "common/util/error.h"

using namespace cairn;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  spdlog::set_level(spdlog::level::off);
  try {
    (void)agent::parse_config(std::string_view(reinterpret_cast<const char*>(data), size), "agent.toml");
  } catch (const agent::ConfigError&) {
  } catch (const Error&) {
  }
  return 0;
}
