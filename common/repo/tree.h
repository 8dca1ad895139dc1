#pragma once
// Tree blobs: one directory listing each, nodes sorted by name.
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/repo/types.h"

namespace cairn::repo {

enum class NodeType { file, dir, symlink, chardev, blockdev, fifo, socket };
const char* node_type_name(NodeType t);

struct Node {
  std::string name;
  NodeType type = NodeType::file;
  uint32_t mode = 0;  // permission bits incl. setuid/setgid/sticky
  uint32_t uid = 0, gid = 0;
  std::string user, group;
  int64_t mtime_ns = 0, atime_ns = 0, ctime_ns = 0;
  uint64_t inode = 0, device = 0, links = 0, size = 0, rdev = 0;
  std::vector<BlobId> content;                           // files
  std::vector<std::pair<uint64_t, uint64_t>> extents;    // sparse files: data regions (offset, length)
  bool sparse = false;
  std::optional<BlobId> subtree;                         // dirs
  std::string target;                                    // symlinks
  std::vector<std::pair<std::string, Bytes>> xattrs;
};

struct Tree {
  std::vector<Node> nodes;
};

nlohmann::json encode_tree(const Tree& t);
// Validates every field; throws Error(Errc::corrupt) naming what is wrong.
Tree decode_tree(const nlohmann::json& j);
Tree decode_tree_bytes(std::span<const uint8_t> data);
// The same, freeing data once it is parsed (before the nodes are built): a
// directory of 200,000 entries is tens of MB of text. When data's capacity
// holds kTreeParsePadding bytes past its end, it is parsed where it is, not
// copied into a padded buffer first (decompress leaves kDecompressedSlack).
Tree decode_tree_bytes(Bytes&& data);
inline constexpr size_t kTreeParsePadding = 64;  // simdjson's SIMDJSON_PADDING (static_assert in tree.cc)
std::string encode_tree_bytes(const Tree& t);

bool valid_utf8(std::string_view s);

}  // namespace cairn::repo
