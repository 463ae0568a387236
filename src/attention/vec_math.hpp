// Small fp32 vector kernels with a fixed summation order: results never depend on threads or
// on instruction scheduling (the build disables FMA contraction, and GCC/Clang vector
// extensions do lane-wise IEEE operations, exactly the scalar ones).
#pragma once

#include <cstdint>
#include <cstring>

namespace kvbits::attn {

// Four fp32 lanes: SSE on x86-64, NEON on AArch64, scalar code elsewhere.
typedef float f32x4 __attribute__((vector_size(16)));

inline f32x4 load4(const float* p) {
  f32x4 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store4(float* p, f32x4 v) { std::memcpy(p, &v, sizeof v); }

// sum_i a[i] * b[i] in eight interleaved partial sums (lane k takes i = k mod 8), combined
// pairwise as ((l0+l4)+(l1+l5)) + ((l2+l6)+(l3+l7)), then the tail in order.
inline float dot(const float* a, const float* b, uint32_t n) {
  f32x4 lo = {0.f, 0.f, 0.f, 0.f}, hi = lo;
  uint32_t i = 0;
  for (; i + 8 <= n; i += 8) {
    lo += load4(a + i) * load4(b + i);
    hi += load4(a + i + 4) * load4(b + i + 4);
  }
  const f32x4 h = lo + hi;  // lanes (l0+l4, l1+l5, l2+l6, l3+l7)
  float s = (h[0] + h[1]) + (h[2] + h[3]);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// y[i] += a * x[i]
inline void axpy(float* y, float a, const float* x, uint32_t n) {
  const f32x4 av = {a, a, a, a};
  uint32_t i = 0;
  for (; i + 4 <= n; i += 4) store4(y + i, load4(y + i) + av * load4(x + i));
  for (; i < n; ++i) y[i] += a * x[i];
}

// y[i] *= a
inline void scale_in_place(float* y, float a, uint32_t n) {
  for (uint32_t i = 0; i < n; ++i) y[i] *= a;
}

}  // namespace kvbits::attn
