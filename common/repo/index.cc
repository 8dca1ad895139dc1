#include "common/repo/index.h"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <optional>

#include "common/repo/json_parser.h"
#include "common/repo/limits.h"
#include "common/util/error.h"

namespace cairn::repo {

using nlohmann::json;

size_t Index::find_slot(const BlobId& id) const {
  const size_t mask = table_.size() - 1;
  size_t h = BlobIdHash{}(id)&mask;
  for (;;) {
    uint32_t v = table_[h];
    if (v == 0 || rec(v - 1).id == id) return h;
    h = (h + 1) & mask;
  }
}

void Index::grow_table() {
  std::vector<uint32_t> old = std::move(table_);
  table_.assign(old.empty() ? 1024 : old.size() * 2, 0);
  const size_t mask = table_.size() - 1;
  for (uint32_t v : old) {
    if (v == 0) continue;
    size_t h = BlobIdHash{}(rec(v - 1).id) & mask;
    while (table_[h] != 0) h = (h + 1) & mask;
    table_[h] = v;
  }
}

void Index::add_pack(const BlobId& pack, const std::vector<PackBlob>& blobs) {
  std::unique_lock lk(mu_);
  uint32_t no;
  auto it = pack_no_.find(pack);
  if (it == pack_no_.end()) {
    no = uint32_t(packs_.size());
    packs_.push_back(pack);
    pack_no_.emplace(pack, no);
  } else {
    no = it->second;
  }
  for (const auto& b : blobs) {
    // At most 70% full: lookups of absent ids (every new chunk) stay a few probes.
    if ((size_t(count_) + 1) * 10 > table_.size() * 7) grow_table();
    size_t slot = find_slot(b.id);
    if (table_[slot] != 0) continue;  // the first location of a blob wins
    if (count_ == UINT32_MAX - 1) throw Error(Errc::unsupported, "too many blobs for the in-memory index");
    if ((count_ >> kBlockShift) == blocks_.size()) blocks_.push_back(std::make_unique_for_overwrite<Record[]>(kBlockSize));
    blocks_[count_ >> kBlockShift][count_ & (kBlockSize - 1)] = Record{b.id, no, b.offset, b.length, b.raw_length, b.type, b.flags};
    table_[slot] = ++count_;
    if (b.type == BlobType::tree) {
      largest_tree_raw_ = std::max(largest_tree_raw_, b.raw_length);
      largest_tree_sealed_ = std::max(largest_tree_sealed_, b.length);
    }
  }
}

std::optional<BlobLocation> Index::lookup(const BlobId& id) const {
  std::shared_lock lk(mu_);
  if (count_ == 0) return std::nullopt;
  uint32_t v = table_[find_slot(id)];
  if (v == 0) return std::nullopt;
  const Record& e = rec(v - 1);
  return BlobLocation{packs_[e.pack], e.type, e.flags, e.offset, e.length, e.raw_length};
}

bool Index::contains(const BlobId& id) const {
  std::shared_lock lk(mu_);
  return count_ != 0 && table_[find_slot(id)] != 0;
}
size_t Index::blob_count() const {
  std::shared_lock lk(mu_);
  return count_;
}
size_t Index::pack_count() const {
  std::shared_lock lk(mu_);
  return packs_.size();
}
bool Index::has_pack(const BlobId& pack) const {
  std::shared_lock lk(mu_);
  return pack_no_.count(pack) != 0;
}
std::vector<BlobId> Index::packs() const {
  std::shared_lock lk(mu_);
  return packs_;
}
size_t Index::memory_bytes() const {
  std::shared_lock lk(mu_);
  return blocks_.size() * kBlockSize * sizeof(Record) + table_.capacity() * sizeof(uint32_t);
}
void Index::note_file(size_t blobs) {
  std::unique_lock lk(mu_);
  largest_file_ = std::max(largest_file_, blobs);
}
size_t Index::largest_file_blobs() const {
  std::shared_lock lk(mu_);
  return largest_file_;
}
uint32_t Index::largest_tree_raw() const {
  std::shared_lock lk(mu_);
  return largest_tree_raw_;
}
uint32_t Index::largest_tree_sealed() const {
  std::shared_lock lk(mu_);
  return largest_tree_sealed_;
}
void Index::clear() {
  std::unique_lock lk(mu_);
  largest_file_ = 0;
  largest_tree_raw_ = largest_tree_sealed_ = 0;
  packs_.clear();
  pack_no_.clear();
  blocks_.clear();
  table_.clear();
  count_ = 0;
}

json encode_index_file(const IndexFile& f) {
  json packs = json::array();
  for (const auto& [id, blobs] : f.packs) {
    json bl = json::array();
    for (const auto& b : blobs) bl.push_back(json::array({id_hex(b.id), int(b.type), int(b.flags), b.offset, b.length, b.raw_length}));
    packs.push_back({{"id", id_hex(id)}, {"blobs", std::move(bl)}});
  }
  return {{"version", kFormatVersion}, {"supersedes", f.supersedes}, {"packs", std::move(packs)}};
}

namespace {

using simdjson::dom::array;
using simdjson::dom::element;

struct IndexDecoder {
  const std::string& name;
  Error bad(const std::string& why) const { return Error(Errc::corrupt, "index file '" + name + "': " + why); }

