#include "common/repo/tree.h"

#include <charconv>
#include <cstring>
#include <optional>

#include "common/repo/compress.h"
#include "common/repo/json_parser.h"
#include "common/util/error.h"

namespace cairn::repo {

using nlohmann::json;

const char* node_type_name(NodeType t) {
  switch (t) {
    case NodeType::file:
      return "file";
    case NodeType::dir:
      return "dir";
    case NodeType::symlink:
      return "symlink";
    case NodeType::chardev:
      return "chardev";
    case NodeType::blockdev:
      return "blockdev";
    case NodeType::fifo:
      return "fifo";
    case NodeType::socket:
      return "socket";
  }
  return "?";
}

static bool parse_node_type(const std::string& s, NodeType& t) {
  for (auto c : {NodeType::file, NodeType::dir, NodeType::symlink, NodeType::chardev, NodeType::blockdev, NodeType::fifo, NodeType::socket})
    if (s == node_type_name(c)) {
      t = c;
      return true;
    }
  return false;
}

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) >> 6) != 2) return false;
    i += n;
  }
  return true;
}

// Names and link targets are bytes on Linux; JSON strings must be UTF-8.
static void put_bytes_string(json& j, const char* key, const std::string& s) {
  if (valid_utf8(s))
    j[key] = s;
  else
    j[std::string(key) + "_b64"] = to_base64(as_bytes(s));
}
json encode_tree(const Tree& t) {
  json nodes = json::array();
  for (const auto& n : t.nodes) {
    json j;
    put_bytes_string(j, "name", n.name);
    j["type"] = node_type_name(n.type);
    j["mode"] = n.mode;
    j["uid"] = n.uid;
    j["gid"] = n.gid;
    if (!n.user.empty()) j["user"] = n.user;
    if (!n.group.empty()) j["group"] = n.group;
    j["mtime"] = n.mtime_ns;
    if (n.atime_ns) j["atime"] = n.atime_ns;
    j["ctime"] = n.ctime_ns;
    j["inode"] = n.inode;
    j["device"] = n.device;
    j["links"] = n.links;
    if (n.type == NodeType::file) {
      j["size"] = n.size;
      json c = json::array();
      for (const auto& id : n.content) c.push_back(id_hex(id));
      j["content"] = std::move(c);
      if (n.sparse) j["extents"] = n.extents;
    }
    if (n.type == NodeType::dir && n.subtree) j["subtree"] = id_hex(*n.subtree);
    if (n.type == NodeType::symlink) put_bytes_string(j, "target", n.target);
    if (n.type == NodeType::chardev || n.type == NodeType::blockdev) j["rdev"] = n.rdev;
    if (!n.xattrs.empty()) {
      json x = json::array();
      for (const auto& [k, v] : n.xattrs) x.push_back(json::array({to_base64(as_bytes(k)), to_base64(v)}));
      j["xattrs"] = std::move(x);
    }
    nodes.push_back(std::move(j));
  }
  return {{"nodes", std::move(nodes)}};
}

