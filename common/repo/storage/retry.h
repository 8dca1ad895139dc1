#pragma once
// Retries around any backend: a transient failure (Errc::unavailable: no
// answer, a cut connection, a timeout, 5xx, SlowDown, a body cut short) is
// tried again after an exponential backoff with full jitter. Every operation
// of the interface is idempotent at the object level (a save is the same
// bytes under the same name; a remove of a missing object succeeds), except
// create_exclusive: its retry, refused because the object exists, reads the
// object back and counts it as ours only if it holds our bytes. Each retry is
// counted (counters()) and logged (storage_log).
#include <chrono>
#include <memory>

#include "common/repo/storage/backend.h"

namespace cairn::repo::storage {

struct RetryPolicy {
  int max_tries = 8;
  std::chrono::milliseconds first{200};
  std::chrono::milliseconds cap{20'000};
  // For tests only: CAIRN_STORAGE_RETRY_FOR_TESTS="TRIES,FIRST_MS,CAP_MS".
  static RetryPolicy from_env();
};

std::unique_ptr<Backend> make_retrying(std::unique_ptr<Backend> inner, RetryPolicy p = RetryPolicy::from_env());

}  // namespace cairn::repo::storage
