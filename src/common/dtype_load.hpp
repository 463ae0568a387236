// kvbits — reading caller buffers of fp32, fp16 or bf16 values as fp32 (core-internal).
// fp16 and bf16 widen exactly, so every stage (calibration, append, attention, eval) sees the
// same numbers for the same input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kvbits/half.hpp"
#include "kvbits/types.hpp"

namespace kvbits {

// Element i of a buffer of `t` values as fp32.
inline float load_value(const void* p, size_t i, DType t) {
  const char* b = static_cast<const char*>(p);
  if (t == DType::f32) {
    float f;
    std::memcpy(&f, b + 4 * i, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, b + 2 * i, 2);
  return t == DType::f16 ? half_to_float(h) : bf16_to_float(h);
}

// out[j] = element first + j, j < n.
inline void load_row(const void* p, size_t first, size_t n, DType t, float* out) {
  if (t == DType::f32) {
    std::memcpy(out, static_cast<const char*>(p) + 4 * first, n * 4);
    return;
  }
  for (size_t j = 0; j < n; ++j) out[j] = load_value(p, first + j, t);
}

}  // namespace kvbits
