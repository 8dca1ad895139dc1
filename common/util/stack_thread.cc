#include "common/util/stack_thread.h"

#include <pthread.h>

#include <cstring>
#include <exception>
#include <string>

#include "common/util/error.h"

namespace cairn {

namespace {
struct Call {
  const std::function<void()>* fn;
  std::exception_ptr error;
};

void* trampoline(void* arg) {
  auto* c = static_cast<Call*>(arg);
  try {
    (*c->fn)();
  } catch (...) {
    c->error = std::current_exception();
  }
  return nullptr;
}
}  // namespace

void run_with_stack(size_t stack_bytes, const std::function<void()>& fn) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  int rc = pthread_attr_setstacksize(&attr, stack_bytes);
  Call call{&fn, nullptr};
  pthread_t t;
  if (rc == 0) rc = pthread_create(&t, &attr, trampoline, &call);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    throw Error(Errc::io,
                std::string("cannot start a thread with a ") + std::to_string(stack_bytes >> 20) + " MiB stack: " + std::strerror(rc));
  pthread_join(t, nullptr);
  if (call.error) std::rethrow_exception(call.error);
}

}  // namespace cairn
