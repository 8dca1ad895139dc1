#include "common/util/toml_guard.h"

#include <cstdio>
#include <vector>

namespace cairn {
namespace {

constexpr std::string_view kHeaderExpectation =
    "expected [name] or [[name]]: names bare (A-Za-z0-9_-) or quoted, joined by dots, then only a # comment";

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// toml++'s value terminators, as far as ASCII goes.
bool is_terminator(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == ']' || c == '}' || c == ',' || c == '#'; }

bool is_bare(char c) { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'; }

class Scanner {
 public:
  explicit Scanner(std::string_view text) : s_(text) {
    if (s_.substr(0, 3) == "\xEF\xBB\xBF") line_start_ = i_ = 3;  // toml++ skips a UTF-8 BOM
  }

  std::optional<TomlGuardProblem> run() {
    while (i_ < s_.size()) {
      // The start of a document-level line.
      while (i_ < s_.size() && is_blank(s_[i_])) ++i_;
      if (i_ == s_.size()) break;
      char c = s_[i_];
      if (c == '\n') {
        newline();
      } else if (c == '#') {
        skip_to_eol();
      } else if (c == '[') {
        if (!header_ok())
          return problem_at(i_, "malformed table header '" + shown_line(i_) + "' (" + std::string(kHeaderExpectation) + ")");
        skip_to_eol();  // a well-formed header ends with blanks and a comment
      } else if (auto p = statement()) {
        return p;
      }
    }
    return std::nullopt;
  }

 private:
  // A header from s_[i_] == '[' to the end of its line.
  bool header_ok() const {
    size_t j = i_ + 1;
    bool arr = false;
    if (j < s_.size() && s_[j] == '[') {  // "[[" must be contiguous
      arr = true;
      ++j;
    }
    for (;;) {
      while (j < s_.size() && is_blank(s_[j])) ++j;
      if (j == s_.size()) return false;
      if (is_bare(s_[j])) {
        while (j < s_.size() && is_bare(s_[j])) ++j;
      } else if (s_[j] == '"') {
        for (++j;; ++j) {
          if (j >= s_.size() || s_[j] == '\n' || s_[j] == '\r') return false;
          if (s_[j] == '\\') {
            ++j;
            if (j >= s_.size() || s_[j] == '\n' || s_[j] == '\r') return false;
          } else if (s_[j] == '"') {
            break;
          }
        }
        ++j;
      } else if (s_[j] == '\'') {
        for (++j;; ++j) {
          if (j >= s_.size() || s_[j] == '\n' || s_[j] == '\r') return false;
          if (s_[j] == '\'') break;
        }
        ++j;
      } else {
        return false;
      }
      while (j < s_.size() && is_blank(s_[j])) ++j;
      if (j < s_.size() && s_[j] == '.') {
        ++j;
        continue;
      }
      break;
    }
    if (j >= s_.size() || s_[j] != ']') return false;
    ++j;
    if (arr) {
      if (j >= s_.size() || s_[j] != ']') return false;
      ++j;
    }
    while (j < s_.size() && is_blank(s_[j])) ++j;
    if (j == s_.size() || s_[j] == '\n' || s_[j] == '#') return true;
    return s_[j] == '\r' && j + 1 < s_.size() && s_[j + 1] == '\n';
  }

  // A key/value line (or anything else that is not a header or a comment), up
  // to the end of the line where its brackets are closed. Keys and values
  // alternate: "=" starts a value, "{" and a "," inside it a key. In a value a
  // token that is not a string, array or inline table (a number, date,
  // boolean...) runs to toml++'s value terminators (blanks, line breaks,
  // ] } , #): parse_value() scans that far, asking is_whitespace() of every
  // character, quotes and brackets included.
  std::optional<TomlGuardProblem> statement() {
    std::vector<char> open;  // '[' or '{', innermost last
    bool value = false;      // else a key is expected
    while (i_ < s_.size()) {
      char c = s_[i_];
      switch (c) {
        case ' ':
        case '\t':
        case '\r':
          ++i_;
          break;
        case '\n':
          newline();
          if (open.empty()) return std::nullopt;
          break;
        case '#':
          skip_to_eol();
          break;
        case '"':
        case '\'':
          if (auto p = string(c)) return p;
          break;
        case '=':
          value = true;
          ++i_;
          break;
        case ',':
          value = open.empty() || open.back() == '[';
          ++i_;
          break;
        case '[':
          open.push_back(c);
          ++i_;
          break;
        case '{':
          open.push_back(c);
          value = false;
          ++i_;
          break;
        case ']':
          if (!open.empty()) open.pop_back();
          value = true;
          ++i_;
          break;
        case '}':
          if (!open.empty() && open.back() == '[') return problem_at(i_, "'}' inside an array, where a value or ']' is expected");
          if (!open.empty()) open.pop_back();
          value = true;
          ++i_;
          break;
        default:
          if (!value) {  // a bare key
            if (static_cast<unsigned char>(c) >= 0x80)
              return problem_at(i_, "non-ASCII character " + code_point(i_) + " outside a string or comment");
            ++i_;
            break;
          }
          size_t start = i_;
          for (; i_ < s_.size() && !is_terminator(s_[i_]); ++i_)  // a bare value token
            if (static_cast<unsigned char>(s_[i_]) >= 0x80)
              return problem_at(i_, "non-ASCII character " + code_point(i_) + " outside a string or comment");
          // "1979-05-27 0": parse_value() takes a space and a digit after a
          // date for its time and asserts that a value goes on after the
          // digit (parser.inl:2636). Never valid TOML.
          if (s_.substr(i_, 1) == " " && i_ + 1 < s_.size() && s_[i_ + 1] >= '0' && s_[i_ + 1] <= '9' &&
              (i_ + 2 == s_.size() || is_terminator(s_[i_ + 2])))
            return problem_at(start, "'" + std::string(s_.substr(start, i_ + 2 - start)) + "' is neither a value nor a date and time");
      }
    }
    return std::nullopt;
  }

  // The UTF-8 sequence at s_[at] as "U+XXXX" (or its bytes when it is not one).
  std::string code_point(size_t at) const {
    auto b = [&](size_t k) { return at + k < s_.size() ? static_cast<unsigned char>(s_[at + k]) : 0u; };
    unsigned lead = b(0), n = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 0;
    uint32_t cp = n == 4 ? lead & 0x07 : n == 3 ? lead & 0x0F : lead & 0x1F;
    bool ok = n != 0;
    for (unsigned k = 1; ok && k < n; ++k) {
      ok = (b(k) & 0xC0) == 0x80;
      cp = (cp << 6) | (b(k) & 0x3F);
    }
    char out[16];
    if (ok)
      std::snprintf(out, sizeof out, "U+%04X", unsigned(cp));
    else
      std::snprintf(out, sizeof out, "byte 0x%02x", lead);
    return out;
  }

  // A string starting at s_[i_] == quote; ends after its closing quote(s), or
  // before the line break that leaves a one-line string unclosed.
  std::optional<TomlGuardProblem> string(char quote) {
    bool multi = s_.substr(i_, 3) == std::string(3, quote);
    i_ += multi ? 3 : 1;
    bool escapes = quote == '"';
    while (i_ < s_.size()) {
      char c = s_[i_];
      if (c == '\n') {
        if (!multi) return std::nullopt;
        newline();
      } else if (escapes && c == '\\') {
        // toml++ asks is_whitespace() of the character after a backslash, and
        // (multi-line, after a line-ending backslash) is_horizontal_whitespace()
        // of the first one after the blanks and line breaks it skips; both
        // reach TOML_UNREACHABLE for U+00A1..U+0499 (unicode_autogenerated.h).
        size_t slash = i_++;
        if (i_ < s_.size() && static_cast<unsigned char>(s_[i_]) >= 0x80)
          return problem_at(i_, "non-ASCII character " + code_point(i_) + " after a backslash in a string");
        if (multi && i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r' || s_[i_] == '\n')) {
          while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\r' || s_[i_] == '\n')) {
            if (s_[i_] == '\n')
              newline();
            else
              ++i_;
          }
          if (i_ < s_.size() && static_cast<unsigned char>(s_[i_]) >= 0x80)
            return problem_at(i_, "non-ASCII character " + code_point(i_) + " first after a line-ending backslash (at line " +
                                      std::to_string(line_of(slash)) +
                                      ") in a multi-line string (toml++ 3.3.0 mishandles it: escape it as \\uXXXX)");
        } else if (i_ < s_.size() && s_[i_] != '\n') {
          ++i_;
        }
      } else if (c == quote) {
        size_t run = 0;
        while (i_ < s_.size() && s_[i_] == quote) ++i_, ++run;
        if (!multi || run >= 3) return std::nullopt;  // """a"""" ends with a quote in the content
      } else {
        ++i_;
      }
    }
    return std::nullopt;
  }

  uint32_t line_of(size_t at) const {
    uint32_t n = 1;
    for (size_t k = 0; k < at; ++k) n += s_[k] == '\n';
    return n;
  }

  void newline() {
    ++i_;
    ++line_;
    line_start_ = i_;
  }

  void skip_to_eol() {
    while (i_ < s_.size() && s_[i_] != '\n') ++i_;
  }

  // The line from `at`, without its line break, quoted for a message: bytes
  // outside printable ASCII as \xNN, cut after 60.
  std::string shown_line(size_t at) const {
    std::string out;
    size_t end = s_.find('\n', at);
    if (end == std::string_view::npos) end = s_.size();
    if (end > at && s_[end - 1] == '\r') --end;
    for (size_t k = at; k < end; ++k) {
      if (k - at == 60) {
        out += "...";
        break;
      }
      auto b = static_cast<unsigned char>(s_[k]);
      if (b < 0x20 || b >= 0x7f) {
        char hex[8];
        std::snprintf(hex, sizeof hex, "\\x%02x", unsigned(b));
        out += hex;
      } else {
        out += char(b);
      }
    }
    return out;
  }

  TomlGuardProblem problem_at(size_t at, std::string reason) const {
    return TomlGuardProblem{line_, uint32_t(at - line_start_ + 1), std::move(reason)};
  }

  std::string_view s_;
  size_t i_ = 0;
  size_t line_start_ = 0;
  uint32_t line_ = 1;
};

}  // namespace

std::optional<TomlGuardProblem> find_toml_assertion_trigger(std::string_view text) { return Scanner(text).run(); }

}  // namespace cairn
