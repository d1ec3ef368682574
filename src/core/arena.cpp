#include "core/arena.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace anvil {

void Arena::Free::operator()(std::byte* p) const {
  if (release) release(p);
  else std::free(p);
}

void Arena::allocate() {
  ANVIL_CHECK(!base_, "arena allocated twice");
  capacity_ = cursor_ == 0 ? kAlign : cursor_;
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
