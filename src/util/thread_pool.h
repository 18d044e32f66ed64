// Splitting independent work items over threads.
#pragma once
#include <cstddef>
#include <functional>

namespace deltaedit::util {

// Simple work splitting: run fn(i) for i in [0, n) on `threads` workers (results must be stored by
// index by the caller, so the outcome does not depend on scheduling). Exceptions are rethrown.
void parallel_for(size_t n, unsigned threads, const std::function<void(size_t)>& fn);

}  // namespace deltaedit::util
