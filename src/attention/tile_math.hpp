// The two products of a tile, on decoded fp32 rows [rows][dim]: logits of every query against
// the K rows, and the weighted sum of the V rows into every query's accumulator. Both follow a
// fixed per-query summation order, whichever way the queries are grouped.
#pragma once

#include <cstdint>

#include "attention/tile.hpp"

namespace kvbits::attn {

// s[i * kTile + r] = scale * (q_i . rows[r]) for r < mask.nvis[i]; q: [n][dim].
void tile_logits(const float* rows, const TileMask& mask, uint32_t n, uint32_t dim, const float* q, float scale,
                 float* s);

// acc_i[d] += p[i * kTile + r] * rows[r][d] for r = 0, 1, ... < mask.nvis[i], in that order;
// acc: [n][dim].
void tile_values(const float* rows, const TileMask& mask, uint32_t n, uint32_t dim, const float* p, float* acc);

}  // namespace kvbits::attn
