#include "attention/fp16_rows.hpp"

#include "attention/tile.hpp"
#include "kvbits/half.hpp"

namespace kvbits::attn {

void decode_fp16_rows(Fp16Rows src, uint32_t n_rows, uint32_t dim, float* dst) {
  for (uint32_t r = 0; r < n_rows; ++r, dst += dim) {
    const uint8_t* row = src.rows + size_t(r) * src.stride;
    for (uint32_t d = 0; d < dim; ++d) dst[d] = half_to_float(load_u16(row + 2 * size_t(d)));
  }
}

}  // namespace kvbits::attn