namespace {
using simdjson::dom::array;
using simdjson::dom::element;
using simdjson::dom::object;

[[noreturn]] void bad_tree(const std::string& why) { throw Error(Errc::corrupt, "tree: " + why); }

// Field readers: a missing required field, a field of the wrong type or a number out
// of range is corruption; an optional field that is absent takes its default.
std::optional<element> field(const object& o, const char* key) {
  element e;
  auto err = o[key].get(e);
  if (err == simdjson::NO_SUCH_FIELD) return std::nullopt;
  if (err) bad_tree(std::string("malformed '") + key + "'");
  return e;
}
element need(const object& o, const char* key) {
  auto e = field(o, key);
  if (!e) bad_tree(std::string("missing '") + key + "'");
  return *e;
}
uint64_t as_u64(const element& e, const char* key) {
  uint64_t v;
  if (e.get_uint64().get(v)) bad_tree(std::string("'") + key + "' is not a non-negative integer");
  return v;
}
uint32_t as_u32(const element& e, const char* key) {
  uint64_t v = as_u64(e, key);
  if (v > UINT32_MAX) bad_tree(std::string("'") + key + "' is out of range");
  return uint32_t(v);
}
int64_t as_i64(const element& e, const char* key) {
  int64_t v;
  if (e.get_int64().get(v)) bad_tree(std::string("'") + key + "' is not an integer");
  return v;
}
std::string_view as_str(const element& e, const char* key) {
  std::string_view v;
  if (e.get_string().get(v)) bad_tree(std::string("'") + key + "' is not a string");
  return v;
}
array as_array(const element& e, const char* key) {
  array a;
  if (e.get_array().get(a)) bad_tree(std::string("'") + key + "' is not a list");
  return a;
}
// Names and link targets: UTF-8 as a string, other bytes as key_b64.
std::string bytes_string(const object& o, const char* key) {
  if (auto e = field(o, key)) return std::string(as_str(*e, key));
  std::string k64 = std::string(key) + "_b64";
  if (auto e = field(o, k64.c_str())) {
    Bytes b;
    if (!from_base64(as_str(*e, key), b)) bad_tree(std::string("malformed base64 in '") + key + "'");
    return std::string(b.begin(), b.end());
  }
  return {};
}
BlobId as_id(const element& e, const char* what) {
  BlobId id;
  if (!parse_id(as_str(e, what), id)) bad_tree(std::string("malformed ") + what + " id");
  return id;
}

Node decode_node(const element& el) {
  object e;
  if (el.get_object().get(e)) bad_tree("a node is not an object");
  Node n;
  n.name = bytes_string(e, "name");
  if (n.name.empty() || n.name == "." || n.name == ".." || n.name.find('/') != std::string::npos || n.name.find('\0') != std::string::npos)
    bad_tree("invalid node name");
  if (!parse_node_type(std::string(as_str(need(e, "type"), "type")), n.type)) bad_tree("unknown node type");
  n.mode = as_u32(need(e, "mode"), "mode") & 07777;
  n.uid = as_u32(need(e, "uid"), "uid");
  n.gid = as_u32(need(e, "gid"), "gid");
  if (auto f = field(e, "user")) n.user = as_str(*f, "user");
  if (auto f = field(e, "group")) n.group = as_str(*f, "group");
  n.mtime_ns = as_i64(need(e, "mtime"), "mtime");
  if (auto f = field(e, "atime")) n.atime_ns = as_i64(*f, "atime");
  if (auto f = field(e, "ctime")) n.ctime_ns = as_i64(*f, "ctime");
  if (auto f = field(e, "inode")) n.inode = as_u64(*f, "inode");
  if (auto f = field(e, "device")) n.device = as_u64(*f, "device");
  if (auto f = field(e, "links")) n.links = as_u64(*f, "links");
  if (n.type == NodeType::file) {
    n.size = as_u64(need(e, "size"), "size");
    array content = as_array(need(e, "content"), "content");
    n.content.reserve(content.size());
    for (element c : content) n.content.push_back(as_id(c, "content"));
    if (auto f = field(e, "extents")) {
      n.sparse = true;
      uint64_t end = 0;
      for (element x : as_array(*f, "extents")) {
        array pair = as_array(x, "extents");
        if (pair.size() != 2) bad_tree("sparse extent is not [offset, length]");
        uint64_t off = as_u64(pair.at(0).value_unsafe(), "extents"), len = as_u64(pair.at(1).value_unsafe(), "extents");
        if (off < end || off + len > n.size || off + len < off) bad_tree("sparse extents out of order");
        end = off + len;
        n.extents.emplace_back(off, len);
      }
    }
  }
  if (n.type == NodeType::dir)
    if (auto f = field(e, "subtree")) n.subtree = as_id(*f, "subtree");
  if (n.type == NodeType::symlink) n.target = bytes_string(e, "target");
  if (n.type == NodeType::chardev || n.type == NodeType::blockdev) n.rdev = as_u64(need(e, "rdev"), "rdev");
  if (auto f = field(e, "xattrs")) {
    for (element x : as_array(*f, "xattrs")) {
      array pair;
      Bytes k, v;
      if (x.get_array().get(pair) || pair.size() != 2 || !from_base64(as_str(pair.at(0).value_unsafe(), "xattrs"), k) ||
          !from_base64(as_str(pair.at(1).value_unsafe(), "xattrs"), v))
        bad_tree("malformed xattr");
      n.xattrs.emplace_back(std::string(k.begin(), k.end()), std::move(v));
    }
  }
  return n;
}
}  // namespace

