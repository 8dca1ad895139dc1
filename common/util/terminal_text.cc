#include "common/util/terminal_text.h"

#include <cstdint>

namespace cairn {

namespace {
// Length of the well-formed UTF-8 sequence at s[i] and its code point; 0 when
// the bytes there are not one (Unicode 15, table 3-7).
size_t utf8_sequence(std::string_view s, size_t i, uint32_t& cp) {
  auto at = [&](size_t k) { return static_cast<unsigned char>(s[i + k]); };
  unsigned char c = at(0);
  if (c < 0x80) {
    cp = c;
    return 1;
  }
  size_t n;
  unsigned char lo = 0x80, hi = 0xbf;
  if (c >= 0xc2 && c <= 0xdf)
    n = 2, cp = c & 0x1f;
  else if (c >= 0xe0 && c <= 0xef)
    n = 3, cp = c & 0x0f, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
  else if (c >= 0xf0 && c <= 0xf4)
    n = 4, cp = c & 0x07, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
  else
    return 0;
  if (i + n > s.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    unsigned char b = at(k);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xbf)) return 0;
    cp = cp << 6 | (b & 0x3f);
  }
  return n;
}
}  // namespace

bool utf8_valid(std::string_view s) {
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence(s, i, cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

std::string utf8_or_escaped(std::string_view s) {
  if (utf8_valid(s)) return std::string(s);
  static const char* k = "0123456789abcdef";
  std::string out;
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence(s, i, cp);
    if (n) {
      out.append(s.substr(i, n));
      i += n;
      continue;
    }
    unsigned char b = static_cast<unsigned char>(s[i++]);
    out += "\\x";
    out += k[b >> 4];
    out += k[b & 15];
  }
  return out;
}

std::string terminal_safe(std::string_view s) {
  static const char* k = "0123456789abcdef";
  std::string out;
  out.reserve(s.size());
  uint32_t cp;
  for (size_t i = 0; i < s.size();) {
    size_t n = utf8_sequence(s, i, cp);
    if (n == 0) {  // not UTF-8: the byte, in hex
      unsigned char b = static_cast<unsigned char>(s[i]);
      out += "\\x";
      out += k[b >> 4];
      out += k[b & 15];
      ++i;
      continue;
    }
    bool c0 = cp < 0x20 || cp == 0x7f;
    bool c1 = cp >= 0x80 && cp <= 0x9f;
    bool bidi = (cp >= 0x202a && cp <= 0x202e) || (cp >= 0x2066 && cp <= 0x2069);
    if (cp == '\n')
      out += "\\n";
    else if (cp == '\r')
      out += "\\r";
    else if (cp == '\t')
      out += "\\t";
    else if (c0) {
      out += "\\x";
      out += k[cp >> 4];
      out += k[cp & 15];
    } else if (c1 || bidi) {
      out += "\\u";
      for (int shift = 12; shift >= 0; shift -= 4) out += k[(cp >> shift) & 15];
    } else {
      out.append(s.substr(i, n));
    }
    i += n;
  }
  return out;
}

std::string first_line(std::string_view s) {
  std::string out(s.substr(0, s.find('\n')));
  if (out.size() > 400) out = out.substr(0, 397) + "...";
  return out;
}

}  // namespace cairn
