// Logits and V accumulation over fp16 rows in the original basis: the sink and recent-window
// regions, and every token of a layer the plan keeps at 16 bits.
#pragma once

#include <cstddef>
#include <cstdint>

#include "attention/tile.hpp"

namespace kvbits::attn {

// fp16 rows: row r's dim values start at rows + r * stride (bytes).
struct Fp16Rows {
  const uint8_t* rows = nullptr;
  size_t stride = 0;
};

// s[i * kTile + r] = scale * (q_i . k_r) for r < mask.nvis[i]. buf: dim floats.
void fp16_logits(Fp16Rows k, const TileMask& mask, const QueryBlock& qb, float scale, float* s, float* buf);

// acc[i] += p[i * kTile + r] * v_r for r < mask.nvis[i]. acc: [n][dim]; buf: dim floats.
void fp16_values(Fp16Rows v, const TileMask& mask, const QueryBlock& qb, const float* p, float* acc, float* buf);

}  // namespace kvbits::attn
