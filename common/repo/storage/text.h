#pragma once
// Small text helpers the remote backends share: the environment, blanks,
// a file's identity (to notice a rewrite), and values out of the stores' XML.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace cairn::repo::storage {

// The variable's value, or "" when unset.
std::string env_or_empty(const char* name);
// Without leading and trailing spaces, tabs and carriage returns.
std::string trim_blanks(std::string s);
// mtime, size and inode of path ("" when it cannot be read): changes when the file is rewritten.
std::string file_stamp(const std::string& path);
// A credentials file: KEY=VALUE lines (mode 0600, refused otherwise: read_secret_file),
// blanks around both trimmed, keys lowercased, '#' lines and empty ones skipped.
// A line without '=' fails naming the file, the line and `keys_hint`, never the line's text.
std::map<std::string, std::string> read_credentials_file(const std::string& path, const std::string& keys_hint);
// Each entry of one page of a store's XML listing: the text of key_tag and size_tag
// inside every <entry_tag>; names under `prefix` (the last path segment, not
// starting with '.') go to fn with their size.
void each_listed(const std::string& xml, const std::string& entry_tag, const std::string& key_tag, const std::string& size_tag,
                 const std::string& prefix, const std::function<void(const std::string& name, uint64_t size)>& fn);

// The same with each entry's entity tag (etag_tag's text, quotes removed).
void each_listed_info(const std::string& xml, const std::string& entry_tag, const std::string& key_tag, const std::string& size_tag,
                      const std::string& etag_tag, const std::string& prefix,
                      const std::function<void(const std::string& name, uint64_t size, const std::string& etag)>& fn);
// An entity tag without its quotes (and a weak tag's W/).
std::string bare_etag(std::string e);

// The text between <tag> and </tag> at or after *pos (and before end), XML
// entities decoded; "" when absent. With pos, *pos moves to the closing tag.
std::string xml_value(const std::string& x, const std::string& tag, size_t* pos = nullptr, size_t end = std::string::npos);

}  // namespace cairn::repo::storage
