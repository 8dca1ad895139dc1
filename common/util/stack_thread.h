#pragma once
// Runs a function on a thread of its own with a stack of a given size, for work
// whose recursion is bounded by a documented limit rather than by the caller's
// stack (the archiver's walk recurses once per directory level, up to
// kMaxTreeDepth). Only the pages the recursion touches are used.
#include <cstddef>
#include <functional>

namespace cairn {

// Blocks until fn returns; an exception fn throws is rethrown here.
void run_with_stack(size_t stack_bytes, const std::function<void()>& fn);

}  // namespace cairn
