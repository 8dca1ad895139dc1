#include "common/repo/index.h"

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

IndexFile decode_index_file(const json& j, const std::string& name) {
  auto bad = [&](const std::string& why) { return Error(Errc::corrupt, "index file '" + name + "': " + why); };
  try {
    if (!j.is_object() || j.value("version", 0) != kFormatVersion) throw bad("unknown version");
    IndexFile f;
    for (const auto& s : j.at("supersedes")) f.supersedes.push_back(s.get<std::string>());
    for (const auto& p : j.at("packs")) {
      BlobId pid;
      if (!parse_id(p.at("id").get_ref<const std::string&>(), pid)) throw bad("malformed pack id");
      std::vector<PackBlob> blobs;
      for (const auto& b : p.at("blobs")) {
        if (!b.is_array() || b.size() != 6) throw bad("malformed blob entry");
        PackBlob pb;
        if (!parse_id(b[0].get_ref<const std::string&>(), pb.id)) throw bad("malformed blob id");
        if (!b[0].is_string() || !b[1].is_number_integer()) throw bad("malformed blob entry");
        int t = b[1].get<int>();
        if (t != 0 && t != 1) throw bad("unknown blob type");
        pb.type = BlobType(t);
        // get<uint32_t>() would wrap a negative or huge number silently.
        auto u32 = [&](const json& v) {
          if (!v.is_number_unsigned() || v.get<uint64_t>() > UINT32_MAX) throw bad("blob entry field out of range");
          return v.get<uint32_t>();
        };
        uint32_t flags = u32(b[2]);
        if (flags > 1) throw bad("unknown blob flags");
        pb.flags = uint8_t(flags);
        pb.offset = u32(b[3]);
        pb.length = u32(b[4]);
        pb.raw_length = u32(b[5]);
        blobs.push_back(pb);
      }
      f.packs.emplace_back(pid, std::move(blobs));
    }
    return f;
  } catch (const json::exception& e) {
    throw bad(std::string("malformed: ") + e.what());
  }
}

}  // namespace cairn::repo
