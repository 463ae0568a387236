// kvbits — the one fp64 summation order of the encoder (docs/cache-layout.md §3), shared by the
// CPU encoder (src/quant/tq_mse.cpp) and the CUDA kernels (cuda/append_body.cuh, cuda/encode.cu),
// so that every backend adds the same terms in the same order and rounds them the same way.
//
// The canonical sum of terms t_0 .. t_{n-1} (fp64, each term exact: a product of two fp32 values
// or the square of one):
//   1. 32 lane partials: P_l = (((0 + t_l) + t_{l+32}) + t_{l+64}) + ...   (ascending, l = 0..31)
//   2. a pairwise tree: for s = 16, 8, 4, 2, 1 and every l < s: P_l = P_l + P_{l+s}
//   3. the sum is P_0.
// Lanes are independent chains of ceil(n/32) adds and the tree is 5 levels deep, so a sum of 128
// terms is 9 dependent adds instead of 128 (32-wide ILP on a GPU thread, SIMD on a CPU). Only the
// order fixes the value; fusing a product into its add (FMA) does not change it, since every
// term is exact in fp64.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define KVB_SUM_HD __host__ __device__ inline
#define KVB_SUM_HD_FORCE __host__ __device__ __forceinline__
#else
#define KVB_SUM_HD inline
#define KVB_SUM_HD_FORCE inline __attribute__((always_inline))
#endif
#if defined(__CUDA_ARCH__)
#define KVB_SUM_UNROLL _Pragma("unroll")
#else
#define KVB_SUM_UNROLL
#endif

namespace kvbits {

constexpr uint32_t kSumLanes = 32;

// One level of the tree: P_l = P_l + P_{l+S} for l < S. Lanes at or past `live` hold +0 (never
// -0: a lane starts at +0 and a round-to-nearest sum is -0 only when both operands are), so
// adding them is the identity and is skipped.
template <uint32_t S>
KVB_SUM_HD_FORCE void canonical_sum_level(double* p, uint32_t& live) {
  const uint32_t k = live > S ? live - S : 0;  // lanes l < k have a live partner l + S
#if defined(__CUDA_ARCH__)
  KVB_SUM_UNROLL
  for (uint32_t l = 0; l < S; ++l)  // static indices: the partials stay in registers
    if (l < k) p[l] = p[l] + p[l + S];
#else
  for (uint32_t l = 0; l < k; ++l) p[l] = p[l] + p[l + S];
#endif
  if (live > S) live = S;
}

// Steps 2 and 3 on the 32 lane partials of an n-term sum (p is overwritten). Constant strides, so
// that a GPU keeps the partials in registers.
KVB_SUM_HD_FORCE double canonical_sum_finish(double* p, uint32_t n) {
  static_assert(kSumLanes == 32, "the tree below has five levels");
  uint32_t live = n < kSumLanes ? n : kSumLanes;
  canonical_sum_level<16>(p, live);
  canonical_sum_level<8>(p, live);
  canonical_sum_level<4>(p, live);
  canonical_sum_level<2>(p, live);
  canonical_sum_level<1>(p, live);
  return p[0];
}

// The canonical sum of term(j), j = 0 .. n-1 (term returns the exact fp64 term). Lanes are
// independent, so they are computed eight at a time (fewer operands in flight on a GPU thread);
// each lane still adds its terms in ascending order.
template <class Term>
KVB_SUM_HD double canonical_sum(uint32_t n, const Term& term) {
  constexpr uint32_t kGroup = 8;
  double p[kSumLanes];
  KVB_SUM_UNROLL
  for (uint32_t l = 0; l < kSumLanes; ++l) p[l] = 0.0;
  KVB_SUM_UNROLL
  for (uint32_t g = 0; g < kSumLanes; g += kGroup) {
    for (uint32_t j0 = g; j0 < n; j0 += kSumLanes) {
      KVB_SUM_UNROLL
      for (uint32_t l = 0; l < kGroup; ++l)
        if (j0 + l < n) p[g + l] = p[g + l] + term(j0 + l);
    }
  }
  return canonical_sum_finish(p, n);
}

// The same sum with the terms produced four at a time: quad(q, t) fills t[0..3] with the terms
// 4q .. 4q+3 (those at or past n are ignored). Lets a kernel read its operands as 16-byte vectors.
template <class Quad>
KVB_SUM_HD double canonical_sum_quads(uint32_t n, const Quad& quad) {
  double p[kSumLanes];
  KVB_SUM_UNROLL
  for (uint32_t l = 0; l < kSumLanes; ++l) p[l] = 0.0;
  for (uint32_t j0 = 0; j0 < n; j0 += kSumLanes) {
    KVB_SUM_UNROLL
    for (uint32_t q = 0; q < kSumLanes / 4; ++q) {
      if (j0 + 4 * q >= n) break;
      double t[4];
      quad((j0 >> 2) + q, t);
      KVB_SUM_UNROLL
      for (uint32_t c = 0; c < 4; ++c)
        if (j0 + 4 * q + c < n) p[4 * q + c] = p[4 * q + c] + t[c];
    }
  }
  return canonical_sum_finish(p, n);
}

}  // namespace kvbits

#undef KVB_SUM_HD
#undef KVB_SUM_HD_FORCE
#undef KVB_SUM_UNROLL
