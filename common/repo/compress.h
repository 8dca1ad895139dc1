#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/util/encoding.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace cairn::repo {

// Compresses with zstd unless the data does not shrink by at least 1/32; returns
// true when out holds compressed data. out views a per-thread buffer that stays
// valid until this thread's next call.
bool compress_if_useful(std::span<const uint8_t> in, std::span<const uint8_t>& out, int level);
// Decompresses a zstd frame whose content size must equal expected_size. Nothing is
// allocated before the frame's block headers prove it can produce that many bytes
// (a tiny frame that declares a gigabyte is refused, not given a gigabyte), and
// callers check expected_size against the ceiling of their object kind first
// (file_size_ceiling, max_blob_size). Returns an empty string on success, or why
// the frame is refused ("does not decompress", "declares ... but holds at most ...").
std::string decompress(std::span<const uint8_t> in, size_t expected_size, Bytes& out);
// out's capacity after a decompression: expected_size and this many bytes
// more, so that a JSON parser may read past the end (tree.h kTreeParsePadding).
inline constexpr size_t kDecompressedSlack = 64;

// A zstd frame decompressed a piece at a time, after decompress()'s checks
// (content size, what its blocks can hold, no dictionary): a large tree is
// read as it is used, its text never whole in memory. zstd holds the frame's
// window (512 KiB at level 1), not its content.
class DecompressStream {
 public:
  DecompressStream(Bytes frame, size_t expected_size);                     // frame: exactly the zstd frame
  DecompressStream(std::span<const uint8_t> frame, size_t expected_size);  // borrowed: outlives the stream
  ~DecompressStream();
  DecompressStream(const DecompressStream&) = delete;
  DecompressStream& operator=(const DecompressStream&) = delete;
  // Why the frame is refused (decompress()'s words), or empty.
  const std::string& error() const { return why_; }
  // Appends the next piece (at most kPiece bytes) to out; false at the end, or
  // with error() set when the frame is refused.
  bool more(Bytes& out);
  static constexpr size_t kPiece = 256u << 10;

 private:
  void check();
  Bytes frame_;
  std::span<const uint8_t> in_;
  size_t expected_, in_pos_ = 0;
  uint64_t produced_ = 0;
  ::ZSTD_DCtx_s* d_ = nullptr;
  std::string why_;
  bool done_ = false;
};

// A zstd frame written a piece at a time (a large tree's text as its nodes
// are written): it holds the compressed frame, not the text. The frame does
// not declare its content size; decompress() takes it either way.
class CompressStream {
 public:
  explicit CompressStream(int level);
  ~CompressStream();
  CompressStream(const CompressStream&) = delete;
  CompressStream& operator=(const CompressStream&) = delete;
  void add(std::span<const uint8_t> text);
  Bytes finish();                             // the frame; the stream is spent
  uint64_t text_size() const { return in_; }  // bytes added
  size_t frame_size() const { return out_.size(); }

 private:
  void run(std::span<const uint8_t> text, bool end);
  ::ZSTD_CCtx_s* c_ = nullptr;
  Bytes out_;
  uint64_t in_ = 0;
};

// The dictionary id a zstd frame names in its header (0: none, or not a frame).
uint32_t frame_dictionary_id(std::span<const uint8_t> frame);

// A zstd dictionary (RFC 8878 § 5) trained on small chunks of one kind of data
// (docs/repository-format.md § 5.1). Small chunks compressed alone lose the
// context a large one has; a dictionary of what such chunks share gives it back.
// Immutable once made; thread-safe.
class CompressionDictionary {
 public:
  // Nullptr with why set when `content` is not a zstd dictionary with a nonzero id.
  static std::shared_ptr<const CompressionDictionary> make(Bytes content, int level, std::string& why);
  ~CompressionDictionary();
  CompressionDictionary(const CompressionDictionary&) = delete;
  CompressionDictionary& operator=(const CompressionDictionary&) = delete;

  uint32_t id() const { return id_; }
  const Bytes& content() const { return content_; }
  // As compress_if_useful, with the dictionary (its id goes in the frame header).
  bool compress_if_useful(std::span<const uint8_t> in, std::span<const uint8_t>& out) const;
  // As decompress(), for a frame compressed with this dictionary.
  std::string decompress(std::span<const uint8_t> in, size_t expected_size, Bytes& out) const;

 private:
  CompressionDictionary() = default;
  Bytes content_;
  uint32_t id_ = 0;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Trains a dictionary of at most max_size bytes on samples (concatenated; sizes
// gives each one's length). Empty when zstd finds nothing worth keeping. The id
// is random (never 0, never one of `taken`).
Bytes train_dictionary(std::span<const uint8_t> samples, const std::vector<size_t>& sizes, size_t max_size,
                       const std::vector<uint32_t>& taken);

}  // namespace cairn::repo