  // get_uint64 refuses negative and fractional numbers; the range is checked here:
  // a silent wrap would point a blob elsewhere in its pack.
  uint32_t u32(element v) const {
    uint64_t x;
    if (v.get_uint64().get(x) || x > UINT32_MAX) throw bad("blob entry field out of range");
    return uint32_t(x);
  }

  void pack(element p, IndexFile& f) const {
    std::string_view id;
    array blobs_json;
    BlobId pid;
    if (p["id"].get_string().get(id) || !parse_id(id, pid)) throw bad("malformed pack id");
    if (p["blobs"].get_array().get(blobs_json)) throw bad("malformed blob list");
    std::vector<PackBlob> blobs;
    blobs.reserve(std::min<size_t>(blobs_json.size(), kMaxPackBlobs));
    for (element b : blobs_json) entry(b, id, blobs);
    f.packs.emplace_back(pid, std::move(blobs));
  }

  void entry(element b, std::string_view id, std::vector<PackBlob>& blobs) const {
    {
      array e;
      if (b.get_array().get(e) || e.size() != 6) throw bad("malformed blob entry");
      std::array<element, 6> v;
      size_t k = 0;
      for (element x : e) v[k++] = x;
      PackBlob pb;
      std::string_view bid;
      if (v[0].get_string().get(bid) || !parse_id(bid, pb.id)) throw bad("malformed blob id");
      int64_t t;
      if (v[1].get_int64().get(t)) throw bad("malformed blob entry");
      if (t != 0 && t != 1) throw bad("unknown blob type");
      pb.type = BlobType(t);
      uint32_t flags = u32(v[2]);
      if (flags > 3 || flags == kBlobDictionary) throw bad("unknown blob flags");
      pb.flags = uint8_t(flags);
      pb.offset = u32(v[3]);
      pb.length = u32(v[4]);
      pb.raw_length = u32(v[5]);
      // Lengths size the reads and buffers of every later load: bounded here, once.
      if (pb.raw_length > max_blob_size(pb.type) || pb.length > max_blob_size(pb.type) + crypto::kAeadOverhead ||
          pb.length < crypto::kAeadOverhead)
        throw bad("blob '" + std::string(bid) + "' has a length outside the format's limits (docs/repository-format.md § 14)");
      if (blobs.size() == kMaxPackBlobs)
        throw bad("pack '" + std::string(id) + "' lists more than " + std::to_string(kMaxPackBlobs) + " blobs");
      blobs.push_back(pb);
    }
  }

