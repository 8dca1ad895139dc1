#pragma once
// The archive of `cairnctl export` and `cairnctl import` (docs/operations.md
// § Export and import): a gzip'd tar (libarchive) of a meta.json and a small
// repository, repo/. meta.json names the format (kFormat), the set, and every
// file of repo/ with its size and SHA-256.
//
// An archive to import is outside input: reading one accepts only meta.json
// and regular files under repo/ that meta.json lists (no links, devices,
// absolute names or ".."), each no larger than listed and with its checksum;
// anything else, a truncated or garbled archive included, is refused with an
// Error (Errc::corrupt, unsupported, io or no_space) naming what is wrong.
// The fuzz target tests/fuzz/export_archive.cc feeds it arbitrary bytes.
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace cairn::ctl::export_archive {

inline constexpr const char* kFormat = "cairn-export/1";
inline constexpr size_t kMaxMeta = 64u << 20;  // meta.json, at most

// Writes the archive `path` of the files `names` (relative to root, as they
// are named in it), in that order. Throws Error on failure.
void write_archive(const std::string& path, const std::string& root, const std::vector<std::string>& names);

// "meta.json" or "repo/<name>/...": relative, no empty, "." or ".." component,
// no control character.
bool allowed_name(const std::string& n);

struct Extracted {
  nlohmann::json meta;
  std::map<std::string, std::pair<uint64_t, std::string>> files;  // repo/... -> size, sha256
};

// The archive's meta.json, checked (its format, every file it lists with a
// valid name, size and sha256); nothing is written.
nlohmann::json read_meta(const std::string& path);

// Reads the archive into dir (which must exist): every file meta.json lists,
// with its size and checksum, and at least one snapshot listed.
Extracted extract_archive(const std::string& path, const std::string& dir);

}  // namespace cairn::ctl::export_archive
