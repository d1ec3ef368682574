// Arena: one allocation, carved into named views once, before the step loop. Sizing is a
// dry run of the same carving code (plan mode), so the size can never drift from the use.
//
//   Arena arena;                       // plan mode: take() only counts
//   carve(arena);                      // the function that takes every buffer
//   arena.allocate();                  // one aligned, zeroed allocation
//   carve(arena);                      // the same calls now return real pointers
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>

#include "core/error.h"

namespace anvil {

class Arena {
 public:
  static constexpr std::size_t kAlign = 64;  // a cache line; also AVX-512 friendly

  Arena() = default;
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  Arena(Arena&&) = default;
  Arena& operator=(Arena&&) = default;

  // `n` elements of T, 64-byte aligned. In plan mode the pointer is null.
  template <typename T>
  T* take(std::int64_t n) {
    ANVIL_CHECK(n >= 0, "negative arena request");
    std::size_t bytes = (static_cast<std::size_t>(n) * sizeof(T) + kAlign - 1) / kAlign * kAlign;
    std::size_t at = cursor_;
    cursor_ += bytes;
    if (!base_) return nullptr;
    ANVIL_CHECK(cursor_ <= capacity_, "arena overflow: ", cursor_, " > ", capacity_, " bytes");
    return reinterpret_cast<T*>(base_.get() + at);
  }

  // Ends plan mode: allocates what the takes so far asked for (zeroed) and rewinds. From
  // kOwnPages bytes on, the memory is mapped pages of its own (returned whole on release;
  // not under AddressSanitizer, which checks malloc's blocks only).
  void allocate();
  static constexpr std::size_t kOwnPages = std::size_t{1} << 20;
  // The same from another memory (a device's): `alloc` returns zeroed memory aligned to at
  // least kAlign, `release` frees it when the arena goes.
  void allocate(const std::function<void*(std::size_t)>& alloc, std::function<void(void*)> release);
  // Rewinds the cursor so the same carving runs again over the allocation.
  void rewind() { cursor_ = 0; }

  bool allocated() const { return base_ != nullptr; }
  std::size_t capacity() const { return capacity_; }
  std::size_t used() const { return cursor_; }

 private:
  struct Free {
    std::function<void(void*)> release;  // empty: std::free
    void operator()(std::byte* p) const;
  };
  std::unique_ptr<std::byte, Free> base_;
  std::size_t capacity_ = 0;
  std::size_t cursor_ = 0;
};

}  // namespace anvil