  IndexFile whole(std::span<const uint8_t> text) const {
    std::optional<simdjson::dom::parser> own;
    simdjson::dom::parser& parser = json_parser(text.size(), own);
    element doc;
    // Empty: refused here, simdjson would be handed a null pointer (undefined behaviour).
    if (text.empty() || parser.parse(text.data(), text.size()).get(doc)) throw bad("malformed: not valid JSON");
    int64_t version = 0;
    if (!doc.is_object() || doc["version"].get_int64().get(version) || version != kFormatVersion) throw bad("unknown version");
    IndexFile f;
    array supersedes, packs;
    if (doc["supersedes"].get_array().get(supersedes) || doc["packs"].get_array().get(packs)) throw bad("malformed: no pack list");
    for (element s : supersedes) {
      std::string_view v;
      if (s.get_string().get(v)) throw bad("malformed: superseded names must be strings");
      f.supersedes.emplace_back(v);
    }
    for (element p : packs) pack(p, f);
    return f;
  }

  // The extent of the JSON value that opens at text[at] ('{' or '['), to the
  // bracket that closes it, outside strings; 0 when it does not close.
  static size_t extent(std::span<const uint8_t> text, size_t at) {
    size_t depth = 0;
    bool in_string = false;
    for (size_t i = at; i < text.size(); ++i) {
      uint8_t b = text[i];
      if (in_string) {
        if (b == '\\')
          ++i;
        else if (b == '"')
          in_string = false;
      } else if (b == '"') {
        in_string = true;
      } else if (b == '{' || b == '[') {
        ++depth;
      } else if ((b == '}' || b == ']') && --depth == 0) {
        return i + 1 - at;
      }
    }
    return 0;
  }

  // A pack as encode_index_file writes it, {"blobs":[[...],...],"id":"<hex>"},
  // parsed entry by entry (a pack of small files lists up to a million); false
  // for another layout. at: where the pack lies in the file, for parse.
  template <typename Parse>
  bool entries(std::span<const uint8_t> p, size_t at, Parse& parse, IndexFile& f) const {
    static constexpr std::string_view head = "{\"blobs\":[", mid = "],\"id\":\"", end = "\"}";
    const size_t id_len = 2 * sizeof(BlobId);
    if (p.size() < head.size() + mid.size() + id_len + end.size() || std::memcmp(p.data(), head.data(), head.size()) != 0 ||
        std::memcmp(p.data() + p.size() - end.size(), end.data(), end.size()) != 0 ||
        std::memcmp(p.data() + p.size() - end.size() - id_len - mid.size(), mid.data(), mid.size()) != 0)
      return false;
    std::string_view id(reinterpret_cast<const char*>(p.data() + p.size() - end.size() - id_len), id_len);
    BlobId pid;
    if (!parse_id(id, pid)) throw bad("malformed pack id");
    const size_t stop = p.size() - end.size() - id_len - mid.size();  // where the entries' ']' is
    std::vector<PackBlob> blobs;
    size_t pos = head.size();
    while (pos < stop) {
      size_t len = p[pos] == '[' ? extent(p.first(stop), pos) : 0;
      element doc;
      if (!len || !parse(at + pos, len, doc)) return false;
      entry(doc, id, blobs);
      pos += len;
      if (pos < stop && p[pos++] != ',') return false;
      if (pos == stop && p[pos - 1] == ',') return false;
    }
    f.packs.emplace_back(pid, std::move(blobs));
    return true;
  }

