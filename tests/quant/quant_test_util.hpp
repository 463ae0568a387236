// Small helpers shared by the quantizer tests: codebook tables, hand-made orthogonal matrices,
// a fixed pseudo-random source.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "kvbits/codebook.hpp"

namespace kvbits::testing {

// unit_codebooks[bits] for every width 1..8 (index 0 empty), as TqQuantizer expects.
inline std::vector<std::vector<double>> all_unit_codebooks(CodebookRecipe recipe) {
  std::vector<std::vector<double>> books(kMaxCodeBits + 1);
  for (int b = kMinCodeBits; b <= kMaxCodeBits; ++b) books[size_t(b)] = unit_gaussian_codebook(b, recipe);
  return books;
}

inline std::vector<float> identity_matrix(uint32_t d) {
  std::vector<float> m(size_t(d) * d, 0.0f);
  for (uint32_t i = 0; i < d; ++i) m[size_t(i) * d + i] = 1.0f;
  return m;
}

// Householder reflection I - 2 v v^T / (v^T v), computed in fp64 and rounded to fp32.
inline std::vector<float> householder(const std::vector<double>& v) {
  const size_t d = v.size();
  double vv = 0.0;
  for (double e : v) vv += e * e;
  std::vector<float> m(d * d);
  for (size_t i = 0; i < d; ++i)
    for (size_t j = 0; j < d; ++j) m[i * d + j] = float((i == j ? 1.0 : 0.0) - 2.0 * v[i] * v[j] / vv);
  return m;
}

// Deterministic generator for test inputs (LCG + Box-Muller); not used for goldens.
struct TestRng {
  uint64_t state;
  explicit TestRng(uint64_t seed) : state(seed * 2862933555777941757ull + 3037000493ull) {}
  double uniform() {  // (0, 1)
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    return (double(state >> 11) + 0.5) / 9007199254740992.0;
  }
  double gauss() {
    const double r = std::sqrt(-2.0 * std::log(uniform()));
    return r * std::cos(6.283185307179586 * uniform());
  }
  std::vector<float> gauss_vector(size_t n, double sigma = 1.0) {
    std::vector<float> x(n);
    for (auto& e : x) e = float(sigma * gauss());
    return x;
  }
};

inline double dot(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0.0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * double(b[i]);
  return s;
}

}  // namespace kvbits::testing
