#include "attention/fp16_tile.hpp"

#include "attention/vec_math.hpp"
#include "kvbits/half.hpp"

namespace kvbits::attn {
namespace {

void load_half_row(const uint8_t* src, uint32_t n, float* dst) {
  for (uint32_t j = 0; j < n; ++j) dst[j] = half_to_float(load_u16(src + 2 * size_t(j)));
}

}  // namespace

void fp16_logits(Fp16Rows k, const TileMask& mask, const QueryBlock& qb, float scale, float* s, float* buf) {
  const uint32_t D = qb.dim;
  for (uint32_t r = 0; r < mask.max_nvis; ++r) {
    load_half_row(k.rows + size_t(r) * k.stride, D, buf);
    for (uint32_t i = 0; i < qb.n; ++i)
      if (r < mask.nvis[i]) s[size_t(i) * kTile + r] = scale * dot(qb.q + size_t(i) * D, buf, D);
  }
}

void fp16_values(Fp16Rows v, const TileMask& mask, const QueryBlock& qb, const float* p, float* acc, float* buf) {
  const uint32_t D = qb.dim;
  for (uint32_t r = 0; r < mask.max_nvis; ++r) {
    load_half_row(v.rows + size_t(r) * v.stride, D, buf);
    for (uint32_t i = 0; i < qb.n; ++i)
      if (r < mask.nvis[i]) axpy(acc + size_t(i) * D, p[size_t(i) * kTile + r], buf, D);
  }
}

}  // namespace kvbits::attn
