// Integer-only IEEE conversions so that every platform rounds the same way.
#include "kvbits/half.hpp"

#include <cstring>

namespace kvbits {
namespace {

uint32_t bits_of(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
uint64_t bits_of(double d) { uint64_t u; std::memcpy(&u, &d, 8); return u; }
float float_of(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// Rounds a positive value mant * 2^(exp - top) (leading 1 of mant at bit `top`) to the
// 15-bit binary16 magnitude, round-to-nearest-even, overflow to infinity.
uint16_t round_to_half(uint64_t mant, int top, int exp) {
  int e = exp + 15;                            // biased exponent if the result is normal
  int shift = e >= 1 ? top - 10 : top - 10 + (1 - e);  // low bits of mant to drop
  if (shift > 63) return 0;
  uint64_t kept = mant >> shift;
  if (shift > 0) {
    uint64_t rem = mant & ((uint64_t(1) << shift) - 1);
    uint64_t half_ulp = uint64_t(1) << (shift - 1);
    if (rem > half_ulp || (rem == half_ulp && (kept & 1))) kept += 1;
  }
  // Normal: kept in [2^10, 2^11] includes the implicit bit, so add (e-1) << 10; a carry to
  // 2^11 bumps the exponent. Subnormal: the exponent field is 0 and a carry to 2^10 yields
  // the smallest normal. Both come out right by plain addition.
  uint64_t r = (e >= 1 ? (uint64_t(e - 1) << 10) : 0) + kept;
  return r >= 0x7C00 ? uint16_t(0x7C00) : uint16_t(r);
}

}  // namespace

float half_to_float(uint16_t h) noexcept {
  uint32_t sign = uint32_t(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1F;
  uint32_t man = h & 0x3FF;
  if (exp == 0x1F) return float_of(sign | 0x7F800000u | (man << 13));  // inf / NaN
  if (exp == 0) {
    if (man == 0) return float_of(sign);
    // subnormal: normalise
    int e = -1;
    do { man <<= 1; ++e; } while ((man & 0x400) == 0);
    man &= 0x3FF;
    return float_of(sign | (uint32_t(127 - 15 - e) << 23) | (man << 13));
  }
  return float_of(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t double_to_half(double d) noexcept {
  uint64_t u = bits_of(d);
  uint16_t sign = uint16_t((u >> 48) & 0x8000);
  int exp = int((u >> 52) & 0x7FF);
  uint64_t man = u & ((uint64_t(1) << 52) - 1);
  if (exp == 0x7FF) return uint16_t(sign | 0x7C00 | (man ? 0x200 : 0));
  if (exp == 0) return sign;  // binary64 subnormals are far below half's range
  return uint16_t(sign | round_to_half(man | (uint64_t(1) << 52), 52, exp - 1023));
}

uint16_t float_to_half(float f) noexcept {
  uint32_t u = bits_of(f);
  uint16_t sign = uint16_t((u >> 16) & 0x8000);
  int exp = int((u >> 23) & 0xFF);
  uint64_t man = u & 0x7FFFFF;
  if (exp == 0xFF) return uint16_t(sign | 0x7C00 | (man ? 0x200 : 0));
  if (exp == 0) return sign;  // binary32 subnormals are below half's range
  return uint16_t(sign | round_to_half(man | (uint64_t(1) << 23), 23, exp - 127));
}

float bf16_to_float(uint16_t b) noexcept { return float_of(uint32_t(b) << 16); }

uint16_t float_to_bf16(float f) noexcept {
  uint32_t u = bits_of(f);
  if ((u & 0x7F800000u) == 0x7F800000u && (u & 0x7FFFFF)) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  uint32_t rounding = 0x7FFF + ((u >> 16) & 1);
  return uint16_t((u + rounding) >> 16);
}

}  // namespace kvbits
