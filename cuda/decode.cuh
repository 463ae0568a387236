// kvbits CUDA — device helpers and the shared-memory plan of the decode kernel (decode.cu).
#pragma once

#include <cstdint>

#include "cuda/decode.hpp"

namespace kvbits::cuda::decode_detail {

constexpr uint32_t kThreads = 128;  // one thread per token row of a step in the K phase
constexpr uint32_t kSubRows = 64;   // rows of a sub-tile (never crosses a page)
constexpr uint32_t kStepRows = 2 * kSubRows;

__host__ __device__ constexpr uint32_t round16(uint32_t x) { return (x + 15u) & ~15u; }

// Where one sub-tile's four arrays sit in a shared-memory stage. A sub-tile holds 64 tokens as
// 64 / seg_rows segments (one per page when pages are shorter than 64 tokens); each segment's
// array starts on 16 bytes so that it can be filled with 16-byte cp.async.
struct SubTileLayout {
  uint32_t seg_rows, seg_shift;          // rows per segment (power of two) and its log2
  uint32_t kc_seg, ks_seg, vc_seg, vs_seg;  // bytes per segment of each array
  uint32_t off_ks, off_vc, off_vs;       // array offsets (K codes at 0)
  uint32_t bytes;                        // whole sub-tile, plus 16 bytes of over-read pad
};

__host__ __device__ inline SubTileLayout sub_tile_layout(uint32_t page_size, uint32_t kc, uint32_t n_groups,
                                                        uint32_t vc) {
  SubTileLayout s{};
  s.seg_rows = page_size < kSubRows ? page_size : kSubRows;
  s.seg_shift = 0;
  while ((1u << s.seg_shift) < s.seg_rows) ++s.seg_shift;
  const uint32_t nseg = kSubRows >> s.seg_shift;
  s.kc_seg = round16(s.seg_rows * kc);
  s.ks_seg = round16(s.seg_rows * 2 * n_groups);
  s.vc_seg = round16(s.seg_rows * vc);
  s.vs_seg = round16(s.seg_rows * 2);
  s.off_ks = nseg * s.kc_seg;
  s.off_vc = s.off_ks + nseg * s.ks_seg;
  s.off_vs = s.off_vc + nseg * s.vc_seg;
  s.bytes = s.off_vs + nseg * s.vs_seg + 16;
  return s;
}

// Dynamic shared memory of one CTA of the scalar kernel, in bytes from the base:
//   [0, stage_region)   `stages` stages of two sub-tiles; reused at the end for the split's
//                       cross-slice reduction red[GQ][D]
//   q'  [D][GQ] fp32, p [128][GQ] fp32, centroids [768] fp32,
//   warp maxima [4][GQ], running max [2][GQ], correction [GQ], l [GQ],
//   query staging [D][GQ] fp32 (hp-ordered raw queries while they are rotated)
struct SmemPlan {
  uint32_t stage_stride, stages, stage_region;
  uint32_t off_q, off_p, off_cent, off_wmax, off_mrun, off_corr, off_l, off_qstage, total;
};

__host__ __device__ inline SmemPlan smem_plan(uint32_t stage_stride, uint32_t stages, uint32_t D, uint32_t gq) {
  SmemPlan p{};
  p.stage_stride = stage_stride;
  p.stages = stages;
  const uint32_t red = D * gq * 4;
  p.stage_region = round16(stages * stage_stride > red ? stages * stage_stride : red);
  p.off_q = p.stage_region;
  p.off_p = p.off_q + D * gq * 4;
  p.off_cent = p.off_p + kStepRows * gq * 4;
  p.off_wmax = p.off_cent + kDecodeMaxCentroids * 4;
  p.off_mrun = p.off_wmax + (kThreads / 32) * gq * 4;
  p.off_corr = p.off_mrun + 2 * gq * 4;
  p.off_l = p.off_corr + gq * 4;
  p.off_qstage = round16(p.off_l + gq * 4);
  p.total = p.off_qstage + D * gq * 4;
  return p;
}

#ifdef __CUDACC__

// 16-byte asynchronous global -> shared copy (sm_80+), L1 bypassed: each byte is read once.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem) {
  const uint32_t s = uint32_t(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// 32 bits of an LSB-first bit stream in shared memory, starting at stream bit `bit`. Reads two
// aligned words, so rows at any byte offset are safe; the caller keeps one word of slack after
// the last byte it needs and masks off the bits past its codes.
__device__ __forceinline__ uint32_t bits32(const uint32_t* words, uint32_t bit) {
  const uint32_t w = bit >> 5;
  return __funnelshift_r(words[w], words[w + 1], bit);  // shf.r.wrap: the shift is taken mod 32
}

// GQ consecutive floats from shared memory, vectorised where the alignment allows.
template <int GQ>
__device__ __forceinline__ void load_row(const float* p, float (&v)[GQ]) {
  if constexpr (GQ % 4 == 0) {
#pragma unroll
    for (int k = 0; k < GQ / 4; ++k) {
      const float4 t = reinterpret_cast<const float4*>(p)[k];
      v[4 * k] = t.x, v[4 * k + 1] = t.y, v[4 * k + 2] = t.z, v[4 * k + 3] = t.w;
    }
  } else if constexpr (GQ == 2) {
    const float2 t = *reinterpret_cast<const float2*>(p);
    v[0] = t.x, v[1] = t.y;
  } else {
#pragma unroll
    for (int k = 0; k < GQ; ++k) v[k] = p[k];
  }
}

#endif  // __CUDACC__

}  // namespace kvbits::cuda::decode_detail
