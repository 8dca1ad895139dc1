#pragma once
// Text formats that allow no control characters (TOML: none but tab, line
// feed and carriage return): the config readers refuse them before a parser
// sees them, with the place.
#include <cstddef>
#include <string_view>

namespace cairn {

// Offset of the first ASCII control character other than tab, line feed and
// carriage return (0x00-0x1f, 0x7f), or npos.
inline size_t find_control_char(std::string_view s) {
  for (size_t i = 0; i < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7f) return i;
  }
  return std::string_view::npos;
}

}  // namespace cairn
