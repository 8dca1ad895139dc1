// terminal_safe(): what cairnctl prints of names and reasons that come from
// agents, repositories and file systems.
#include <catch2/catch.hpp>

#include "common/util/terminal_text.h"

using cairn::terminal_safe;
using cairn::utf8_valid;

TEST_CASE("terminal_safe keeps printable ASCII and valid UTF-8 as they are") {
  CHECK(terminal_safe("") == "");
  CHECK(terminal_safe("/srv/data/report 2024.txt") == "/srv/data/report 2024.txt");
  CHECK(terminal_safe("back\\slash") == "back\\slash");
  CHECK(terminal_safe("caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80") == "caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80");
}

TEST_CASE("terminal_safe escapes C0 controls, DEL and ESC sequences") {
  CHECK(terminal_safe("a\nb") == "a\\nb");
  CHECK(terminal_safe("a\rb\tc") == "a\\rb\\tc");
  CHECK(terminal_safe("\x1b[2J\x1b]0;owned\x07") == "\\x1b[2J\\x1b]0;owned\\x07");
  CHECK(terminal_safe(std::string("nul\0x", 5)) == "nul\\x00x");
  CHECK(terminal_safe("del\x7f") == "del\\x7f");
  // A forged "complete" line cannot start on a line of its own.
  CHECK(terminal_safe("x\ncomplete").find('\n') == std::string::npos);
}

TEST_CASE("terminal_safe escapes C1 controls and bidi overrides") {
  CHECK(terminal_safe("\xc2\x9b"
                      "2J") == "\\u009b2J");  // CSI as a C1 control
  CHECK(terminal_safe("\xc2\x85") == "\\u0085");
  CHECK(terminal_safe("\xc2\xa0") == "\xc2\xa0");  // U+00A0 is printable
  CHECK(terminal_safe("txt.\xe2\x80\xae"
                      "exe") == "txt.\\u202eexe");
  CHECK(terminal_safe("\xe2\x80\xaa\xe2\x81\xa6\xe2\x81\xa9") == "\\u202a\\u2066\\u2069");
  CHECK(terminal_safe("\xe2\x80\x8e") == "\xe2\x80\x8e");  // LRM is not an override
}

TEST_CASE("terminal_safe shows bytes that are not UTF-8 in hex") {
  CHECK(terminal_safe("\xff\xfe") == "\\xff\\xfe");
  CHECK(terminal_safe("a\xc3") == "a\\xc3");                           // truncated
  CHECK(terminal_safe("\xc0\xaf") == "\\xc0\\xaf");                    // overlong '/'
  CHECK(terminal_safe("\xed\xa0\x80") == "\\xed\\xa0\\x80");           // surrogate
  CHECK(terminal_safe("\xf4\x90\x80\x80") == "\\xf4\\x90\\x80\\x80");  // above U+10FFFF
  CHECK(terminal_safe("\xc3(") == "\\xc3(");
  // An 8-bit CSI byte on its own is invalid UTF-8, so it is escaped too.
  CHECK(terminal_safe("\x9b"
                      "31m") == "\\x9b31m");
}

TEST_CASE("the output of terminal_safe never holds a control byte and is valid UTF-8") {
  std::string all;
  for (int i = 0; i < 256; ++i) all += char(i);
  all += "\xe2\x80\xae\xc2\x9b";
  std::string out = terminal_safe(all);
  CHECK(utf8_valid(out));
  for (unsigned char c : out) CHECK((c >= 0x20 && c != 0x7f));
  CHECK(out.find("\xc2\x9b") == std::string::npos);
  CHECK(out.find("\xe2\x80\xae") == std::string::npos);
}

TEST_CASE("utf8_valid is strict") {
  CHECK(utf8_valid("plain"));
  CHECK(utf8_valid("\xf0\x9f\x98\x80"));
  CHECK_FALSE(utf8_valid("\xc0\x80"));
  CHECK_FALSE(utf8_valid("\xe0\x80\x80"));
  CHECK_FALSE(utf8_valid("\xed\xbf\xbf"));
  CHECK_FALSE(utf8_valid("\xf8\x88\x80\x80\x80"));
  CHECK_FALSE(utf8_valid("\xe2\x82"));
}

TEST_CASE("utf8_or_escaped makes any bytes valid UTF-8 and keeps valid text exact") {
  using cairn::utf8_or_escaped;
  CHECK(utf8_or_escaped("caf\xc3\xa9\n\x1b") == "caf\xc3\xa9\n\x1b");  // valid: as it is, controls too
  CHECK(utf8_or_escaped("latin1-\xe9t\xe9\xff.txt") == "latin1-\\xe9t\\xe9\\xff.txt");
  CHECK(utf8_valid(utf8_or_escaped("\xc0\xaf\xed\xa0\x80\xf4\x90\x80\x80")));
}
