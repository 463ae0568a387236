// Decodes packed page rows into rotated-basis fp32 rows, ŷ_s = half(scale_g) * centroid(code_s)
// in hp slot order (K) or dim order (V): the values a key or value has in its groups' rotated
// bases. Keys are never rotated back: logits dot ŷ with q' = R q.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attention/centroid_gather.hpp"
#include "kvbits/cache.hpp"
#include "kvbits/tq_mse.hpp"

namespace kvbits::attn {

struct PackedGroup {
  GatherFn gather = nullptr;
  const float* centroids = nullptr;
  uint32_t first = 0, dims = 0;  // slots
  size_t byte_offset = 0;        // inside the row's codes
};

// Where one side (K or V) of a page row lives, and how to decode it.
struct PackedRowDecoder {
  PackedGroup groups[8];
  uint32_t n_groups = 0;
  uint32_t dim = 0;
  size_t codes_offset = 0, code_stride = 0;    // bytes: page -> codes of row 0, row to row
  size_t scales_offset = 0, scale_stride = 0;  // bytes: page -> scale 0 of row 0, row to row
};
PackedRowDecoder key_decoder(const TqQuantizer& k, const PageLayout& layout);
PackedRowDecoder value_decoder(const TqQuantizer& v, const PageLayout& layout);

// dst[r * dim + s] = ŷ_s of page row row0 + r, for r < rows.
void decode_packed_rows(const PackedRowDecoder& dec, const uint8_t* page, uint32_t row0, uint32_t rows, float* dst);

}  // namespace kvbits::attn
