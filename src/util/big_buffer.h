// Allocator for large per-tensor f32 buffers: elements are left uninitialised (the engine writes
// every one before reading it), and buffers of 4 MB or more are mapped directly and advised to
// use transparent huge pages, so a 500 MB tensor costs a few hundred page faults instead of
// 128,000 and no separate zero-fill pass.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace deltaedit::util {

template <class T>
struct BigBufferAllocator {
  using value_type = T;
  static constexpr size_t kMapBytes = size_t{4} << 20;

  BigBufferAllocator() = default;
  template <class U>
  BigBufferAllocator(const BigBufferAllocator<U>&) noexcept {}

  T* allocate(size_t n) {
    const size_t bytes = n * sizeof(T);
    if (bytes < kMapBytes) return std::allocator<T>().allocate(n);
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    ::madvise(p, bytes, MADV_HUGEPAGE);  // advice only: without THP the buffer still works
#endif
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t n) noexcept {
    const size_t bytes = n * sizeof(T);
    if (bytes < kMapBytes) return std::allocator<T>().deallocate(p, n);
    ::munmap(p, bytes);
  }
  // resize() default-initialises: no zero-fill pass for arithmetic types.
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
  template <class U>
  bool operator==(const BigBufferAllocator<U>&) const noexcept {
    return true;
  }
};

// A float buffer whose resize() does not zero its new elements.
using BigFloatBuffer = std::vector<float, BigBufferAllocator<float>>;

}  // namespace deltaedit::util
