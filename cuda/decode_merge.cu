// The merge launch: one CTA per (query head, sequence) combines the split partials by
// log-sum-exp and writes out = (R_v^T acc_rot + acc_plain) / L and lse = M + ln L, where acc_rot
// sums the packed splits (V's rotated basis) and acc_plain the fp16 splits (original basis; every
// split of an fp16 layer).
//
// Latency-bound (at batch 1 a few CTAs each read ~100 KB of partials): the CTA's rows of R_v are
// requested first, before anything they wait on; partials are read as 16-byte vectors, sixteen
// loads in flight per thread (all of a 256-split row in one round trip at D = 128); all sums
// run in a fixed order, so results are bit-identical from run to run.
#include <cuda_runtime.h>

#include "cuda/decode_kernels.hpp"

namespace kvbits::cuda::decode_detail {

namespace {

constexpr uint32_t kMergeMaxSplits = kMaxPackedSplits + kMaxFp16Splits;
constexpr uint32_t kPrefetchRows = 8;  // rows of R_v per thread requested up front (all at D = 128, 512 threads)
// Two shapes of the launch (KernelArgs::merge_wide): few rows (batch 1: 512 threads, 16 partial
// loads in flight per thread, all of a 256-split row in one round trip) and many rows (large
// batches: 128 threads, small enough that many CTAs share an SM while their R_v rows arrive).
// THREADS / IN_FLIGHT: threads, and partial loads per thread requested up front.

template <uint32_t THREADS>
__device__ __forceinline__ float block_reduce(float v, float* tmp, bool is_max) {
  // Fixed-order reduction over the block: warps by shuffles, then warp 0 over the warp results.
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = is_max ? fmaxf(v, o) : v + o;
  }
  if ((threadIdx.x & 31u) == 0) tmp[threadIdx.x >> 5] = v;
  __syncthreads();
  if (threadIdx.x < 32) {
    v = threadIdx.x < THREADS / 32 ? tmp[threadIdx.x] : (is_max ? -INFINITY : 0.0f);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      const float o = __shfl_xor_sync(0xffffffffu, v, off);
      v = is_max ? fmaxf(v, o) : v + o;
    }
    if (threadIdx.x == 0) tmp[32] = v;
  }
  __syncthreads();
  const float r = tmp[32];
  __syncthreads();  // tmp may be reused by the next call
  return r;
}

__device__ __forceinline__ void fma4(float4& acc, float w, const float4& x) {
  acc.x = __fmaf_rn(w, x.x, acc.x);
  acc.y = __fmaf_rn(w, x.y, acc.y);
  acc.z = __fmaf_rn(w, x.z, acc.z);
  acc.w = __fmaf_rn(w, x.w, acc.w);
}

