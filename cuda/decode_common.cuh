// kvbits CUDA — device code shared by the decode kernels: the head descriptor in shared memory,
// a sequence's token ranges, query loading and rotation, and the writing of split partials.
// Every kernel runs 128 threads per CTA.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/decode.cuh"
#include "cuda/decode_kernels.hpp"

namespace kvbits::cuda::decode_detail {

constexpr uint32_t kCtaThreads = 128;

// Token ranges of one (sequence, layer): sink rows [0, sink), packed rows [0, n_packed) (token
// sink + u is packed row u), ring tokens [qend, len).
struct SeqInfo {
  uint32_t len, qend, sink, n_packed;
};

__device__ __forceinline__ SeqInfo seq_info(const KernelArgs& a, uint32_t seq) {
  SeqInfo s;
  s.len = a.seq_len[seq];
  s.qend = a.seq_qend ? a.seq_qend[seq] : s.len;
  s.sink = min(s.len, a.sink);
  s.n_packed = s.qend > s.sink ? s.qend - s.sink : 0u;
  return s;
}

// DecodeHead has default member initialisers, which __shared__ objects may not have: the kernels
// keep it as raw words and copy it in with this (the caller synchronises).
constexpr uint32_t kHeadWords = sizeof(DecodeHead) / 4;
static_assert(sizeof(DecodeHead) % 4 == 0, "DecodeHead is copied as words");

__device__ __forceinline__ void load_head(uint32_t* dst, const DecodeHead* src) {
  for (uint32_t k = threadIdx.x; k < kHeadWords; k += blockDim.x) dst[k] = reinterpret_cast<const uint32_t*>(src)[k];
}

// Element idx of the caller's query tensor, widened exactly to fp32 (0 = f32, 1 = f16, 2 = bf16).
__device__ __forceinline__ float load_q(const void* q, uint32_t dtype, size_t idx) {
  if (dtype == 0) return static_cast<const float*>(q)[idx];
  const uint16_t bits = static_cast<const uint16_t*>(q)[idx];
  if (dtype == 1) return __half2float(__ushort_as_half(bits));
  return __uint_as_float(uint32_t(bits) << 16);
}

// q' of the GQA group of KV head h in the K groups' rotated basis, hp slot order:
// out[s * s_stride + i * i_stride] = q'_i[s] for i < GQP (zero past gqa). A raw query (a.q) is
// rotated here, q'_g = R_g q_g with q_g gathered by k_slot_dim, fp32 sums in ascending j (the
// CPU rotates in fp64; the difference is ~1e-7 relative). `stage` holds D * GQP floats. Ends
// with a barrier.
template <int GQP>
__device__ void rotated_queries(const KernelArgs& a, const DecodeHead& hd, uint32_t seq, uint32_t h, float* stage,
                                float* out, uint32_t s_stride, uint32_t i_stride) {
  const uint32_t D = a.D, tid = threadIdx.x;
  const size_t row0 = size_t(seq) * a.n_q + size_t(h) * a.gqa;
  if (!a.q) {
    for (uint32_t idx = tid; idx < D * GQP; idx += blockDim.x) {
      const uint32_t i = idx / D, s = idx % D;
      out[s * s_stride + i * i_stride] = i < a.gqa ? a.q_rot[(row0 + i) * D + s] : 0.0f;
    }
    __syncthreads();
    return;
  }
  // stage[s][i] = q_i[slot_dim[s]]: the hp-ordered queries, GQP consecutive floats per slot.
  for (uint32_t idx = tid; idx < D * GQP; idx += blockDim.x) {
    const uint32_t i = idx / D, s = idx % D;
    stage[s * GQP + i] = i < a.gqa ? load_q(a.q, a.q_dtype, (row0 + i) * D + hd.k_slot_dim[s]) : 0.0f;
  }
  __syncthreads();
  for (uint32_t s = tid; s < D; s += blockDim.x) {
    uint32_t g = 0, roff = 0;
    while (g + 1 < hd.n_k_groups && s >= hd.k_groups[g + 1].first_slot) {
      roff += hd.k_groups[g].dims * hd.k_groups[g].dims;
      ++g;
    }
    const uint32_t first = hd.k_groups[g].first_slot, d = hd.k_groups[g].dims;
    const float2* R = reinterpret_cast<const float2*>(hd.k_rotation + roff + size_t(s - first) * d);
    float acc[GQP];
#pragma unroll
    for (int i = 0; i < GQP; ++i) acc[i] = 0.0f;
    // Row s of R_g from global memory (L2), sixteen 8-byte loads in flight per batch (a Block-GTQ
    // group row of <= 32 dims in one round trip); dims are even, so rows are 8-byte aligned.
    for (uint32_t j0 = 0; j0 < d; j0 += 32) {
      float2 r[16];
#pragma unroll
      for (uint32_t u = 0; u < 16; ++u) r[u] = j0 + 2 * u < d ? R[j0 / 2 + u] : make_float2(0.0f, 0.0f);
#pragma unroll
      for (uint32_t u = 0; u < 16; ++u) {
        if (j0 + 2 * u >= d) break;
        float q0[GQP], q1[GQP];
        load_row<GQP>(stage + (first + j0 + 2 * u) * GQP, q0);
        load_row<GQP>(stage + (first + j0 + 2 * u + 1) * GQP, q1);
#pragma unroll
        for (int i = 0; i < GQP; ++i) acc[i] = __fmaf_rn(r[u].y, q1[i], __fmaf_rn(r[u].x, q0[i], acc[i]));
      }
    }
#pragma unroll
    for (int i = 0; i < GQP; ++i) out[s * s_stride + i * i_stride] = acc[i];
  }
  __syncthreads();
}

// Stores a CTA's un-normalised partial of query head (h * gqa + i): acc (D floats, stride 1),
// running max m and sum l, as split `split` of that row.
__device__ __forceinline__ size_t partial_row(const KernelArgs& a, uint32_t seq, uint32_t h, uint32_t i) {
  return size_t(seq) * a.n_q + size_t(h) * a.gqa + i;
}

}  // namespace kvbits::cuda::decode_detail
