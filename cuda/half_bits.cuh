// kvbits CUDA — fp64 -> binary16 with exactly the integer rounding of src/common/half.cpp
// (round-to-nearest-even in one step, binary64 subnormals to signed zero, overflow to inf), so
// the fp16 scales the GPU stores are those of the CPU encoder by construction.
#pragma once

#include <cstdint>

namespace kvbits::cuda {

__host__ __device__ inline uint16_t round_to_half_bits(uint64_t mant, int top, int exp) {
  const int e = exp + 15;                               // biased exponent if the result is normal
  const int shift = e >= 1 ? top - 10 : top - 10 + (1 - e);  // low bits of mant to drop
  if (shift > 63) return 0;
  uint64_t kept = mant >> shift;
  if (shift > 0) {
    const uint64_t rem = mant & ((uint64_t(1) << shift) - 1);
    const uint64_t half_ulp = uint64_t(1) << (shift - 1);
    if (rem > half_ulp || (rem == half_ulp && (kept & 1))) kept += 1;
  }
  const uint64_t r = (e >= 1 ? (uint64_t(e - 1) << 10) : 0) + kept;
  return r >= 0x7C00 ? uint16_t(0x7C00) : uint16_t(r);
}

__host__ __device__ inline uint16_t double_to_half_bits(double d) {
  uint64_t u;
  static_assert(sizeof u == sizeof d, "binary64");
  memcpy(&u, &d, 8);
  const uint16_t sign = uint16_t((u >> 48) & 0x8000);
  const int exp = int((u >> 52) & 0x7FF);
  const uint64_t man = u & ((uint64_t(1) << 52) - 1);
  if (exp == 0x7FF) return uint16_t(sign | 0x7C00 | (man ? 0x200 : 0));
  if (exp == 0) return sign;
  return uint16_t(sign | round_to_half_bits(man | (uint64_t(1) << 52), 52, exp - 1023));
}

}  // namespace kvbits::cuda