template <uint32_t THREADS, uint32_t IN_FLIGHT>
__global__ void __launch_bounds__(THREADS) merge_kernel(KernelArgs a) {
  __shared__ float wsplit[kMergeMaxSplits];
  __shared__ float4 part_rot[THREADS], part_plain[THREADS];
  __shared__ float vec_rot[kDecodeMaxHeadDim], vec_plain[kDecodeMaxHeadDim];
  __shared__ float tmp[33];
  const uint32_t qh = blockIdx.x, seq = blockIdx.y, tid = threadIdx.x, D = a.D, S = a.splits;
  const uint32_t n_rot = a.fp16_layer ? 0u : a.packed_splits;
  const size_t row = size_t(seq) * a.n_q + qh;
  // Thread (c4, rp): dims 4 c4 .. 4 c4 + 3; splits and R_v rows congruent to rp mod RP.
  const uint32_t C4 = D / 4, RP = THREADS / C4, c4 = tid % C4, rp = tid / C4;
  const bool active = rp < RP;
  const float* R = n_rot > 0 ? a.heads[qh / a.gqa].v_rotation : nullptr;
  float4 rpre[kPrefetchRows];
#pragma unroll
  for (uint32_t i = 0; i < kPrefetchRows; ++i) {
    const uint32_t r = rp + i * RP;
    rpre[i] = R && active && r < D ? *reinterpret_cast<const float4*>(R + size_t(r) * D + 4 * c4)
                                   : make_float4(0.f, 0.f, 0.f, 0.f);
  }

  pdl_wait();  // the decode launch's partials (the R_v rows above were requested before it ended)
  // The first IN_FLIGHT partials of this thread are requested before the (max, sum) pass: the
  // two round trips overlap.
  const float4* acc = reinterpret_cast<const float4*>(a.ws_acc + row * S * D);
  float4 x0[IN_FLIGHT];
#pragma unroll
  for (uint32_t u = 0; u < IN_FLIGHT; ++u)
    if (active && rp + u * RP < S) x0[u] = acc[size_t(rp + u * RP) * C4 + c4];
  const float* ml = a.ws_ml + row * S * 2;
  float m = -INFINITY;
  for (uint32_t k = tid; k < S; k += THREADS) m = fmaxf(m, ml[2 * k]);
  const float M = block_reduce<THREADS>(m, tmp, true);
  float l = 0.0f;
  for (uint32_t k = tid; k < S; k += THREADS) {
    const float mk = ml[2 * k];
    const float w = mk == -INFINITY ? 0.0f : expf(mk - M);  // empty split: weight 0, never 0 * NaN
    wsplit[k] = w;
    l += w * ml[2 * k + 1];
  }
  const float L = block_reduce<THREADS>(l, tmp, false);  // its barriers also publish wsplit

  float4 vr = make_float4(0.f, 0.f, 0.f, 0.f), vp = vr;
  if (active) {
#pragma unroll
    for (uint32_t u = 0; u < IN_FLIGHT; ++u) {
      const uint32_t k = rp + u * RP;
      if (k >= S) break;
      if (k < n_rot) fma4(vr, wsplit[k], x0[u]);
      else fma4(vp, wsplit[k], x0[u]);
    }
    // More than IN_FLIGHT splits per thread: the rest in batches of IN_FLIGHT loads.
    for (uint32_t k0 = rp + IN_FLIGHT * RP; k0 < S; k0 += IN_FLIGHT * RP) {
      float4 x[IN_FLIGHT];
#pragma unroll
      for (uint32_t u = 0; u < IN_FLIGHT; ++u)
        if (k0 + u * RP < S) x[u] = acc[size_t(k0 + u * RP) * C4 + c4];
#pragma unroll
      for (uint32_t u = 0; u < IN_FLIGHT; ++u) {
        const uint32_t k = k0 + u * RP;
        if (k >= S) break;
        if (k < n_rot) fma4(vr, wsplit[k], x[u]);
        else fma4(vp, wsplit[k], x[u]);
      }
    }
  }
  part_rot[tid] = vr;
  part_plain[tid] = vp;
  __syncthreads();
  if (tid < C4) {
    float4 sr = make_float4(0.f, 0.f, 0.f, 0.f), sp = sr;
    for (uint32_t q = 0; q < RP; ++q) {
      const float4 a4 = part_rot[q * C4 + tid], b4 = part_plain[q * C4 + tid];
      sr.x += a4.x, sr.y += a4.y, sr.z += a4.z, sr.w += a4.w;
      sp.x += b4.x, sp.y += b4.y, sp.z += b4.z, sp.w += b4.w;
    }
    vec_rot[4 * tid] = sr.x, vec_rot[4 * tid + 1] = sr.y, vec_rot[4 * tid + 2] = sr.z, vec_rot[4 * tid + 3] = sr.w;
    vec_plain[4 * tid] = sp.x, vec_plain[4 * tid + 1] = sp.y, vec_plain[4 * tid + 2] = sp.z,
                    vec_plain[4 * tid + 3] = sp.w;
  }
  __syncthreads();
  // out[d] = sum_r R[r][d] vec_rot[r] (rows r = rp mod RP here), then + vec_plain[d].
  float4 o = make_float4(0.f, 0.f, 0.f, 0.f);
  if (R && active) {
#pragma unroll
    for (uint32_t i = 0; i < kPrefetchRows; ++i) {
      const uint32_t r = rp + i * RP;
      if (r < D) fma4(o, vec_rot[r], rpre[i]);
    }
    for (uint32_t r = rp + kPrefetchRows * RP; r < D; r += RP)
      fma4(o, vec_rot[r], *reinterpret_cast<const float4*>(R + size_t(r) * D + 4 * c4));
  }
  part_rot[tid] = o;
  __syncthreads();
  if (tid < C4) {
    float4 t = make_float4(0.f, 0.f, 0.f, 0.f);
    for (uint32_t q = 0; q < RP; ++q) {
      const float4 a4 = part_rot[q * C4 + tid];
      t.x += a4.x, t.y += a4.y, t.z += a4.z, t.w += a4.w;
    }
    const float r[4] = {t.x + vec_plain[4 * tid], t.y + vec_plain[4 * tid + 1], t.z + vec_plain[4 * tid + 2],
                        t.w + vec_plain[4 * tid + 3]};
    float* out = a.out + row * D + 4 * tid;
#pragma unroll
    for (int k = 0; k < 4; ++k) out[k] = L > 0.0f ? r[k] / L : 0.0f;
  }
  if (a.lse && tid == 0) a.lse[row] = L > 0.0f ? M + logf(L) : -INFINITY;
}

}  // namespace

void launch_merge(const KernelArgs& a, uint32_t n_seqs, cudaStream_t stream) {
  const dim3 grid(a.n_q, n_seqs);
  if (a.merge_wide) check(launch_pdl(merge_kernel<512, 16>, grid, dim3(512), 0, stream, a), "merge_kernel launch");
  else check(launch_pdl(merge_kernel<128, 4>, grid, dim3(128), 0, stream, a), "merge_kernel launch");
}

}  // namespace kvbits::cuda::decode_detail
