// Decodes one group's packed codes (docs/cache-layout.md §4, LSB-first bit stream) straight
// into centroid values: out[j] = centroids[code_j]. Eight codes of width B fill exactly B
// bytes, so the stream is read eight codes per little word; the tail reads only its bytes.
#pragma once

#include <cstdint>

namespace kvbits::attn {

using GatherFn = void (*)(const uint8_t* codes, uint32_t n, const float* centroids, float* out);

// The gather for a code width of 1..8 bits (other widths: null).
GatherFn centroid_gather(int bits);

}  // namespace kvbits::attn
