// Pack files (data/<xx>/<id>): their header, and the blobs it locates.
// First input byte odd: the rest is the whole pack file as stored. Even: bytes
// 1-2 (u16le) are the size N of the data section, the next N bytes its
// plaintext, the rest the header's plaintext (42-byte entries: type, flags,
// sealed length, raw length, id), sealed with the repository key and followed
// by the trailer, as someone with the password can write it. The header is
// read both ways cairnctl does (whole pack, and tail read from the backend).
// Every blob it names is opened with the first (length - AEAD overhead) of its
// bytes in the data section sealed as that blob (authentication passes, then decompression with the declared raw
// length: a tree blob may declare up to 1 GiB); `check --read-data` reads the
// pack too.
#include <algorithm>
#include <cstdint>
#include <string>

#include "common/crypto/crypto.h"
#include "common/repo/checker.h"
#include "common/repo/pack.h"
#include "common/util/encoding.h"
#include "common/util/error.h"
#include "fuzz_repo.h"

using namespace cairn;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  fuzz::FuzzRepo fr;
  try {
    auto r = fr.open();
    Bytes pack;
    bool sealed_mode = !(data[0] & 1);
    if (!sealed_mode) {
      pack.assign(data + 1, data + size);
    } else {
      if (size < 3) return 0;
      size_t data_len = std::min(size_t(data[1]) | size_t(data[2]) << 8, size - 3);
      pack.assign(data + 3, data + 3 + data_len);
      std::span<const uint8_t> header(data + 3 + data_len, size - 3 - data_len);
      size_t before = pack.size();
      r->aead().seal(as_bytes("cairn-pack-header-v1"), header, pack);  // docs/repository-format.md § Packs
      uint32_t hlen = uint32_t(pack.size() - before);
      for (int i = 0; i < 4; ++i) pack.push_back(uint8_t(hlen >> (8 * i)));
      pack.insert(pack.end(), repo::kPackMagic, repo::kPackMagic + 4);
    }
    std::string name = to_hex(repo::pack_id(pack));
    std::vector<repo::PackBlob> blobs;
    try {
      blobs = repo::parse_pack_header(pack, r->aead(), name);
    } catch (const Error&) {
    }
    fr.backend()->save({repo::FileType::pack, name}, pack);
    try {
      (void)repo::read_pack_header(*fr.backend(), name, r->aead(), pack.size());
    } catch (const Error&) {
    }
    for (size_t i = 0; i < std::min<size_t>(blobs.size(), 64); ++i) {
      const auto& b = blobs[i];
      if (uint64_t(b.offset) + b.length > pack.size()) continue;
      std::span<const uint8_t> stored = std::span<const uint8_t>(pack).subspan(b.offset, b.length);
      // Sealed mode: the blob's first length - overhead bytes are its payload, sealed to its declared length.
      Bytes sealed = sealed_mode ? r->aead().seal(repo::blob_aad(b.type, b.id), stored.first(b.length - crypto::kAeadOverhead))
                                 : Bytes(stored.begin(), stored.end());
      Bytes out;
      std::string why;
      (void)r->open_blob(b, sealed, out, why);
    }
    repo::CheckOptions copt;
    copt.read_data = true;
    copt.threads = 1;
    (void)repo::check(*r, copt);
  } catch (const Error&) {
  }
  return 0;
}
