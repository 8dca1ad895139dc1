// Index files (index/<id>). The input is the file's plaintext (encoding byte,
// u32le declared length, raw or zstd body), loaded the way every command and
// every agent task loads the index (Repository::load_index), then checked the
// way `cairnctl repo check` does. Agents read the index on every task, so an
// index that exhausts the reader stops every backup.
#include <cstdint>

#include "common/repo/checker.h"
#include "common/util/error.h"
#include "fuzz_repo.h"

using namespace cairn;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzRepo fr;
  fr.put_file(repo::FileType::index, {data, size});
  try {
    auto r = fr.open();
    (void)r->load_index();
    repo::CheckOptions opt;
    opt.threads = 1;
    (void)repo::check(*r, opt);
  } catch (const Error&) {
  }
  return 0;
}
