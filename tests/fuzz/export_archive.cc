// The archive `cairnctl import` reads (cairnctl/archive/export_archive.h): an
// export file is outside input, so any bytes must end in a clean Error, never
// a crash, a hang or a file written outside the extraction directory.
//
// Input: the archive file's bytes (a .tar.gz, or a plain tar: libarchive
// reads both). Each input is written to a file in a fresh directory (on
// /dev/shm when it exists) and extracted into a directory beside it.
#include "cairnctl/archive/export_archive.h"

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/util/error.h"

using namespace cairn;
namespace fs = std::filesystem;

namespace {

// The fuzzer's own directory, removed at exit.
struct Scratch {
  std::string dir;
  Scratch() {
    std::string tmpl =
        (fs::is_directory("/dev/shm") ? std::string("/dev/shm") : fs::temp_directory_path().string()) + "/cairn-fuzz-archive-XXXXXX";
    if (!::mkdtemp(tmpl.data())) std::abort();
    dir = tmpl;
  }
  ~Scratch() {
    std::error_code ec;
    fs::remove_all(dir, ec);
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static Scratch scratch;
  const std::string file = scratch.dir + "/in.tar.gz", out = scratch.dir + "/out";
  std::error_code ec;
  fs::remove_all(out, ec);
  fs::create_directory(out);
  std::ofstream(file, std::ios::binary | std::ios::trunc).write(reinterpret_cast<const char*>(data), std::streamsize(size));
  try {
    auto ex = ctl::export_archive::extract_archive(file, out);
    // Accepted: every file it wrote is one meta.json lists, under out/repo.
    for (const auto& [name, f] : ex.files)
      if (!ctl::export_archive::allowed_name(name) || name.rfind("repo/", 0) != 0) __builtin_trap();
  } catch (const Error&) {
    // refused: what an import reports
  }
  // Nothing was written beside the extraction directory.
  for (const auto& e : fs::directory_iterator(scratch.dir))
    if (e.path().filename() != "in.tar.gz" && e.path().filename() != "out") __builtin_trap();
  return 0;
}
