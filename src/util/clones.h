// DELTAEDIT_CLONES: for loops GCC vectorises well, an AVX2 clone besides the baseline (SSE2),
// picked at load time by the CPU. Each clone computes what the plain C++ says, element by
// element, so results are bit-identical on every CPU. (Off under ASan, whose instrumentation
// does not support target_clones, and on other compilers.)
#pragma once

//
// DELTAEDIT_INLINE: on a lambda called inside a cloned function (`[&](auto rr) DELTAEDIT_INLINE
// {...}`), so that its body is compiled into each clone; a lambda left out of line is a function
// of its own, compiled for the baseline only.
#define DELTAEDIT_INLINE __attribute__((always_inline))

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    !defined(__SANITIZE_ADDRESS__)
#define DELTAEDIT_CLONES __attribute__((target_clones("avx2", "default")))
#pragma GCC diagnostic ignored "-Wpsabi"
#else
#define DELTAEDIT_CLONES
#endif
