// Snapshot files (snapshots/<id>). The input is the file's plaintext as
// someone holding the repository password can write it: encoding byte, u32le
// declared length, body (raw JSON or a zstd frame). Loading goes through
// authentication, decompression with the declared size and decode_snapshot(),
// the way `cairnctl repo snapshots` and `restore latest` read it. A small zstd
// frame declaring a huge size (the decompression bomb) is an out-of-memory
// report here (run with -rss_limit_mb, docs/testing.md).
#include "common/repo/snapshot.h"

#include <cstdint>

#include "common/util/error.h"
#include "fuzz_repo.h"

using namespace cairn;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzRepo fr;
  std::string name = fr.put_file(repo::FileType::snapshot, {data, size});
  try {
    auto r = fr.open();
    std::vector<std::pair<std::string, std::string>> bad;
    for (const auto& s : repo::load_snapshots(*r, &bad)) {
      (void)repo::encode_snapshot(s);
      (void)repo::source_key(s);
    }
    (void)repo::resolve_snapshot(*r, "latest");
    (void)repo::load_snapshot(*r, name);
  } catch (const Error&) {
    // refused with a reason: what a hostile file must get
  }
  return 0;
}
