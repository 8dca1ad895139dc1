#include "common/repo/compress.h"

#include <zstd.h>

#include <memory>

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

bool decompress(std::span<const uint8_t> in, size_t expected_size, Bytes& out) {
  unsigned long long fs = ZSTD_getFrameContentSize(in.data(), in.size());
  if (fs == ZSTD_CONTENTSIZE_ERROR || (fs != ZSTD_CONTENTSIZE_UNKNOWN && fs != expected_size)) return false;
  out.resize(expected_size);
  size_t n = ZSTD_decompressDCtx(t_dctx.d, out.data(), out.size(), in.data(), in.size());
  return !ZSTD_isError(n) && n == expected_size;
}

}  // namespace cairn::repo
