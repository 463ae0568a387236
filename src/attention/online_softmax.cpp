#include "attention/online_softmax.hpp"

#include <cmath>
#include <limits>

#include "attention/vec_math.hpp"

namespace kvbits::attn {

void OnlineSoftmax::reset(uint32_t n, uint32_t dim) {
  n_ = n, dim_ = dim;
  m_.assign(n, -std::numeric_limits<float>::infinity());
  l_.assign(n, 0.0f);
  acc_rot_.assign(size_t(n) * dim, 0.0f);
  acc_orig_.assign(size_t(n) * dim, 0.0f);
}

void OnlineSoftmax::absorb(uint32_t i, float* s, uint32_t count) {
  float mx = m_[i];
  for (uint32_t r = 0; r < count; ++r) mx = s[r] > mx ? s[r] : mx;
  if (mx > m_[i]) {
    // exp(-inf) = 0 on the first tile: the accumulators are still zero.
    const float corr = std::exp(m_[i] - mx);
    l_[i] *= corr;
    scale_in_place(acc_rot(i), corr, dim_);
    scale_in_place(acc_orig(i), corr, dim_);
    m_[i] = mx;
  }
  float l = l_[i];
  for (uint32_t r = 0; r < count; ++r) {
    s[r] = std::exp(s[r] - mx);
    l += s[r];
  }
  l_[i] = l;
}

void OnlineSoftmax::finish(uint32_t i, const float* v_rotation, float* out, float* lse, double* tmp) const {
  const uint32_t D = dim_;
  const float* ar = acc_rot_.data() + size_t(i) * D;
  const float* ao = acc_orig_.data() + size_t(i) * D;
  for (uint32_t d = 0; d < D; ++d) tmp[d] = double(ao[d]);
  if (v_rotation) {
    // tmp[d] += sum_r R_v[r][d] * acc_rot[r], r ascending (R_v^T y, as TqQuantizer::decode).
    for (uint32_t r = 0; r < D; ++r) {
      const double y = ar[r];
      const float* row = v_rotation + size_t(r) * D;
      for (uint32_t d = 0; d < D; ++d) tmp[d] += double(row[d]) * y;
    }
  }
  const double l = l_[i];
  for (uint32_t d = 0; d < D; ++d) out[d] = float(tmp[d] / l);
  if (lse) *lse = float(double(m_[i]) + std::log(l));
}

}  // namespace kvbits::attn
