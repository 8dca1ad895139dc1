#include "common/repo/pack.h"

#include <cstring>

#include "common/repo/limits.h"
#include "common/util/error.h"

namespace cairn::repo {

namespace {
constexpr uint64_t kMaxPackHeader = kMaxPackBlobs * kPackHeaderEntrySize + crypto::kAeadOverhead;
constexpr std::string_view kHeaderAad = "cairn-pack-header-v1";

std::vector<PackBlob> decode_header(std::span<const uint8_t> sealed, const crypto::Aead& aead, uint64_t data_end,
                                    const std::string& pack_id) {
  Bytes plain;
  if (!aead.open(as_bytes(kHeaderAad), sealed, plain))
    throw Error(Errc::corrupt, "pack '" + pack_id + "': header fails authentication (damaged or not written by this repository)");
  if (plain.size() % kPackHeaderEntrySize) throw Error(Errc::corrupt, "pack '" + pack_id + "': header has a partial entry");
  if (plain.size() / kPackHeaderEntrySize > kMaxPackBlobs)
    throw Error(Errc::corrupt, "pack '" + pack_id + "': header lists more than " + std::to_string(kMaxPackBlobs) + " blobs");
  std::vector<PackBlob> out;
  uint64_t off = 0;
  for (size_t i = 0; i < plain.size(); i += kPackHeaderEntrySize) {
    const uint8_t* e = plain.data() + i;
    PackBlob b;
    if (e[0] > uint8_t(BlobType::tree)) throw Error(Errc::corrupt, "pack '" + pack_id + "': header names an unknown blob type");
    b.type = BlobType(e[0]);
    b.flags = e[1];
    b.length = get_u32le(e + 2);
    b.raw_length = get_u32le(e + 6);
    std::memcpy(b.id.data(), e + 10, 32);
    b.offset = uint32_t(off);
    off += b.length;
    if (b.raw_length > max_blob_size(b.type) || b.length > max_blob_size(b.type) + crypto::kAeadOverhead)
      throw Error(Errc::corrupt, "pack '" + pack_id + "': header entry " + std::to_string(i / kPackHeaderEntrySize) +
                                     " has a length outside the format's limits (docs/repository-format.md § 14)");
    if (b.length < crypto::kAeadOverhead || off > data_end)
      throw Error(Errc::corrupt,
                  "pack '" + pack_id + "': header entry " + std::to_string(i / kPackHeaderEntrySize) + " lies outside the pack");
    out.push_back(b);
  }
  if (off != data_end) throw Error(Errc::corrupt, "pack '" + pack_id + "': header does not cover the pack's data");
  return out;
}
}  // namespace

std::array<uint8_t, 33> blob_aad(BlobType t, const BlobId& id) {
  std::array<uint8_t, 33> a{};
  a[0] = uint8_t(t);
  std::memcpy(a.data() + 1, id.data(), 32);
  return a;
}

void PackBuilder::add(const BlobId& id, BlobType type, uint8_t flags, uint32_t raw_length, std::span<const uint8_t> sealed) {
  PackBlob b{id, type, flags, uint32_t(data_.size()), uint32_t(sealed.size()), raw_length};
  data_.insert(data_.end(), sealed.begin(), sealed.end());
  blobs_.push_back(b);
}

Bytes PackBuilder::finish(const crypto::Aead& aead, std::vector<PackBlob>& blobs) {
  Bytes header(blobs_.size() * kPackHeaderEntrySize);
  for (size_t i = 0; i < blobs_.size(); ++i) {
    uint8_t* e = header.data() + i * kPackHeaderEntrySize;
    e[0] = uint8_t(blobs_[i].type);
    e[1] = blobs_[i].flags;
    put_u32le(e + 2, blobs_[i].length);
    put_u32le(e + 6, blobs_[i].raw_length);
    std::memcpy(e + 10, blobs_[i].id.data(), 32);
  }
  size_t before = data_.size();
  aead.seal(as_bytes(kHeaderAad), header, data_);
  uint8_t trailer[kPackTrailerSize];
  put_u32le(trailer, uint32_t(data_.size() - before));
  std::memcpy(trailer + 4, kPackMagic, 4);
  data_.insert(data_.end(), trailer, trailer + kPackTrailerSize);
  blobs = std::move(blobs_);
  blobs_.clear();
  Bytes out = std::move(data_);
  data_.clear();
  return out;
}

BlobId pack_id(std::span<const uint8_t> pack) {
  if (pack.size() >= kPackTrailerSize) {
    uint64_t hlen = get_u32le(pack.data() + pack.size() - kPackTrailerSize);
    if (hlen + kPackTrailerSize <= pack.size()) return crypto::sha256(pack.subspan(pack.size() - kPackTrailerSize - hlen));
  }
  return crypto::sha256(pack);
}

std::vector<PackBlob> parse_pack_header(std::span<const uint8_t> pack, const crypto::Aead& aead, const std::string& pack_id) {
  if (pack.size() < kPackTrailerSize + crypto::kAeadOverhead)
    throw Error(Errc::corrupt, "pack '" + pack_id + "' is too short to be a pack (truncated?)");
  const uint8_t* t = pack.data() + pack.size() - kPackTrailerSize;
  if (std::memcmp(t + 4, kPackMagic, 4) != 0)
    throw Error(Errc::corrupt, "pack '" + pack_id + "' has no pack trailer (truncated or damaged)");
  uint64_t hlen = get_u32le(t);
  if (hlen + kPackTrailerSize > pack.size()) throw Error(Errc::corrupt, "pack '" + pack_id + "': header length exceeds the pack");
  if (hlen > kMaxPackHeader)
    throw Error(Errc::corrupt, "pack '" + pack_id + "': header length " + std::to_string(hlen) + " is above the limit of " +
                                   std::to_string(kMaxPackHeader));
  uint64_t data_end = pack.size() - kPackTrailerSize - hlen;
  return decode_header(pack.subspan(data_end, hlen), aead, data_end, pack_id);
}

std::vector<PackBlob> read_pack_header(Backend& be, const std::string& pack_id, const crypto::Aead& aead, uint64_t pack_size) {
  if (pack_size < kPackTrailerSize + crypto::kAeadOverhead)
    throw Error(Errc::corrupt, "pack '" + pack_id + "' is too short to be a pack (truncated?)");
  // Most headers fit in the last 64 KiB: one read in the common case.
  uint64_t guess = std::min<uint64_t>(pack_size, 64 * 1024);
  Bytes tail = be.load({FileType::pack, pack_id}, pack_size - guess, guess);
  const uint8_t* t = tail.data() + tail.size() - kPackTrailerSize;
  if (std::memcmp(t + 4, kPackMagic, 4) != 0)
    throw Error(Errc::corrupt, "pack '" + pack_id + "' has no pack trailer (truncated or damaged)");
  uint64_t hlen = get_u32le(t);
  if (hlen + kPackTrailerSize > pack_size) throw Error(Errc::corrupt, "pack '" + pack_id + "': header length exceeds the pack");
  if (hlen > kMaxPackHeader)
    throw Error(Errc::corrupt, "pack '" + pack_id + "': header length " + std::to_string(hlen) + " is above the limit of " +
                                   std::to_string(kMaxPackHeader));
  uint64_t data_end = pack_size - kPackTrailerSize - hlen;
  if (hlen + kPackTrailerSize > guess) {
    tail = be.load({FileType::pack, pack_id}, data_end, hlen);
    return decode_header(tail, aead, data_end, pack_id);
  }
  return decode_header(std::span<const uint8_t>(tail).subspan(tail.size() - kPackTrailerSize - hlen, hlen), aead, data_end, pack_id);
}

}  // namespace cairn::repo
