#include "comm/collective_check.h"

#include <cstdint>

#include "core/error.h"

namespace anvil::comm {

namespace {
const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::reduce_sum: return "sum";
    case ReduceOp::reduce_avg: return "avg";
    case ReduceOp::reduce_max: return "max";
  }
  return "?";
}

// Addresses as integers: the ranges compared may belong to different objects, where
// pointer comparison and arithmetic past an object's end are undefined.
std::uintptr_t address_of(const void* p) { return reinterpret_cast<std::uintptr_t>(p); }

// Byte ranges [a, a + a_bytes) and [b, b + b_bytes) share a byte.
bool bytes_overlap(const void* a, std::int64_t a_bytes, const void* b, std::int64_t b_bytes) {
  if (a_bytes == 0 || b_bytes == 0) return false;
  const std::uintptr_t pa = address_of(a), pb = address_of(b);
  return pa < pb + static_cast<std::uintptr_t>(b_bytes) &&
         pb < pa + static_cast<std::uintptr_t>(a_bytes);
}
}  // namespace

void count_check(const Comm& comm, const char* call, std::int64_t count) {
  ANVIL_CHECK(count >= 0, call, " on comm '", comm.name(), "': negative count ", count);
}

void reduce_dtype_check(const Comm& comm, const char* call, DType dtype, ReduceOp op) {
  const bool is_float = dtype == DType::dtype_f32 || dtype == DType::dtype_f64;
  const bool is_int = dtype == DType::dtype_i32 || dtype == DType::dtype_i64;
  ANVIL_CHECK(is_float || is_int, call, " on comm '", comm.name(), "': reduce_",
              reduce_op_name(op), " is not defined on dtype ", dtype_short_name(dtype),
              " (f32, f64, i32, i64 only)");
  ANVIL_CHECK(op != ReduceOp::reduce_avg || is_float, call, " on comm '", comm.name(),
              "': reduce_avg is not defined on dtype ", dtype_short_name(dtype),
              " (f32, f64 only)");
}

bool allgather_args_check(const Comm& comm, const void* send, const void* recv,
                          std::int64_t count, DType dtype) {
  const auto block = count * static_cast<std::int64_t>(dtype_size(dtype));
  if (block == 0) return false;
  const auto own_block = address_of(recv) + static_cast<std::uintptr_t>(comm.rank() * block);
  if (address_of(send) == own_block) return true;
  ANVIL_CHECK(!bytes_overlap(send, block, recv, comm.size() * block), "allgather on comm '",
              comm.name(), "': send overlaps recv without being this rank's block of it");
  return false;
}

bool reduce_scatter_args_check(const Comm& comm, const void* send, const void* recv,
                               std::int64_t count, DType dtype) {
  const auto block = count * static_cast<std::int64_t>(dtype_size(dtype));
  if (block == 0) return false;
  if (send == recv) return true;
  ANVIL_CHECK(!bytes_overlap(send, comm.size() * block, recv, block), "reduce_scatter on comm '",
              comm.name(), "': send and recv overlap without being the same pointer");
  return false;
}

void root_check(const Comm& comm, int root) {
  ANVIL_CHECK(root >= 0 && root < comm.size(), "broadcast on comm '", comm.name(), "': root ",
              root, " is not a rank of a group of ", comm.size());
}

void split_color_check(const Comm& comm, int color) {
  ANVIL_CHECK(color >= 0, "split of comm '", comm.name(), "': negative color ", color);
}

void avg_divide(void* buf, std::int64_t count, DType dtype, int divisor) {
  if (dtype == DType::dtype_f32) {
    auto* p = static_cast<float*>(buf);
    const auto d = static_cast<float>(divisor);
    for (std::int64_t i = 0; i < count; ++i) p[i] /= d;
    return;
  }
  ANVIL_CHECK(dtype == DType::dtype_f64, "avg_divide on dtype ", dtype_short_name(dtype));
  auto* p = static_cast<double*>(buf);
  const auto d = static_cast<double>(divisor);
  for (std::int64_t i = 0; i < count; ++i) p[i] /= d;
}

}  // namespace anvil::comm
