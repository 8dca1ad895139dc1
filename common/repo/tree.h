#pragma once
// Tree blobs: one directory listing each, nodes sorted by name.
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

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
  std::vector<BlobId> content;                         // files
  std::vector<std::pair<uint64_t, uint64_t>> extents;  // sparse files: data regions (offset, length)
  bool sparse = false;
  std::optional<BlobId> subtree;  // dirs
  std::string target;             // symlinks
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

// Where a TreeReader's text comes from when it is not held whole: more()
// appends the next piece to out, false once there is no more. A tree blob's
// zstd frame decompressed as it is read (Repository::open_tree).
class TreeTextSource {
 public:
  virtual ~TreeTextSource() = default;
  virtual bool more(Bytes& out) = 0;
};

// A tree's nodes one at a time, in name order, each checked as decode_tree
// checks it: a directory of 200,000 entries costs its text (~55 MB; with a
// source, a window of it), not a parsed document and 200,000 nodes besides.
// Text laid out as encode_tree_bytes writes it, {"nodes":[...]}, is read node
// by node; any other layout is decoded whole first. A malformed node, or one
// out of order, throws Error(Errc::corrupt) when it is reached, after the
// nodes before it were returned: a tree's bytes are verified against its id
// before it is read, so that is a tree written wrong, not damage in storage.
class TreeReader {
 public:
  TreeReader() = default;  // no nodes
  explicit TreeReader(Bytes text);
  explicit TreeReader(std::span<const uint8_t> text);  // borrowed: text outlives the reader
  explicit TreeReader(std::unique_ptr<TreeTextSource> source);
  explicit TreeReader(Tree tree);
  TreeReader(TreeReader&&) noexcept;
  TreeReader& operator=(TreeReader&&) noexcept;
  ~TreeReader();
  // The next node into n; false (and the text freed) after the last one.
  bool next(Node& n);
  uint64_t count() const { return count_; }  // nodes returned so far
  // The nodes a tree held whole in cairn's layout lists (a scan of its text, to
  // reserve a vector for them), 0 when not known.
  size_t nodes_hint() const;

 private:
  bool avail(size_t k);  // at least k bytes from pos_ on, reading more from the source
  bool skip_space();     // to the next non-space byte; false at the end of the text
  void finish();
  void whole();  // not cairn's layout: decode everything, then hand out nodes
  Bytes buf_;
  std::span<const uint8_t> borrowed_;
  std::unique_ptr<TreeTextSource> source_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0, room_ = 0, pos_ = 0;  // room_: bytes readable from data_ (capacity)
  enum class State { start, first, after, done } state_ = State::done;
  std::optional<Tree> tree_;  // decoded whole
  size_t tree_next_ = 0;
  std::string prev_;
  uint64_t count_ = 0;
};

// A tree's text written node by node, byte for byte what encode_tree_bytes
// writes for the same nodes: a directory's nodes need not be gathered in one
// Tree first. Nodes must come in name order.
class TreeWriter {
 public:
  void add(const Node& n);
  // The text written since the last take(), for a caller that passes a large
  // tree on in pieces (Repository::BlobStream); finish() then gives the rest.
  std::string take() { return std::exchange(text_, {}); }
  std::string finish();                         // the text (since the last take()); the writer is empty again
  size_t size() const { return text_.size(); }  // bytes held

 private:
  std::string text_;
  size_t nodes_ = 0;
};

bool valid_utf8(std::string_view s);

}  // namespace cairn::repo
