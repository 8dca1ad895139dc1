#include "common/repo/compress.h"

#define ZDICT_STATIC_LINKING_ONLY
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_c_forceAttachDict (a parameter: the shared library takes it)
#include <zdict.h>
#include <zstd.h>

#include <algorithm>
#include <memory>
#include <new>
#include <stdexcept>

#include "common/crypto/crypto.h"

namespace cairn::repo {

namespace {
struct CCtx {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ~CCtx() { ZSTD_freeCCtx(c); }
};
struct DCtx {
  ZSTD_DCtx* d = ZSTD_createDCtx();
  ~DCtx() { ZSTD_freeDCtx(d); }
};
thread_local CCtx t_cctx;
// For dictionary compression: the dictionary's tables are attached, never
// copied. zstd copies them for inputs above 16 KiB at level 3 (a 512 KiB table
// per 32 KiB chunk: +13 % CPU on an etcd backup) and attaches below.
struct DictCCtx {
  ZSTD_CCtx* c = ZSTD_createCCtx();
  DictCCtx() { ZSTD_CCtx_setParameter(c, ZSTD_c_forceAttachDict, ZSTD_dictForceAttach); }
  ~DictCCtx() { ZSTD_freeCCtx(c); }
};
thread_local DictCCtx t_dict_cctx;
thread_local DCtx t_dctx;

// A cheap look at a sample: high-entropy data (already compressed or encrypted)
// is not worth a full compression pass.
bool sample_compresses(std::span<const uint8_t> in, int level) {
  constexpr size_t kSample = 16 * 1024;
  if (in.size() < 4 * kSample) return true;
  size_t off = in.size() / 2 - kSample / 2;
  uint8_t buf[ZSTD_COMPRESSBOUND(kSample)];
  size_t n = ZSTD_compressCCtx(t_cctx.c, buf, sizeof buf, in.data() + off, kSample, level);
  return !ZSTD_isError(n) && n < kSample - kSample / 32;
}

// Scratch space per thread, never zero-filled: chunks are up to 8 MiB and a
// zeroed vector per chunk would cost a memset of every byte backed up.
struct Scratch {
  std::unique_ptr<uint8_t[]> p;
  size_t cap = 0;
  uint8_t* get(size_t n) {
    if (cap < n) {
      p = std::make_unique_for_overwrite<uint8_t[]>(n);
      cap = n;
    }
    return p.get();
  }
};
thread_local Scratch t_scratch;

// The most a single zstd frame can produce, from its block headers (RFC 8878 § 3.1.1):
// a raw or RLE block produces its stated size, a compressed block at most 128 KiB.
// Unlike the frame's declared content size, this is what the bytes really hold.
// Returns false when the frame is malformed or not alone in `in`.
bool frame_bound(std::span<const uint8_t> in, uint64_t& bound) {
  constexpr uint64_t kBlockMax = 128u << 10;
  if (in.size() < 6 || get_u32le(in.data()) != 0xFD2FB528u) return false;
  uint8_t fhd = in[4];
  if (fhd & 0x08) return false;  // reserved bit
  bool single = fhd & 0x20, checksum = fhd & 0x04;
  static constexpr size_t kDid[4] = {0, 1, 2, 4};
  static constexpr size_t kFcs[4] = {0, 2, 4, 8};
  size_t fcs = kFcs[fhd >> 6];
  if (fcs == 0 && single) fcs = 1;
  size_t pos = 5 + (single ? 0 : 1) + kDid[fhd & 3] + fcs;
  bound = 0;
  for (;;) {
    if (pos + 3 > in.size()) return false;
    uint32_t h = uint32_t(in[pos]) | uint32_t(in[pos + 1]) << 8 | uint32_t(in[pos + 2]) << 16;
    pos += 3;
    uint32_t type = (h >> 1) & 3, size = h >> 3;
    if (type == 3 || size > kBlockMax) return false;
    uint64_t stored = type == 1 ? 1 : size;
    if (stored > in.size() - pos) return false;
    pos += stored;
    bound += type == 2 ? kBlockMax : size;
    if (h & 1) break;
  }
  if (checksum) pos += 4;
  return pos == in.size();
}
}  // namespace

bool compress_if_useful(std::span<const uint8_t> in, std::span<const uint8_t>& out, int level) {
  if (in.size() < 64 || !sample_compresses(in, level)) return false;
  size_t bound = ZSTD_compressBound(in.size());
  uint8_t* buf = t_scratch.get(bound);
  size_t n = ZSTD_compressCCtx(t_cctx.c, buf, bound, in.data(), in.size(), level);
  if (ZSTD_isError(n) || n >= in.size() - in.size() / 32) return false;
  out = std::span<const uint8_t>(buf, n);
  return true;
}

namespace {
// The checks of decompress(), then the frame decoded with ddict when given.
std::string decompress_with(std::span<const uint8_t> in, size_t expected_size, Bytes& out, const ZSTD_DDict* ddict) {
  unsigned long long fs = ZSTD_getFrameContentSize(in.data(), in.size());
  if (fs == ZSTD_CONTENTSIZE_ERROR) return "does not decompress (not a zstd frame)";
  if (fs != ZSTD_CONTENTSIZE_UNKNOWN && fs != expected_size)
    return "does not decompress (its frame declares " + std::to_string(fs) + " bytes, its entry " + std::to_string(expected_size) + ")";
  // Nothing is allocated for more than the frame's blocks can produce, whatever it declares.
  uint64_t bound = 0;
  if (!frame_bound(in, bound)) return "does not decompress (malformed zstd frame)";
  if (bound < expected_size)
    return "does not decompress: it declares " + std::to_string(expected_size) + " bytes but its " + std::to_string(in.size()) +
           " compressed bytes can hold at most " + std::to_string(bound);
  // Room past the end, reserved only now that the frame can hold what it
  // declares: a tree is parsed where it is decompressed (kTreeParsePadding,
  // decode_tree_bytes(Bytes&&)) instead of copied into a padded buffer.
  out.reserve(expected_size + kDecompressedSlack);
  out.resize(expected_size);
  size_t n = ddict ? ZSTD_decompress_usingDDict(t_dctx.d, out.data(), out.size(), in.data(), in.size(), ddict)
                   : ZSTD_decompressDCtx(t_dctx.d, out.data(), out.size(), in.data(), in.size());
  if (ZSTD_isError(n) || n != expected_size) return "does not decompress (damaged zstd frame)";
  return {};
}
}  // namespace

std::string decompress(std::span<const uint8_t> in, size_t expected_size, Bytes& out) {
  if (in.size() >= 6 && ZSTD_getDictID_fromFrame(in.data(), in.size()) != 0)
    return "does not decompress (its frame names a compression dictionary, but its entry does not say it uses one)";
  return decompress_with(in, expected_size, out, nullptr);
}

DecompressStream::DecompressStream(Bytes frame, size_t expected_size) : frame_(std::move(frame)), in_(frame_), expected_(expected_size) {
  check();
}

DecompressStream::DecompressStream(std::span<const uint8_t> frame, size_t expected_size) : in_(frame), expected_(expected_size) { check(); }

void DecompressStream::check() {
  std::span<const uint8_t> in = in_;
  unsigned long long fs = in.size() >= 6 ? ZSTD_getFrameContentSize(in.data(), in.size()) : ZSTD_CONTENTSIZE_ERROR;
  uint64_t bound = 0;
  if (fs == ZSTD_CONTENTSIZE_ERROR)
    why_ = "does not decompress (not a zstd frame)";
  else if (ZSTD_getDictID_fromFrame(in.data(), in.size()) != 0)
    why_ = "does not decompress (its frame names a compression dictionary, but its entry does not say it uses one)";
  else if (fs != ZSTD_CONTENTSIZE_UNKNOWN && fs != expected_)
    why_ = "does not decompress (its frame declares " + std::to_string(fs) + " bytes, its entry " + std::to_string(expected_) + ")";
  else if (!frame_bound(in, bound))
    why_ = "does not decompress (malformed zstd frame)";
  else if (bound < expected_)
    why_ = "does not decompress: it declares " + std::to_string(expected_) + " bytes but its " + std::to_string(in.size()) +
           " compressed bytes can hold at most " + std::to_string(bound);
  if (!why_.empty()) return;
  d_ = ZSTD_createDCtx();
  // Any window the one-shot decoder takes (it has no limit): the window is
  // never larger than the content, which the entry bounds.
  if (!d_ || ZSTD_isError(ZSTD_DCtx_setParameter(d_, ZSTD_d_windowLogMax, 31))) why_ = "does not decompress (out of memory)";
}

DecompressStream::~DecompressStream() { ZSTD_freeDCtx(d_); }

bool DecompressStream::more(Bytes& out) {
  if (done_ || !why_.empty()) return false;
  const size_t base = out.size();
  out.resize(base + kPiece);
  ZSTD_outBuffer ob{out.data() + base, kPiece, 0};
  ZSTD_inBuffer ib{in_.data(), in_.size(), in_pos_};
  size_t r = 0;
  while (ob.pos == 0) {
    r = ZSTD_decompressStream(d_, &ob, &ib);
    if (ZSTD_isError(r)) break;
    if (r == 0 || ib.pos == ib.size) break;  // the frame's end, or no input left
  }
  in_pos_ = ib.pos;
  out.resize(base + ob.pos);
  produced_ += ob.pos;
  if (ZSTD_isError(r) || produced_ > expected_ || (r != 0 && ob.pos == 0)) {
    why_ = "does not decompress (damaged zstd frame)";
    return false;
  }
  if (r == 0) {
    done_ = true;
    ZSTD_freeDCtx(d_);
    d_ = nullptr;
    if (in_pos_ != in_.size() || produced_ != expected_) {
      why_ = "does not decompress (damaged zstd frame)";
      return false;
    }
  }
  return ob.pos > 0;
}

CompressStream::CompressStream(int level) : c_(ZSTD_createCCtx()) {
  if (!c_ || ZSTD_isError(ZSTD_CCtx_setParameter(c_, ZSTD_c_compressionLevel, level))) throw std::bad_alloc();
}

CompressStream::~CompressStream() { ZSTD_freeCCtx(c_); }

void CompressStream::run(std::span<const uint8_t> text, bool end) {
  ZSTD_inBuffer ib{text.data(), text.size(), 0};
  for (;;) {
    // Room for what this call may produce; the frame grows by what is compressed.
    size_t room = ZSTD_CStreamOutSize();
    if (out_.capacity() < out_.size() + room) out_.reserve(std::max(out_.size() + room, out_.capacity() + out_.capacity() / 4));
    size_t base = out_.size();
    out_.resize(base + room);
    ZSTD_outBuffer ob{out_.data() + base, room, 0};
    size_t left = ZSTD_compressStream2(c_, &ob, &ib, end ? ZSTD_e_end : ZSTD_e_continue);
    out_.resize(base + ob.pos);
    if (ZSTD_isError(left)) throw std::runtime_error(std::string("zstd: ") + ZSTD_getErrorName(left));
    if (end ? left == 0 : ib.pos == ib.size) break;
  }
}

void CompressStream::add(std::span<const uint8_t> text) {
  in_ += text.size();
  run(text, false);
}

Bytes CompressStream::finish() {
  run({}, true);
  return std::move(out_);
}

uint32_t frame_dictionary_id(std::span<const uint8_t> frame) {
  return frame.size() >= 6 ? ZSTD_getDictID_fromFrame(frame.data(), frame.size()) : 0;
}

struct CompressionDictionary::Impl {
  ZSTD_CDict* c = nullptr;
  ZSTD_DDict* d = nullptr;
  ~Impl() {
    ZSTD_freeCDict(c);
    ZSTD_freeDDict(d);
  }
};

CompressionDictionary::~CompressionDictionary() = default;

std::shared_ptr<const CompressionDictionary> CompressionDictionary::make(Bytes content, int level, std::string& why) {
  uint32_t id = ZSTD_getDictID_fromDict(content.data(), content.size());
  if (id == 0) {
    why = "is not a zstd dictionary (no dictionary id)";
    return nullptr;
  }
  std::shared_ptr<CompressionDictionary> d(new CompressionDictionary());
  d->impl_ = std::make_unique<Impl>();
  d->impl_->c = ZSTD_createCDict(content.data(), content.size(), level);
  d->impl_->d = ZSTD_createDDict(content.data(), content.size());
  if (!d->impl_->c || !d->impl_->d) {
    why = "is not a usable zstd dictionary";
    return nullptr;
  }
  d->id_ = id;
  d->content_ = std::move(content);
  return d;
}

bool CompressionDictionary::compress_if_useful(std::span<const uint8_t> in, std::span<const uint8_t>& out) const {
  if (in.size() < 64) return false;
  size_t bound = ZSTD_compressBound(in.size());
  uint8_t* buf = t_scratch.get(bound);
  ZSTD_CCtx* c = t_dict_cctx.c;
  ZSTD_CCtx_reset(c, ZSTD_reset_session_only);
  size_t n = ZSTD_CCtx_refCDict(c, impl_->c);
  if (!ZSTD_isError(n)) n = ZSTD_compress2(c, buf, bound, in.data(), in.size());
  if (ZSTD_isError(n) || n >= in.size() - in.size() / 32) return false;
  out = std::span<const uint8_t>(buf, n);
  return true;
}

std::string CompressionDictionary::decompress(std::span<const uint8_t> in, size_t expected_size, Bytes& out) const {
  uint32_t named = frame_dictionary_id(in);
  if (named != id_)
    return "does not decompress (its frame names compression dictionary " + std::to_string(named) + ", not " + std::to_string(id_) + ")";
  return decompress_with(in, expected_size, out, impl_->d);
}

Bytes train_dictionary(std::span<const uint8_t> samples, const std::vector<size_t>& sizes, size_t max_size,
                       const std::vector<uint32_t>& taken) {
  if (sizes.size() < 16) return {};
  // Ids must be unique in a repository (a frame names its dictionary by id):
  // one drawn at random, above the range RFC 8878 reserves, not taken yet.
  uint32_t id = 0;
  while (id < 32768 || std::find(taken.begin(), taken.end(), id) != taken.end()) {
    auto r = crypto::random_array<4>();
    id = uint32_t(r[0]) | uint32_t(r[1]) << 8 | uint32_t(r[2]) << 16 | uint32_t(r[3]) << 24;
  }
  // fastCover with fixed parameters: on 4 MiB of etcd pages it trains in 0.07 s
  // a dictionary as good as the parameter search (ZDICT_trainFromBuffer's, 0.3 s)
  // finds, to 0.1%.
  ZDICT_fastCover_params_t p{};
  p.k = 1024;
  p.d = 8;
  p.f = 20;
  p.accel = 1;
  p.zParams.dictID = id;
  Bytes dict(max_size);
  size_t n = ZDICT_trainFromBuffer_fastCover(dict.data(), dict.size(), samples.data(), sizes.data(), unsigned(sizes.size()), p);
  if (ZDICT_isError(n) || ZSTD_getDictID_fromDict(dict.data(), n) != id) return {};
  dict.resize(n);
  return dict;
}

}  // namespace cairn::repo