  // encode_index_file's layout, {"packs":[{...},...],"supersedes":[...],"version":1}:
  // each pack is parsed alone, so the file costs its text and its entries, not
  // a document of every entry besides (~170 bytes a blob). nullopt for any
  // other layout (then parsed whole, which also names what is malformed).
  std::optional<IndexFile> by_pack(std::span<const uint8_t> text, size_t room) const {
    static constexpr std::string_view head = "{\"packs\":[", middle = "\"supersedes\":";
    const std::string tail = ",\"version\":" + std::to_string(kFormatVersion) + "}";
    auto at = [&](size_t pos, std::string_view s) {
      return pos + s.size() <= text.size() && std::memcmp(text.data() + pos, s.data(), s.size()) == 0;
    };
    if (!at(0, head) || text.size() < head.size() + tail.size() || !at(text.size() - tail.size(), tail)) return std::nullopt;
    IndexFile f;
    std::optional<simdjson::dom::parser> own;
    auto parse = [&](size_t pos, size_t len, element& doc) {
      simdjson::dom::parser& parser = json_parser(len, own);
      return !parser.parse(text.data() + pos, len, pos + len + simdjson::SIMDJSON_PADDING > room).get(doc);
    };
    size_t pos = head.size();
    if (pos < text.size() && text[pos] == ']') {
      ++pos;
    } else {
      for (;;) {
        if (pos >= text.size() || text[pos] != '{') return std::nullopt;
        size_t len = extent(text, pos);
        if (!len) return std::nullopt;
        if (!entries(text.subspan(pos, len), pos, parse, f)) {
          element doc;
          if (!parse(pos, len, doc) || !doc.is_object()) return std::nullopt;
          pack(doc, f);
        }
        pos += len;
        if (pos < text.size() && text[pos] == ',') {
          ++pos;
          continue;
        }
        if (pos < text.size() && text[pos] == ']') {
          ++pos;
          break;
        }
        return std::nullopt;
      }
    }
    if (!at(pos, ",") || !at(pos + 1, middle)) return std::nullopt;
    pos += 1 + middle.size();
    size_t len = pos < text.size() && text[pos] == '[' ? extent(text, pos) : 0;
    element doc;
    array names;
    if (!len || pos + len != text.size() - tail.size() || !parse(pos, len, doc) || doc.get_array().get(names)) return std::nullopt;
    for (element s : names) {
      std::string_view v;
      if (s.get_string().get(v)) throw bad("malformed: superseded names must be strings");
      f.supersedes.emplace_back(v);
    }
    return f;
  }
};

}  // namespace

std::string encode_index_file_bytes(const IndexFile& f) {
  std::string o;
  size_t blobs = 0;
  for (const auto& p : f.packs) blobs += p.second.size();
  o.reserve(64 + f.packs.size() * 96 + blobs * 104 + f.supersedes.size() * 68);
  o += "{\"packs\":[";
  char num[16];
  auto put = [&](uint64_t v) {
    auto r = std::to_chars(num, num + sizeof num, v);
    o.append(num, r.ptr);
  };
  for (size_t i = 0; i < f.packs.size(); ++i) {
    const auto& [id, list] = f.packs[i];
    o += i ? ",{\"blobs\":[" : "{\"blobs\":[";
    for (size_t k = 0; k < list.size(); ++k) {
      const PackBlob& b = list[k];
      o += k ? ",[\"" : "[\"";
      o += id_hex(b.id);
      o += "\",";
      put(uint64_t(b.type));
      o += ',';
      put(b.flags);
      o += ',';
      put(b.offset);
      o += ',';
      put(b.length);
      o += ',';
      put(b.raw_length);
      o += ']';
    }
    o += "],\"id\":\"";
    o += id_hex(id);
    o += "\"}";
  }
  o += "],\"supersedes\":";
  o += json(f.supersedes).dump();  // names: escaped as nlohmann escapes them
  o += ",\"version\":";
  put(uint64_t(kFormatVersion));
  o += '}';
  return o;
}

IndexFile decode_index_file_bytes(std::span<const uint8_t> text, const std::string& name) {
  IndexDecoder d{name};
  if (auto f = d.by_pack(text, text.size())) return std::move(*f);
  return d.whole(text);
}

IndexFile decode_index_file_bytes(Bytes&& text, const std::string& name) {
  IndexDecoder d{name};
  std::span<const uint8_t> view(text);
  if (auto f = d.by_pack(view, text.capacity())) {
    Bytes().swap(text);
    return std::move(*f);
  }
  return d.whole(view);
}

IndexFile decode_index_file(const json& j, const std::string& name) {
  std::string text;
  try {
    text = j.dump();
  } catch (const json::exception& e) {
    throw Error(Errc::corrupt, "index file '" + name + "': malformed: " + e.what());
  }
  return decode_index_file_bytes(as_bytes(text), name);
}

}  // namespace cairn::repo
