// Per-layer RoPE-logit MAE, reference spec §9.1.
//
// The logit error of a row is linear in the key error e = k - k̂:
//   s(q,k,Δ) - s(q,k̂,Δ) = Σ_i [cos(Δθ_i)·(q0 e0 + q1 e1) + sin(Δθ_i)·(q1 e0 - q0 e1)] + q[static]·e[static]
// with (q0, q1), (e0, e1) the (real, imaginary) dims of rotary block i. So each row needs two
// numbers per block, then one pass per offset; everything is in fp64.
#include <array>
#include <cmath>
#include <string>

#include "kvbits/eval.hpp"
#include "kvbits/rope_blocks.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {

std::vector<double> logit_offsets(double max_offset, uint32_t count) {
  if (count == 0 || !std::isfinite(max_offset) || max_offset < 0)
    fail(StatusCode::invalid_argument, "logit offsets: need count >= 1 and a finite max_offset >= 0");
  if (count == 1) return {0.0};
  std::vector<double> out(count);
  const double step = 2.0 * max_offset / double(count - 1);
  for (uint32_t j = 0; j < count; ++j) out[j] = -max_offset + double(j) * step;
  out[count - 1] = max_offset;  // exact end point, as numpy's linspace
  return out;
}

double rope_logit(const ModelShape& shape, const double* q, const double* k, double delta) {
  double s = 0.0;
  for (uint32_t b = 0; b < shape.n_blocks(); ++b) {
    const auto d = block_dims(shape, b);
    const double a = delta * block_frequency(shape, b);  // static blocks: frequency 0, no rotation
    const double c = std::cos(a), sn = std::sin(a);
    const double k0 = c * k[d[0]] - sn * k[d[1]], k1 = sn * k[d[0]] + c * k[d[1]];
    s += q[d[0]] * k0 + q[d[1]] * k1;
  }
  return s;
}

double rope_logit_mae(const ModelShape& shape, const float* q, const float* k, const float* k_hat, size_t n_tokens,
                      const std::vector<double>& offsets) {
  shape.validate();
  if (offsets.empty()) fail(StatusCode::invalid_argument, "rope logit MAE: no offsets");
  const uint32_t D = shape.head_dim, G = shape.gqa_group(), nr = shape.n_rotary_blocks(), nb = shape.n_blocks();
  // cos/sin of Δθ_i for every offset and rotary block.
  std::vector<double> cs(offsets.size() * nr), sn(offsets.size() * nr);
  for (size_t j = 0; j < offsets.size(); ++j)
    for (uint32_t b = 0; b < nr; ++b) {
      const double a = offsets[j] * block_frequency(shape, b);
      cs[j * nr + b] = std::cos(a);
      sn[j * nr + b] = std::sin(a);
    }
  std::vector<std::array<uint32_t, 2>> dims(nb);
  for (uint32_t b = 0; b < nb; ++b) dims[b] = block_dims(shape, b);

  std::vector<double> sum_abs(offsets.size(), 0.0);
  std::vector<double> e(D), dot(nr), cross(nr);
  for (size_t t = 0; t < n_tokens; ++t) {
    for (uint32_t d = 0; d < D; ++d) e[d] = double(k[t * D + d]) - double(k_hat[t * D + d]);
    for (uint32_t g = 0; g < G; ++g) {
      const float* qr = q + (t * G + g) * D;
      double fixed = 0.0;  // static blocks do not rotate
      for (uint32_t b = nr; b < nb; ++b) fixed += qr[dims[b][0]] * e[dims[b][0]] + qr[dims[b][1]] * e[dims[b][1]];
      for (uint32_t b = 0; b < nr; ++b) {
        const double q0 = qr[dims[b][0]], q1 = qr[dims[b][1]], e0 = e[dims[b][0]], e1 = e[dims[b][1]];
        dot[b] = q0 * e0 + q1 * e1;
        cross[b] = q1 * e0 - q0 * e1;
      }
      for (size_t j = 0; j < offsets.size(); ++j) {
        double s = fixed;
        const double* c = &cs[j * nr];
        const double* si = &sn[j * nr];
        for (uint32_t b = 0; b < nr; ++b) s += c[b] * dot[b] + si[b] * cross[b];
        sum_abs[j] += std::fabs(s);
      }
    }
  }
  const double rows = double(n_tokens) * G;
  double mae = 0.0;
  for (double s : sum_abs) mae += rows > 0 ? s / rows : 0.0;  // mean over rows, then over offsets
  return mae / double(offsets.size());
}

}  // namespace kvbits::eval
