// Widens fp16 rows (sink and recent-window regions, and the pages of layers the plan keeps at
// 16 bits) to fp32, in the original basis.
#pragma once

#include <cstddef>
#include <cstdint>

namespace kvbits::attn {

// fp16 rows: row r's dim values start at rows + r * stride (bytes).
struct Fp16Rows {
  const uint8_t* rows = nullptr;
  size_t stride = 0;
};

// dst[r * dim + d] = value d of row r, for r < n_rows.
void decode_fp16_rows(Fp16Rows src, uint32_t n_rows, uint32_t dim, float* dst);

}  // namespace kvbits::attn
