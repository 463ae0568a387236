#include "attention/query_input.hpp"

#include <cmath>
#include <cstring>

#include "common/dtype_load.hpp"

namespace kvbits::attn {
namespace {

inline uint16_t u16_at(const void* base, size_t i) {
  uint16_t v;
  std::memcpy(&v, static_cast<const uint8_t*>(base) + 2 * i, sizeof v);
  return v;
}

}  // namespace

void load_query(const void* q, DType dtype, size_t offset, uint32_t n, float* dst) {
  load_row(q, offset, n, dtype, dst);
}

size_t first_non_finite(const void* q, DType dtype, size_t n) {
  switch (dtype) {
    case DType::f32: {
      const float* f = static_cast<const float*>(q);
      for (size_t i = 0; i < n; ++i)
        if (!std::isfinite(f[i])) return i;
      return n;
    }
    case DType::f16:  // exponent all ones: inf or NaN
      for (size_t i = 0; i < n; ++i)
        if ((u16_at(q, i) & 0x7c00u) == 0x7c00u) return i;
      return n;
    case DType::bf16:
      for (size_t i = 0; i < n; ++i)
        if ((u16_at(q, i) & 0x7f80u) == 0x7f80u) return i;
      return n;
  }
  return 0;
}

}  // namespace kvbits::attn
