#include "common/repo/index.h"

#include <optional>

#include "common/repo/json_parser.h"
#include "common/repo/limits.h"
#include "common/util/error.h"

namespace cairn::repo {

using nlohmann::json;

size_t Index::find_slot(const BlobId& id) const {
  const size_t mask = table_.size() - 1;
  size_t h = BlobIdHash{}(id) & mask;
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
void Index::clear() {
  std::unique_lock lk(mu_);
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
    for (const auto& b : blobs)
      bl.push_back(json::array({id_hex(b.id), int(b.type), int(b.flags), b.offset, b.length, b.raw_length}));
    packs.push_back({{"id", id_hex(id)}, {"blobs", std::move(bl)}});
  }
  return {{"version", kFormatVersion}, {"supersedes", f.supersedes}, {"packs", std::move(packs)}};
}

IndexFile decode_index_file_bytes(std::span<const uint8_t> text, const std::string& name) {
  auto bad = [&](const std::string& why) { return Error(Errc::corrupt, "index file '" + name + "': " + why); };
  using simdjson::dom::array;
  using simdjson::dom::element;
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
  // get_uint64 refuses negative and fractional numbers; the range is checked here:
  // a silent wrap would point a blob elsewhere in its pack.
  auto u32 = [&](element v) {
    uint64_t x;
    if (v.get_uint64().get(x) || x > UINT32_MAX) throw bad("blob entry field out of range");
    return uint32_t(x);
  };
  for (element p : packs) {
    std::string_view id;
    array blobs_json;
    BlobId pid;
    if (p["id"].get_string().get(id) || !parse_id(id, pid)) throw bad("malformed pack id");
    if (p["blobs"].get_array().get(blobs_json)) throw bad("malformed blob list");
    std::vector<PackBlob> blobs;
    for (element b : blobs_json) {
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
      if (blobs.size() == kMaxPackBlobs) throw bad("pack '" + std::string(id) + "' lists more than " + std::to_string(kMaxPackBlobs) + " blobs");
      blobs.push_back(pb);
    }
    f.packs.emplace_back(pid, std::move(blobs));
  }
  return f;
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
