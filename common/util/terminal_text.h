#pragma once
// Text for a terminal: what cairnctl prints of names and reasons that come
// from agents, repositories and file systems.
#include <string>
#include <string_view>

namespace cairn {

// True when s is well-formed UTF-8: no overlong forms, no surrogates, nothing
// above U+10FFFF, no truncated sequence.
bool utf8_valid(std::string_view s);

// Renders untrusted bytes (names and reasons from an agent, file names from a
// tree, error text that echoes them) for a terminal, so they cannot move the
// cursor, clear the screen, set the window title or forge a line of output:
// valid UTF-8 is kept; C0 controls, DEL and C1 controls are shown escaped
// (\n, \r, \t, \x1b, \u0085), as are bytes that are not valid UTF-8
// (\xff) and the bidi embedding, override and isolate characters U+202A-U+202E
// and U+2066-U+2069 (\u202e), which would reorder what follows them.
// A backslash stays as it is: the result is for reading, not for parsing.
std::string terminal_safe(std::string_view s);

// For a protobuf `string` field (proto3 refuses to parse one that is not
// UTF-8): valid UTF-8 kept as it is, every byte that is not part of it written
// as \xNN. Controls are kept; terminal_safe() is for display.
std::string utf8_or_escaped(std::string_view s);

// A reason's first line, at most 400 characters (the rest "..."): where a
// summary shows it (cairnctl status, the status page); the whole reason,
// a server's log included, stays in 'cairnctl drill show' and 'backup show'.
std::string first_line(std::string_view s);

}  // namespace cairn
