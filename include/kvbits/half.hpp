// kvbits — IEEE binary16 and bfloat16 conversions, exactly rounded and portable.
//
// Every conversion here is round-to-nearest-even and implemented with integer operations, so
// results are identical on every machine and match CUDA's __float2half_rn / __double2half.
#pragma once

#include <cstdint>

namespace kvbits {

float half_to_float(uint16_t h) noexcept;
uint16_t float_to_half(float f) noexcept;    // RNE; overflow -> +-inf; NaN stays NaN
uint16_t double_to_half(double d) noexcept;  // RNE in one step (no double rounding via float)
float bf16_to_float(uint16_t b) noexcept;
uint16_t float_to_bf16(float f) noexcept;    // RNE; NaN stays NaN

}  // namespace kvbits
