#include "attention_test_util.hpp"

#include <algorithm>
#include <cmath>
#include <random>

#include "kvbits/energy.hpp"
#include "kvbits/rope_blocks.hpp"

namespace kvbits::test_attn {

ModelShape make_shape(uint32_t layers, uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim,
                      uint32_t rotary_dim, RopeLayout layout) {
  ModelShape s;
  s.n_layers = layers, s.n_q_heads = q_heads, s.n_kv_heads = kv_heads, s.head_dim = head_dim;
  s.rotary_dim = rotary_dim ? rotary_dim : head_dim;
  s.rope_layout = layout;
  return s;
}

std::vector<float> structured_vectors(const ModelShape& s, size_t n_tokens, uint32_t heads, uint64_t seed) {
  const uint32_t D = s.head_dim, nb = s.n_blocks();
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  std::vector<float> x(n_tokens * heads * D);
  std::vector<double> row(D);
  for (size_t v = 0; v < n_tokens * heads; ++v) {
    double sq = 0.0;
    for (uint32_t b = 0; b < nb; ++b) {
      const double sd = std::pow(2.0, 5.0 * double(b) / double(nb));
      for (uint32_t d : block_dims(s, b)) {
        row[d] = sd * normal(rng);
        sq += row[d] * row[d];
      }
    }
    const double norm = std::sqrt(sq / D);
    for (uint32_t d = 0; d < D; ++d) x[v * D + d] = float(row[d] / norm);
  }
  return x;
}

Plan calibrated_plan(const ModelShape& shape, const PlanOptions& options, uint64_t seed) {
  EnergyAccumulator acc(shape);
  constexpr size_t kTokens = 32;
  for (uint32_t l = 0; l < shape.n_layers; ++l) {
    const auto q = structured_vectors(shape, kTokens, shape.n_q_heads, seed + 2 * l);
    const auto k = structured_vectors(shape, kTokens, shape.n_kv_heads, seed + 2 * l + 1);
    acc.observe(l, q.data(), k.data(), kTokens, DType::f32);
  }
  return build_plan(acc, options);
}

void reference_attention(const float* q, const float* k, const float* v, uint32_t visible, uint32_t D,
                         double scale, double* out, double* lse) {
  std::vector<double> s(visible);
  double m = -INFINITY;
  for (uint32_t t = 0; t < visible; ++t) {
    double dot = 0.0;
    for (uint32_t d = 0; d < D; ++d) dot += double(q[d]) * double(k[size_t(t) * D + d]);
    s[t] = scale * dot;
    m = std::max(m, s[t]);
  }
  double l = 0.0;
  std::fill(out, out + D, 0.0);
  for (uint32_t t = 0; t < visible; ++t) {
    const double w = std::exp(s[t] - m);
    l += w;
    for (uint32_t d = 0; d < D; ++d) out[d] += w * double(v[size_t(t) * D + d]);
  }
  for (uint32_t d = 0; d < D; ++d) out[d] /= l;
  *lse = m + std::log(l);
}

void ErrorStats::add_row(const float* got, const double* ref, uint32_t D) {
  double err = 0.0, mag = 0.0;
  for (uint32_t d = 0; d < D; ++d) {
    err = std::max(err, std::fabs(double(got[d]) - ref[d]));
    mag = std::max(mag, std::fabs(ref[d]));
  }
  // NaN in the output must fail: the comparison below is false for NaN.
  const double rel = mag > 0.0 ? err / mag : err;
  max_rel = rel == rel ? std::max(max_rel, rel) : INFINITY;
  ++rows;
}

void ErrorStats::add_lse(float got, double ref) {
  const double e = std::fabs(double(got) - ref);
  max_lse = e == e ? std::max(max_lse, e) : INFINITY;
}

void ErrorStats::merge(const ErrorStats& o) {
  max_rel = std::max(max_rel, o.max_rel);
  max_lse = std::max(max_lse, o.max_lse);
  rows += o.rows;
}

}  // namespace kvbits::test_attn
