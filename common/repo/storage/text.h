#pragma once
// Small text helpers the remote backends share: the environment, blanks,
// a file's identity (to notice a rewrite), and values out of the stores' XML.
#include <cstddef>
#include <string>

namespace cairn::repo::storage {

// The variable's value, or "" when unset.
std::string env_or_empty(const char* name);
// Without leading and trailing spaces, tabs and carriage returns.
std::string trim_blanks(std::string s);
// mtime, size and inode of path ("" when it cannot be read): changes when the file is rewritten.
std::string file_stamp(const std::string& path);
// The text between <tag> and </tag> at or after *pos (and before end), XML
// entities decoded; "" when absent. With pos, *pos moves to the closing tag.
std::string xml_value(const std::string& x, const std::string& tag, size_t* pos = nullptr,
                      size_t end = std::string::npos);

}  // namespace cairn::repo::storage
