// kvbits — reading rows of the caller's K/V activations (fp32, fp16 or bf16) as fp32.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "common/dtype_load.hpp"
#include "kvbits/half.hpp"
#include "kvbits/types.hpp"

namespace kvbits::cache_detail {

using kvbits::load_row;
using kvbits::load_value;

inline bool fits_fp16(float x) { return (float_to_half(x) & 0x7C00u) != 0x7C00u; }

enum class ValueProblem : uint8_t { none = 0, non_finite = 1, fp16_overflow = 2 };

// The first bad value of a row: non-finite, or (when it is to be stored in fp16) beyond the
// fp16 range. *dim receives its index.
inline ValueProblem check_row(const void* p, size_t first, uint32_t n, DType t, bool to_fp16, uint32_t* dim) {
  for (uint32_t j = 0; j < n; ++j) {
    const float x = load_value(p, first + j, t);
    ValueProblem problem = ValueProblem::none;
    if (!std::isfinite(x)) problem = ValueProblem::non_finite;
    else if (to_fp16 && !fits_fp16(x)) problem = ValueProblem::fp16_overflow;
    if (problem != ValueProblem::none) {
      *dim = j;
      return problem;
    }
  }
  return ValueProblem::none;
}

}  // namespace kvbits::cache_detail
