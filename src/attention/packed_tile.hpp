// Logits and V accumulation over a tile of packed page rows, decoded in place: codes are
// unpacked one row and group at a time into centroid values, never into a key or value vector
// of the original basis.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attention/centroid_gather.hpp"
#include "attention/tile.hpp"
#include "kvbits/cache.hpp"
#include "kvbits/tq_mse.hpp"

namespace kvbits::attn {

struct PackedGroup {
  GatherFn gather = nullptr;
  const float* centroids = nullptr;
  uint32_t first = 0, dims = 0;  // hp slots
  size_t byte_offset = 0;        // inside the row's codes
};

// Where one side (K or V) of a page row lives, and how to decode it.
struct PackedRowDecoder {
  PackedGroup groups[8];
  uint32_t n_groups = 0;
  size_t codes_offset = 0, code_stride = 0;    // bytes: page -> codes of row 0, row to row
  size_t scales_offset = 0, scale_stride = 0;  // bytes: page -> scale 0 of row 0, row to row
};
PackedRowDecoder key_decoder(const TqQuantizer& k, const PageLayout& layout);
PackedRowDecoder value_decoder(const TqQuantizer& v, const PageLayout& layout);

// s[i * kTile + r] = scale * sum_g half(scale_g) * (q'_i,g . centroids(codes_g)) for the rows
// r < mask.nvis[i] of page rows [row0, row0 + kTile). buf: dim floats.
void packed_logits(const PackedRowDecoder& kd, const uint8_t* page, uint32_t row0, const TileMask& mask,
                   const QueryBlock& qb, float scale, float* s, float* buf);

// acc[i] += p[i * kTile + r] * half(v_scale_r) * centroids(v_codes_r) over r < mask.nvis[i]:
// V stays in its rotated basis. acc: [n][dim]; buf: dim floats.
void packed_values(const PackedRowDecoder& vd, const uint8_t* page, uint32_t row0, const TileMask& mask,
                   const QueryBlock& qb, const float* p, float* acc, float* buf);

}  // namespace kvbits::attn
