#include "common/util/encoding.h"

#include <openssl/evp.h>

#include <array>
#include <cctype>

namespace cairn {

std::string to_hex(std::span<const uint8_t> data) {
  static const char* k = "0123456789abcdef";
  std::string s(data.size() * 2, '0');
  for (size_t i = 0; i < data.size(); ++i) {
    s[2 * i] = k[data[i] >> 4];
    s[2 * i + 1] = k[data[i] & 15];
  }
  return s;
}

namespace {
// Value of each hex digit, -1 for anything else: ids by the ten thousand are decoded
// from every tree a backup compares against.
constexpr std::array<int8_t, 256> kHexValue = [] {
  std::array<int8_t, 256> t{};
  t.fill(-1);
  for (int c = 0; c < 10; ++c) t['0' + c] = int8_t(c);
  for (int c = 0; c < 6; ++c) t['a' + c] = t['A' + c] = int8_t(10 + c);
  return t;
}();
}  // namespace

bool from_hex(std::string_view hex, std::span<uint8_t> out) {
  if (hex.size() != 2 * out.size()) return false;
  for (size_t i = 0; i < out.size(); ++i) {
    int a = kHexValue[uint8_t(hex[2 * i])], b = kHexValue[uint8_t(hex[2 * i + 1])];
    if ((a | b) < 0) return false;
    out[i] = uint8_t(a << 4 | b);
  }
  return true;
}

bool from_hex(std::string_view hex, Bytes& out) {
  if (hex.size() % 2) return false;
  out.resize(hex.size() / 2);
  return from_hex(hex, std::span<uint8_t>(out));
}

std::string to_base64(std::span<const uint8_t> data) {
  std::string out(4 * ((data.size() + 2) / 3), '\0');
  int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(), int(data.size()));
  out.resize(size_t(n));
  return out;
}

bool from_base64(std::string_view b64, Bytes& out) {
  if (b64.size() % 4) return false;
  out.resize(3 * b64.size() / 4);
  int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(b64.data()), int(b64.size()));
  if (n < 0) return false;
  size_t pad = 0;
  if (!b64.empty() && b64.back() == '=') ++pad;
  if (b64.size() > 1 && b64[b64.size() - 2] == '=') ++pad;
  out.resize(size_t(n) - pad);
  return true;
}

int64_t parse_duration(std::string_view s) {
  if (s.empty()) return -1;
  int64_t total = 0;
  size_t i = 0;
  while (i < s.size()) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) return -1;
    int64_t n = 0;
    while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
      n = n * 10 + (s[i] - '0');
      if (n > (int64_t(1) << 40)) return -1;
      ++i;
    }
    std::string unit;
    while (i < s.size() && std::isalpha(static_cast<unsigned char>(s[i]))) unit += s[i++];
    int64_t mul;
    if (unit == "s")
      mul = 1;
    else if (unit == "min")
      mul = 60;
    else if (unit == "h")
      mul = 3600;
    else if (unit == "d")
      mul = 86400;
    else if (unit == "w")
      mul = 7 * 86400;
    else if (unit == "m")
      mul = 30 * 86400;
    else if (unit == "y")
      mul = 365 * 86400;
    else
      return -1;
    total += n * mul;
  }
  return total;
}

}  // namespace cairn
