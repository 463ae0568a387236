#include "attention/tile_math.hpp"

#include "attention/vec_math.hpp"

namespace kvbits::attn {
namespace {

// dot() of four queries (rows q, q + stride, ...) with one x, sharing the loads of x; each
// result has exactly dot()'s summation order.
void dot4(const float* q, uint32_t stride, const float* x, uint32_t n, float* out) {
  const float* q0 = q;
  const float* q1 = q + stride;
  const float* q2 = q + 2 * size_t(stride);
  const float* q3 = q + 3 * size_t(stride);
  f32x4 lo0 = {0.f, 0.f, 0.f, 0.f}, hi0 = lo0, lo1 = lo0, hi1 = lo0, lo2 = lo0, hi2 = lo0, lo3 = lo0, hi3 = lo0;
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const f32x4 xl = load4(x + i), xh = load4(x + i + 4);
    lo0 += load4(q0 + i) * xl, hi0 += load4(q0 + i + 4) * xh;
    lo1 += load4(q1 + i) * xl, hi1 += load4(q1 + i + 4) * xh;
    lo2 += load4(q2 + i) * xl, hi2 += load4(q2 + i + 4) * xh;
    lo3 += load4(q3 + i) * xl, hi3 += load4(q3 + i + 4) * xh;
  }
  const f32x4 h[4] = {lo0 + hi0, lo1 + hi1, lo2 + hi2, lo3 + hi3};
  const float* qs[4] = {q0, q1, q2, q3};
  for (int k = 0; k < 4; ++k) {
    float s = (h[k][0] + h[k][1]) + (h[k][2] + h[k][3]);
    for (uint32_t j = i; j < n; ++j) s += qs[k][j] * x[j];
    out[k] = s;
  }
}

}  // namespace

void tile_logits(const float* rows, const TileMask& mask, uint32_t n, uint32_t dim, const float* q, float scale,
                 float* s) {
  for (uint32_t r = 0; r < mask.max_nvis; ++r) {
    const float* x = rows + size_t(r) * dim;
    uint32_t i = 0;
    for (; i + 4 <= n; i += 4) {
      if (r >= mask.nvis[i] && r >= mask.nvis[i + 1] && r >= mask.nvis[i + 2] && r >= mask.nvis[i + 3]) continue;
      float d[4];
      dot4(q + size_t(i) * dim, dim, x, dim, d);
      for (uint32_t k = 0; k < 4; ++k)
        if (r < mask.nvis[i + k]) s[size_t(i + k) * kTile + r] = scale * d[k];
    }
    for (; i < n; ++i)
      if (r < mask.nvis[i]) s[size_t(i) * kTile + r] = scale * dot(q + size_t(i) * dim, x, dim);
  }
}

void tile_values(const float* rows, const TileMask& mask, uint32_t n, uint32_t dim, const float* p, float* acc) {
  for (uint32_t i = 0; i < n; ++i) {
    const uint32_t nv = mask.nvis[i];
    if (nv == 0) continue;
    const float* w = p + size_t(i) * kTile;
    float* a = acc + size_t(i) * dim;
    // Sixteen accumulator lanes stay in registers while the rows stream past.
    uint32_t d = 0;
    for (; d + 16 <= dim; d += 16) {
      f32x4 a0 = load4(a + d), a1 = load4(a + d + 4), a2 = load4(a + d + 8), a3 = load4(a + d + 12);
      const float* x = rows + d;
      for (uint32_t r = 0; r < nv; ++r, x += dim) {
        const f32x4 wr = {w[r], w[r], w[r], w[r]};
        a0 += wr * load4(x), a1 += wr * load4(x + 4), a2 += wr * load4(x + 8), a3 += wr * load4(x + 12);
      }
      store4(a + d, a0), store4(a + d + 4, a1), store4(a + d + 8, a2), store4(a + d + 12, a3);
    }
    for (; d < dim; ++d) {
      float ad = a[d];
      for (uint32_t r = 0; r < nv; ++r) ad += w[r] * rows[size_t(r) * dim + d];
      a[d] = ad;
    }
  }
}

}  // namespace kvbits::attn