// One decoder, simdjson's: trees are read by the thousand (a backup compares against
// every directory of its parent, a restore plans from all of them), and parsing them
// was most of what a backup with nothing changed spent besides the key derivation.
// A tree in cairn's layout is parsed one node at a time (TreeReader); any other is
// parsed whole, here.
namespace {
Tree decode_parsed(element doc);

static_assert(kTreeParsePadding >= simdjson::SIMDJSON_PADDING);
static_assert(kDecompressedSlack >= kTreeParsePadding);

Tree decode_dom(const uint8_t* data, size_t size, bool padded) {
  std::optional<simdjson::dom::parser> own;
  simdjson::dom::parser& parser = json_parser(size, own);
  element doc;
  // Empty: refused here, simdjson would be handed a null pointer (undefined behaviour).
  if (size == 0 || parser.parse(data, size, !padded).get(doc)) bad_tree("not valid JSON");
  return decode_parsed(doc);
}

Tree decode_parsed(element doc) {
  object root;
  element nodes;
  if (doc.get_object().get(root) || root["nodes"].get(nodes) || !nodes.is_array()) bad_tree("no node list");
  Tree t;
  array list = nodes.get_array().value_unsafe();
  t.nodes.reserve(list.size());
  for (element el : list) {
    Node n = decode_node(el);
    if (!t.nodes.empty() && n.name <= t.nodes.back().name) bad_tree("nodes not sorted or duplicated ('" + n.name + "')");
    t.nodes.push_back(std::move(n));
  }
  return t;
}

Tree drain(TreeReader& r) {
  Tree t;
  // Reserved exactly: a vector grown by doubling holds up to three times the
  // nodes' size while it moves them.
  t.nodes.reserve(r.nodes_hint());
  Node n;
  while (r.next(n)) t.nodes.push_back(std::move(n));
  return t;
}

constexpr std::string_view kTreeStart = "{\"nodes\":[";
bool is_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
}  // namespace

Tree decode_tree_bytes(std::span<const uint8_t> data) {
  TreeReader r(data);
  return drain(r);
}

// The text is freed once the last node is read; the nodes are built one at a
// time from it, with no document of the whole tree.
Tree decode_tree_bytes(Bytes&& data) {
  TreeReader r(std::move(data));
  Bytes().swap(data);
  return drain(r);
}

TreeReader::TreeReader(Bytes text) : buf_(std::move(text)), state_(State::start) {
  data_ = buf_.data();
  size_ = buf_.size();
  room_ = buf_.capacity();
}
TreeReader::TreeReader(std::span<const uint8_t> text) : borrowed_(text), state_(State::start) {
  data_ = text.data();
  size_ = room_ = text.size();  // nothing past the end is known to be readable
}
TreeReader::TreeReader(std::unique_ptr<TreeTextSource> source) : source_(std::move(source)), state_(State::start) {}
TreeReader::TreeReader(Tree tree) : tree_(std::move(tree)) {}
TreeReader::TreeReader(TreeReader&&) noexcept = default;
TreeReader& TreeReader::operator=(TreeReader&&) noexcept = default;
TreeReader::~TreeReader() = default;

size_t TreeReader::nodes_hint() const {
  if (source_ || tree_ || state_ != State::start || size_ < kTreeStart.size() ||
      std::memcmp(data_, kTreeStart.data(), kTreeStart.size()) != 0)
    return 0;
  // Objects opened at depth 2 (inside the list), outside strings.
  size_t n = 0, depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < size_; ++i) {
    uint8_t b = data_[i];
    if (in_string) {
      if (b == '\\')
        ++i;
      else if (b == '"')
        in_string = false;
    } else if (b == '"') {
      in_string = true;
    } else if (b == '{' || b == '[') {
      if (++depth == 3 && b == '{') ++n;
    } else if (b == '}' || b == ']') {
      if (depth) --depth;
    }
  }
  return n;
}

bool TreeReader::avail(size_t k) {
  while (size_ - pos_ < k) {
    if (!source_) return false;
    // Keep only what is not read yet, then append the next piece.
    if (pos_) {
      buf_.erase(buf_.begin(), buf_.begin() + ptrdiff_t(pos_));
      pos_ = 0;
    }
    bool more = source_->more(buf_);
    if (buf_.capacity() < buf_.size() + kTreeParsePadding) buf_.reserve(buf_.size() + std::max<size_t>(buf_.size() / 2, 4096));
    data_ = buf_.data();
    size_ = buf_.size();
    room_ = buf_.capacity();
    if (!more && size_ - pos_ < k) {
      source_.reset();
      return false;
    }
  }
  return true;
}

bool TreeReader::skip_space() {
  for (;;) {
    while (pos_ < size_ && is_space(data_[pos_])) ++pos_;
    if (pos_ < size_) return true;
    if (!avail(1)) return false;
  }
}

void TreeReader::finish() {
  state_ = State::done;
  Bytes().swap(buf_);
  borrowed_ = {};
  source_.reset();
  data_ = nullptr;
  size_ = room_ = pos_ = 0;
  tree_.reset();
}

