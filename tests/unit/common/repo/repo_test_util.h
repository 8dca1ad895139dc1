#pragma once
// Helpers the repository's unit tests share: a temporary directory removed
// with everything in it, seeded random bytes, and whole-file write and read.
#include <fcntl.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <string>

#include "common/util/encoding.h"
#include "common/util/fs.h"

namespace cairn::repo::test {

struct TempDir {
  std::string path;
  TempDir() {
    char buf[] = "/tmp/cairn-repo-test-XXXXXX";
    REQUIRE(mkdtemp(buf) != nullptr);
    path = buf;
  }
  ~TempDir() {
    namespace fs = std::filesystem;
    std::error_code ec;
    // read-only directories from the tests must become writable to be removed
    for (auto it = fs::recursive_directory_iterator(path, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec))
      if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

inline Bytes random_bytes(size_t n, uint32_t seed) {
  std::mt19937 g(seed);
  Bytes b(n);
  for (auto& c : b) c = uint8_t(g());
  return b;
}

inline void write(const std::string& p, std::span<const uint8_t> data, int mode = 0644) {
  Fd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC, mode));
  REQUIRE(fd);
  write_all(fd.get(), data.data(), data.size(), p);
}
inline void write(const std::string& p, const std::string& s, int mode = 0644) { write(p, as_bytes(s), mode); }

inline std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

}  // namespace cairn::repo::test
