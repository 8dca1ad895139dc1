#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace cairn {

using Bytes = std::vector<uint8_t>;

std::string to_hex(std::span<const uint8_t> data);
// Returns false on odd length or a non-hex character.
bool from_hex(std::string_view hex, Bytes& out);
// Into a fixed-size buffer: false unless hex is exactly twice out's size.
bool from_hex(std::string_view hex, std::span<uint8_t> out);
std::string to_base64(std::span<const uint8_t> data);
bool from_base64(std::string_view b64, Bytes& out);

inline std::span<const uint8_t> as_bytes(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

inline void put_u32le(uint8_t* p, uint32_t v) {
  p[0] = uint8_t(v);
  p[1] = uint8_t(v >> 8);
  p[2] = uint8_t(v >> 16);
  p[3] = uint8_t(v >> 24);
}
inline uint32_t get_u32le(const uint8_t* p) { return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24; }

// "1h30m", "7d", "2w", "1y2m" (y=365d, m after d/w/y means month=30d; use "min" for minutes)
// Returns seconds, or -1 when malformed.
int64_t parse_duration(std::string_view s);

}  // namespace cairn
