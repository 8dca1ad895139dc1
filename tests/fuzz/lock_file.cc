// Lock files (locks/<id>). The input is the file's plaintext (encoding byte,
// u32le declared length, body). It is read the way `cairnctl repo locks`
// lists locks and the way taking a lock judges the locks already there
// (stale, same host, another holder).
#include <chrono>
#include <cstdint>

#include "common/repo/lock.h"
#include "common/util/error.h"
#include "fuzz_repo.h"

using namespace cairn;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::FuzzRepo fr;
  fr.put_file(repo::FileType::lock, {data, size});
  try {
    auto r = fr.open();
    for (const auto& l : repo::list_locks(*r)) (void)l.describe();
    repo::LockWatcher w;
    (void)w.list(*r);
    // Shared: conflicts only with an exclusive lock; no waiting either way.
    auto lock = repo::Lock::acquire(*r, repo::LockKind::shared, "fuzz", std::chrono::seconds(0));
    if (lock) lock->release();
  } catch (const Error&) {
  }
  return 0;
}