void TreeReader::whole() {
  // Read the rest of the source, then parse the text as one document.
  while (avail(size_ - pos_ + 1)) {
  }
  const bool padded = size_ + kTreeParsePadding <= room_;
  Tree t = decode_dom(data_, size_, padded);
  Bytes().swap(buf_);
  borrowed_ = {};
  data_ = nullptr;
  size_ = room_ = pos_ = 0;
  tree_ = std::move(t);
  tree_next_ = 0;
}

bool TreeReader::next(Node& n) {
  if (tree_) {
    if (tree_next_ == tree_->nodes.size()) {
      finish();
      return false;
    }
    n = std::move(tree_->nodes[tree_next_++]);
    ++count_;
    return true;
  }
  if (state_ == State::done) return false;
  try {
    if (state_ == State::start) {
      avail(kTreeStart.size());
      if (size_ - pos_ < kTreeStart.size() || std::memcmp(data_ + pos_, kTreeStart.data(), kTreeStart.size()) != 0) {
        whole();
        return next(n);
      }
      pos_ += kTreeStart.size();
      state_ = State::first;
    }
    if (!skip_space()) bad_tree("not valid JSON");
    uint8_t c = data_[pos_];
    if (state_ == State::after) {
      if (c == ',') {
        ++pos_;
        if (!skip_space()) bad_tree("not valid JSON");
        c = data_[pos_];
        if (c != '{') bad_tree("not valid JSON");
      } else if (c != ']') {
        bad_tree("not valid JSON");
      }
    }
    if (c == ']') {
      // The end of the list: then the end of the object, and nothing after it.
      ++pos_;
      if (!skip_space() || data_[pos_] != '}') bad_tree("not valid JSON");
      ++pos_;
      if (skip_space()) bad_tree("not valid JSON");
      finish();
      return false;
    }
    if (c != '{') bad_tree("a node is not an object");
    // The node's extent: to the brace that closes it, outside strings. simdjson
    // then checks everything inside (syntax, UTF-8, numbers).
    size_t k = 0, depth = 0;
    bool in_string = false;
    for (;;) {
      if (pos_ + k == size_ && !avail(k + 1)) bad_tree("not valid JSON");
      uint8_t b = data_[pos_ + k++];
      if (in_string) {
        if (b == '\\') {
          if (pos_ + k == size_ && !avail(k + 1)) bad_tree("not valid JSON");
          ++k;
        } else if (b == '"') {
          in_string = false;
        }
      } else if (b == '"') {
        in_string = true;
      } else if (b == '{' || b == '[') {
        ++depth;
      } else if ((b == '}' || b == ']') && --depth == 0) {
        break;
      }
    }
    std::optional<simdjson::dom::parser> own;
    simdjson::dom::parser& parser = json_parser(k, own);
    element doc;
    if (parser.parse(data_ + pos_, k, pos_ + k + kTreeParsePadding > room_).get(doc)) bad_tree("not valid JSON");
    Node node = decode_node(doc);
    if (count_ && node.name <= prev_) bad_tree("nodes not sorted or duplicated ('" + node.name + "')");
    prev_ = node.name;
    pos_ += k;
    state_ = State::after;
    n = std::move(node);
    ++count_;
    return true;
  } catch (...) {
    finish();
    throw;
  }
}

Tree decode_tree(const json& j) {
  std::string text;
  try {
    text = j.dump();
  } catch (const json::exception&) {
    bad_tree("not encodable as JSON");
  }
  return decode_tree_bytes(as_bytes(text));
}

namespace {

// The JSON text encode_tree(t).dump() gives, byte for byte (a tree's id is
// its text's hash: an unchanged directory must keep its id across versions),
// written straight into one string: for a directory of 200,000 entries the
// nlohmann::json document was ~1.8 KB an entry, 360 MB before the text.
// Keys in nlohmann's order (std::map: byte order), strings escaped as its
// dump() escapes them (ensure_ascii off), integers in decimal.
void put_string(std::string& o, std::string_view s) {
  o += '"';
  for (char ch : s) {
    auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"':
        o += "\\\"";
        break;
      case '\\':
        o += "\\\\";
        break;
      case '\b':
        o += "\\b";
        break;
      case '\f':
        o += "\\f";
        break;
      case '\n':
        o += "\\n";
        break;
      case '\r':
        o += "\\r";
        break;
      case '\t':
        o += "\\t";
        break;
      default:
        if (c < 0x20) {
          static const char hex[] = "0123456789abcdef";
          o += "\\u00";
          o += hex[c >> 4];
          o += hex[c & 15];
        } else {
          o += ch;
        }
    }
  }
  o += '"';
}

