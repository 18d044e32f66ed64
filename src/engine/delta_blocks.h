// Block-wise reading of a (base, post) pair: Δ = post − base in f32, in blocks that stay in cache,
// grouped in chunks after which the consumed input pages may go.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>

#include "io/convert.h"
#include "io/writer.h"
#include "util/prefetch.h"

namespace deltaedit::engine {

inline constexpr size_t kDeltaChunk = size_t(1) << 20;  // elements per chunk
inline constexpr size_t kDeltaBlock = 4096;             // elements per in-cache block

// block(at, count, delta) gets Δ = post − base of elements [at, at + count) in f32 (two BF16
// inputs decoded in registers, others decoded first: the same bits); chunk_done(elem_offset,
// elems) follows each chunk. Checks for SIGINT/SIGTERM between chunks.
template <class Block, class ChunkDone>
void for_each_delta_block(std::span<const std::byte> base_bytes, io::DType base_dt,
                          std::span<const std::byte> post_bytes, io::DType post_dt, uint64_t n,
                          Block&& block, ChunkDone&& chunk_done) {
  const size_t bsz = io::dtype_bits(base_dt) / 8, psz = io::dtype_bits(post_dt) / 8;
  const bool both_bf16 = base_dt == io::DType::BF16 && post_dt == io::DType::BF16;
  float b[kDeltaBlock], d[kDeltaBlock], p[kDeltaBlock];
  for (uint64_t off = 0; off < n; off += kDeltaChunk) {
    io::check_interrupted();
    const size_t m = size_t(std::min<uint64_t>(kDeltaChunk, n - off));
    for (size_t k = 0; k < m; k += kDeltaBlock) {
      const size_t c = std::min(kDeltaBlock, m - k);
      const uint64_t at = off + k;
      if (both_bf16) {
        io::bf16_delta_to_f32(base_bytes.subspan(at * bsz, c * bsz),
                              post_bytes.subspan(at * psz, c * psz), std::span(d, c));
      } else {
        io::to_f32(base_bytes.subspan(at * bsz, c * bsz), base_dt, std::span(b, c));
        io::to_f32(post_bytes.subspan(at * psz, c * psz), post_dt, std::span(p, c));
        for (size_t i = 0; i < c; ++i) d[i] = p[i] - b[i];
      }
      // The next block's bytes into the cache while `block` computes.
      const uint64_t next = std::min<uint64_t>(n - at - c, c);
      util::prefetch_read(base_bytes.subspan((at + c) * bsz, next * bsz));
      util::prefetch_read(post_bytes.subspan((at + c) * psz, next * psz));
      block(at, c, static_cast<const float*>(d));
    }
    chunk_done(off, uint64_t(m));
  }
}

}  // namespace deltaedit::engine
