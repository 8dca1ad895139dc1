#include "proto/error_code.h"

#include <cctype>
#include <string_view>

namespace cairn::proto {

std::string error_code_name(cairn::v1::ErrorCode code) {
  if (!cairn::v1::ErrorCode_IsValid(code)) return "code_" + std::to_string(int(code));
  std::string name = cairn::v1::ErrorCode_Name(code);
  constexpr std::string_view prefix = "ERROR_CODE_";
  if (name.starts_with(prefix)) name.erase(0, prefix.size());
  for (char& c : name) c = char(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

}  // namespace cairn::proto
