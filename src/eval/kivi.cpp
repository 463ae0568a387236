// KIVI (Liu et al., ICML 2024) as a reference quantizer, from the peer-methods spec §1.
//
// fp16 emulation: every input is rounded to fp16 and every + - * / is computed in fp32 and
// rounded to fp16. fp32 carries more than 2*11 + 2 significand bits, so that is exactly the
// correctly rounded fp16 operation KIVI's fp16 tensors perform (no double-rounding error).
#include <algorithm>
#include <cmath>
#include <string>

#include "kvbits/eval.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

float h(float x) { return half_to_float(float_to_half(x)); }

void check_options(const KiviOptions& o, uint32_t dim) {
  auto bad = [](const std::string& m) { fail(StatusCode::invalid_argument, "kivi: " + m); };
  if (o.bits < 1 || o.bits > 8) bad("bits must be in [1, 8], got " + std::to_string(o.bits));
  if (o.group == 0) bad("group size must be >= 1");
  if (dim == 0) bad("head dim must be >= 1");
}

// Quantizes n values x[i * stride] of one group in place of out[i * stride].
void roundtrip_group(const float* x, float* out, size_t n, size_t stride, int bits) {
  float lo = h(x[0]), hi = lo;
  for (size_t i = 1; i < n; ++i) {
    const float v = h(x[i * stride]);
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  }
  const KiviGroup g = kivi_group(lo, hi, bits);
  for (size_t i = 0; i < n; ++i) out[i * stride] = kivi_decode(kivi_encode(x[i * stride], g, bits), g);
}

void check_finite(const float* x, size_t n, const char* what) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i]))
      fail(StatusCode::invalid_argument, std::string("kivi: non-finite ") + what + " at element " + std::to_string(i));
}

// Tokens that are quantized (the rest form the fp16 residual).
size_t quantized_tokens(size_t n_tokens, const KiviOptions& o) {
  return n_tokens > o.residual ? n_tokens - o.residual : 0;
}

}  // namespace

KiviGroup kivi_group(float lo, float hi, int bits) {
  if (bits < 1 || bits > 8) fail(StatusCode::invalid_argument, "kivi: bits must be in [1, 8], got " + std::to_string(bits));
  if (!std::isfinite(lo) || !std::isfinite(hi) || lo > hi)
    fail(StatusCode::invalid_argument, "kivi: group bounds must be finite with min <= max");
  KiviGroup g;
  g.min = h(lo);
  const float levels = float((1u << bits) - 1u);
  g.scale = h(h(h(hi) - g.min) / levels);
  return g;
}

uint32_t kivi_encode(float x, const KiviGroup& g, int bits) {
  if (g.scale == 0.0f) return 0;  // max == min: 0/0 in KIVI, which casts to code 0
  const float levels = float((1u << bits) - 1u);
  const float r = std::nearbyint(h(h(h(x) - g.min) / g.scale));  // default mode: half to even
  return uint32_t(std::clamp(r, 0.0f, levels));
}

float kivi_decode(uint32_t code, const KiviGroup& g) { return h(h(float(code) * g.scale) + g.min); }

void kivi_roundtrip_keys(const float* k, size_t n_tokens, uint32_t dim, const KiviOptions& o, float* k_hat) {
  check_options(o, dim);
  check_finite(k, n_tokens * dim, "key");
  const size_t nq = quantized_tokens(n_tokens, o);
  for (size_t t0 = 0; t0 < nq; t0 += o.group) {
    const size_t n = std::min<size_t>(o.group, nq - t0);
    for (uint32_t c = 0; c < dim; ++c)  // per channel over the group's tokens
      roundtrip_group(k + t0 * dim + c, k_hat + t0 * dim + c, n, dim, o.bits);
  }
  for (size_t i = nq * dim; i < n_tokens * dim; ++i) k_hat[i] = h(k[i]);
}

void kivi_roundtrip_values(const float* v, size_t n_tokens, uint32_t dim, const KiviOptions& o, float* v_hat) {
  check_options(o, dim);
  check_finite(v, n_tokens * dim, "value");
  const size_t nq = quantized_tokens(n_tokens, o);
  const uint32_t width = std::min(o.group, dim);
  for (size_t t = 0; t < nq; ++t)
    for (uint32_t c0 = 0; c0 < dim; c0 += width)  // per token over groups of channels
      roundtrip_group(v + t * dim + c0, v_hat + t * dim + c0, std::min(width, dim - c0), 1, o.bits);
  for (size_t i = nq * dim; i < n_tokens * dim; ++i) v_hat[i] = h(v[i]);
}

double kivi_key_bytes_per_token(uint32_t dim, const KiviOptions& o, uint32_t seq_tokens) {
  check_options(o, dim);
  const double r = std::min<double>(o.residual, seq_tokens) / double(std::max(seq_tokens, 1u));
  const double quantized = dim * o.bits / 8.0 + 4.0 * dim / double(o.group);
  return (1.0 - r) * quantized + r * 2.0 * dim;
}

double kivi_value_bytes_per_token(uint32_t dim, const KiviOptions& o, uint32_t seq_tokens) {
  check_options(o, dim);
  const double r = std::min<double>(o.residual, seq_tokens) / double(std::max(seq_tokens, 1u));
  const double groups = std::ceil(double(dim) / double(std::min(o.group, dim)));
  const double quantized = dim * o.bits / 8.0 + 4.0 * groups;
  return (1.0 - r) * quantized + r * 2.0 * dim;
}

}  // namespace kvbits::eval
