#include "common/repo/tree.h"

#include "common/util/error.h"

namespace cairn::repo {

using nlohmann::json;

const char* node_type_name(NodeType t) {
  switch (t) {
    case NodeType::file: return "file";
    case NodeType::dir: return "dir";
    case NodeType::symlink: return "symlink";
    case NodeType::chardev: return "chardev";
    case NodeType::blockdev: return "blockdev";
    case NodeType::fifo: return "fifo";
    case NodeType::socket: return "socket";
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
  if (valid_utf8(s)) j[key] = s;
  else j[std::string(key) + "_b64"] = to_base64(as_bytes(s));
}
static std::string get_bytes_string(const json& j, const char* key) {
  if (auto it = j.find(key); it != j.end()) return it->get<std::string>();
  if (auto it = j.find(std::string(key) + "_b64"); it != j.end()) {
    Bytes b;
    if (!from_base64(it->get<std::string>(), b)) throw Error(Errc::corrupt, std::string("tree: malformed base64 in '") + key + "'");
    return std::string(b.begin(), b.end());
  }
  return {};
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

Tree decode_tree(const json& j) {
  Tree t;
  try {
    if (!j.is_object() || !j.at("nodes").is_array()) throw Error(Errc::corrupt, "tree: no node list");
    std::string prev;
    for (const auto& e : j.at("nodes")) {
      Node n;
      n.name = get_bytes_string(e, "name");
      if (n.name.empty() || n.name == "." || n.name == ".." || n.name.find('/') != std::string::npos || n.name.find('\0') != std::string::npos)
        throw Error(Errc::corrupt, "tree: invalid node name");
      if (!t.nodes.empty() && n.name <= prev) throw Error(Errc::corrupt, "tree: nodes not sorted or duplicated ('" + n.name + "')");
      prev = n.name;
      if (!parse_node_type(e.at("type").get<std::string>(), n.type)) throw Error(Errc::corrupt, "tree: unknown node type");
      n.mode = e.at("mode").get<uint32_t>() & 07777;
      n.uid = e.at("uid").get<uint32_t>();
      n.gid = e.at("gid").get<uint32_t>();
      n.user = e.value("user", "");
      n.group = e.value("group", "");
      n.mtime_ns = e.at("mtime").get<int64_t>();
      n.atime_ns = e.value("atime", int64_t(0));
      n.ctime_ns = e.value("ctime", int64_t(0));
      n.inode = e.value("inode", uint64_t(0));
      n.device = e.value("device", uint64_t(0));
      n.links = e.value("links", uint64_t(0));
      if (n.type == NodeType::file) {
        n.size = e.at("size").get<uint64_t>();
        const json& content = e.at("content");
        n.content.reserve(content.size());
        for (const auto& c : content) {
          BlobId id;
          // get_ref: no copy of each id string (a large file lists tens of thousands)
          if (!parse_id(c.get_ref<const std::string&>(), id)) throw Error(Errc::corrupt, "tree: malformed content id");
          n.content.push_back(id);
        }
        if (auto it = e.find("extents"); it != e.end()) {
          n.sparse = true;
          uint64_t end = 0;
          for (const auto& x : *it) {
            auto off = x.at(0).get<uint64_t>(), len = x.at(1).get<uint64_t>();
            if (off < end || off + len > n.size || off + len < off) throw Error(Errc::corrupt, "tree: sparse extents out of order");
            end = off + len;
            n.extents.emplace_back(off, len);
          }
        }
      }
      if (n.type == NodeType::dir) {
        if (auto it = e.find("subtree"); it != e.end()) {
          BlobId id;
          if (!parse_id(it->get<std::string>(), id)) throw Error(Errc::corrupt, "tree: malformed subtree id");
          n.subtree = id;
        }
      }
      if (n.type == NodeType::symlink) n.target = get_bytes_string(e, "target");
      if (n.type == NodeType::chardev || n.type == NodeType::blockdev) n.rdev = e.at("rdev").get<uint64_t>();
      if (auto it = e.find("xattrs"); it != e.end()) {
        for (const auto& x : *it) {
          Bytes k, v;
          if (!x.is_array() || x.size() != 2 || !from_base64(x[0].get<std::string>(), k) || !from_base64(x[1].get<std::string>(), v))
            throw Error(Errc::corrupt, "tree: malformed xattr");
          n.xattrs.emplace_back(std::string(k.begin(), k.end()), std::move(v));
        }
      }
      t.nodes.push_back(std::move(n));
    }
  } catch (const json::exception& ex) {
    throw Error(Errc::corrupt, std::string("tree: malformed: ") + ex.what());
  }
  return t;
}

Tree decode_tree_bytes(std::span<const uint8_t> data) {
  json j;
  try {
    j = json::parse(data.begin(), data.end());
  } catch (const json::exception&) {
    throw Error(Errc::corrupt, "tree: not valid JSON");
  }
  return decode_tree(j);
}

std::string encode_tree_bytes(const Tree& t) { return encode_tree(t).dump(); }

}  // namespace cairn::repo
