// Decodes one group's packed codes (docs/cache-layout.md §4, LSB-first bit stream) straight
// into rotated-basis values: out[j] = scale * centroids[code_j] (one fp32 multiplication, the
// value TqQuantizer::dequantize_rotated gives). Eight codes of width B fill exactly B
// bytes, so the stream is read eight codes per little word; the tail reads only its bytes.
#pragma once

#include <cstdint>

namespace kvbits::attn {

using GatherFn = void (*)(const uint8_t* codes, uint32_t n, const float* centroids, float scale, float* out);

// The gather for a code width of 1..8 bits (other widths: null).
GatherFn centroid_gather(int bits);

}  // namespace kvbits::attn