template <typename T>
void put_number(std::string& o, T v) {
  char b[24];
  auto r = std::to_chars(b, b + sizeof b, v);
  o.append(b, r.ptr);
}

struct NodeWriter {
  std::string& o;
  bool first = true;
  void key(const char* k) {
    if (!first) o += ',';
    first = false;
    o += '"';
    o += k;
    o += "\":";
  }
  void bytes_string(const char* k, const std::string& s) {  // as put_bytes_string
    if (valid_utf8(s)) {
      key(k);
      put_string(o, s);
    } else {
      key((std::string(k) + "_b64").c_str());
      put_string(o, to_base64(as_bytes(s)));
    }
  }
};

void put_node(std::string& o, const Node& n) {
  o += '{';
  NodeWriter w{o};
  if (n.atime_ns) {
    w.key("atime");
    put_number(o, n.atime_ns);
  }
  if (n.type == NodeType::file) {
    w.key("content");
    o += '[';
    for (size_t k = 0; k < n.content.size(); ++k) {
      if (k) o += ',';
      put_string(o, id_hex(n.content[k]));
    }
    o += ']';
  }
  w.key("ctime");
  put_number(o, n.ctime_ns);
  w.key("device");
  put_number(o, n.device);
  if (n.type == NodeType::file && n.sparse) {
    w.key("extents");
    o += '[';
    for (size_t k = 0; k < n.extents.size(); ++k) {
      if (k) o += ',';
      o += '[';
      put_number(o, n.extents[k].first);
      o += ',';
      put_number(o, n.extents[k].second);
      o += ']';
    }
    o += ']';
  }
  w.key("gid");
  put_number(o, n.gid);
  if (!n.group.empty()) {
    w.key("group");
    put_string(o, n.group);
  }
  w.key("inode");
  put_number(o, n.inode);
  w.key("links");
  put_number(o, n.links);
  w.key("mode");
  put_number(o, n.mode);
  w.key("mtime");
  put_number(o, n.mtime_ns);
  w.bytes_string("name", n.name);
  if (n.type == NodeType::chardev || n.type == NodeType::blockdev) {
    w.key("rdev");
    put_number(o, n.rdev);
  }
  if (n.type == NodeType::file) {
    w.key("size");
    put_number(o, n.size);
  }
  if (n.type == NodeType::dir && n.subtree) {
    w.key("subtree");
    put_string(o, id_hex(*n.subtree));
  }
  if (n.type == NodeType::symlink) w.bytes_string("target", n.target);
  w.key("type");
  put_string(o, node_type_name(n.type));
  w.key("uid");
  put_number(o, n.uid);
  if (!n.user.empty()) {
    w.key("user");
    put_string(o, n.user);
  }
  if (!n.xattrs.empty()) {
    w.key("xattrs");
    o += '[';
    for (size_t k = 0; k < n.xattrs.size(); ++k) {
      if (k) o += ',';
      o += '[';
      put_string(o, to_base64(as_bytes(n.xattrs[k].first)));
      o += ',';
      put_string(o, to_base64(n.xattrs[k].second));
      o += ']';
    }
    o += ']';
  }
  o += '}';
}

}  // namespace

std::string encode_tree_bytes(const Tree& t) {
  // A user or group name that is not UTF-8: nlohmann's dump refuses it, and
  // so does this, the same way.
  for (const auto& n : t.nodes)
    if (!valid_utf8(n.user) || !valid_utf8(n.group)) return encode_tree(t).dump();
  std::string o;
  o.reserve(16 + t.nodes.size() * 320);
  o += "{\"nodes\":[";
  for (size_t i = 0; i < t.nodes.size(); ++i) {
    if (i) o += ',';
    put_node(o, t.nodes[i]);
  }
  o += "]}";
  return o;
}

void TreeWriter::add(const Node& n) {
  if (!valid_utf8(n.user) || !valid_utf8(n.group)) {
    Tree one;
    one.nodes.push_back(n);
    (void)encode_tree(one).dump();  // throws, as encode_tree_bytes does
  }
  if (nodes_++)
    text_ += ',';
  else
    text_ = "{\"nodes\":[";
  put_node(text_, n);
}

std::string TreeWriter::finish() {
  if (!nodes_) text_ = "{\"nodes\":[";
  text_ += "]}";
  nodes_ = 0;
  return std::move(text_);
}

}  // namespace cairn::repo
