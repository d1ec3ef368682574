#include "core/arena.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>
#include <new>

namespace anvil {

namespace {

// Under AddressSanitizer every arena comes from malloc, whose blocks it fences with
// redzones; pages of our own would not be checked.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif
#else
constexpr bool kSanitized = false;
#endif

}  // namespace

void Arena::Free::operator()(std::byte* p) const {
  if (release) release(p);
  else std::free(p);
}

void Arena::allocate() {
  ANVIL_CHECK(!base_, "arena allocated twice");
  capacity_ = cursor_ == 0 ? kAlign : cursor_;
  if (!kSanitized && capacity_ >= kOwnPages) {
    // Pages of its own, given back whole when the arena goes. From malloc's heap, a large
    // short-lived arena (a weight's f32 slice while it is quantized) stays resident behind
    // the long-lived allocations made after it: 76 MiB of a 66M-parameter QLoRA load.
    const std::size_t bytes = capacity_;
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    std::memset(p, 0, bytes);  // resident now, as the plan counts it
    base_ = std::unique_ptr<std::byte, Free>(static_cast<std::byte*>(p),
                                             Free{[bytes](void* q) { ::munmap(q, bytes); }});
    cursor_ = 0;
    return;
  }
  void* p = std::aligned_alloc(kAlign, capacity_);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, capacity_);
  base_.reset(static_cast<std::byte*>(p));
  cursor_ = 0;
}

void Arena::allocate(const std::function<void*(std::size_t)>& alloc, std::function<void(void*)> release) {
  ANVIL_CHECK(!base_, "arena allocated twice");
  capacity_ = cursor_ == 0 ? kAlign : cursor_;
  void* p = alloc(capacity_);
  if (!p) throw std::bad_alloc();
  ANVIL_CHECK(reinterpret_cast<std::uintptr_t>(p) % kAlign == 0, "arena memory not ", kAlign, "-byte aligned");
  base_ = std::unique_ptr<std::byte, Free>(static_cast<std::byte*>(p), Free{std::move(release)});
  cursor_ = 0;
}

}  // namespace anvil
