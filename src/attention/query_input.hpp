// Reading the caller's query tensor: element type conversion and the finiteness check.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvbits/types.hpp"

namespace kvbits::attn {

// dst[j] = q[offset + j] as fp32, j < n (f16/bf16 widen exactly).
void load_query(const void* q, DType dtype, size_t offset, uint32_t n, float* dst);

// Index of the first non-finite element of q[0, n), or n when all are finite.
size_t first_non_finite(const void* q, DType dtype, size_t n);

}  // namespace kvbits::attn
