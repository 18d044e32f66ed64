// Software prefetch of a byte range that is about to be read, for streamed inputs: the hardware
// prefetchers stop at page boundaries, so the next block's lines are asked for while the current
// block computes. Advice only: a prefetch never faults (an unmapped page is skipped).
#pragma once
#include <cstddef>
#include <span>

namespace deltaedit::util {

inline void prefetch_read(std::span<const std::byte> bytes) {
  for (size_t o = 0; o < bytes.size(); o += 64) __builtin_prefetch(bytes.data() + o, 0, 2);
}

}  // namespace deltaedit::util
