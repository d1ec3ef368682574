#include "core/arena.h"

#include <cstdlib>
#include <cstring>
#include <new>

namespace anvil {

void Arena::Free::operator()(std::byte* p) const { std::free(p); }

void Arena::allocate() {
  ANVIL_CHECK(!base_, "arena allocated twice");
  capacity_ = cursor_ == 0 ? kAlign : cursor_;
  void* p = std::aligned_alloc(kAlign, capacity_);
  if (!p) throw std::bad_alloc();
  std::memset(p, 0, capacity_);
  base_.reset(static_cast<std::byte*>(p));
  cursor_ = 0;
}

}  // namespace anvil
