#include "common/repo/compress.h"

#include <catch2/catch.hpp>
#include <random>

using namespace cairn;
using namespace cairn::repo;

namespace {

// JSON-like text: what the streams carry (a large tree).
std::string sample_text(size_t n, std::mt19937& rng) {
  std::string s;
  while (s.size() < n) s += "{\"name\":\"file-" + std::to_string(rng() % 100000) + "\",\"size\":" + std::to_string(rng()) + "},";
  s.resize(n);
  return s;
}

std::string read_all(DecompressStream& z) {
  Bytes out;
  while (z.more(out)) {
  }
  return std::string(out.begin(), out.end());
}

}  // namespace

TEST_CASE("a frame written piece by piece decompresses whole, and read piece by piece gives the text") {
  std::mt19937 rng(3);
  for (size_t n : {size_t(0), size_t(1), size_t(1000), size_t(3u << 20)}) {
    INFO(n << " bytes");
    std::string text = sample_text(n, rng);
    CompressStream c(1);
    for (size_t at = 0; at < text.size();) {
      size_t k = std::min<size_t>(1 + rng() % 70000, text.size() - at);
      c.add(as_bytes(std::string_view(text).substr(at, k)));
      at += k;
    }
    CHECK(c.text_size() == text.size());
    Bytes frame = c.finish();
    Bytes whole;
    REQUIRE(decompress(frame, text.size(), whole) == "");
    CHECK(std::string(whole.begin(), whole.end()) == text);
    DecompressStream borrowed(std::span<const uint8_t>(frame), text.size());
    CHECK(read_all(borrowed) == text);
    CHECK(borrowed.error().empty());
    DecompressStream owned(Bytes(frame), text.size());
    CHECK(read_all(owned) == text);
    // The entry's size is checked as decompress() checks it.
    DecompressStream wrong(std::span<const uint8_t>(frame), text.size() + 1);
    read_all(wrong);
    CHECK_FALSE(wrong.error().empty());
  }
}

TEST_CASE("a damaged frame read piece by piece is refused, never read past") {
  std::mt19937 rng(9);
  std::string text = sample_text(600000, rng);
  CompressStream c(3);
  c.add(as_bytes(text));
  Bytes frame = c.finish();
  for (int i = 0; i < 300; ++i) {
    Bytes bad = frame;
    bad[rng() % bad.size()] ^= uint8_t(1 + rng() % 255);
    if (i % 3 == 0) bad.resize(rng() % bad.size());
    Bytes whole;
    std::string why = decompress(bad, text.size(), whole);
    DecompressStream z(std::span<const uint8_t>(bad), text.size());
    std::string got = read_all(z);
    // Every frame the stream reads to its end holds exactly the declared size.
    if (z.error().empty()) CHECK(got.size() == text.size());
    if (!why.empty()) CHECK_FALSE(z.error().empty());
  }
}
