// kvbits CUDA — decode over fp16 rows, for one CTA of 128 threads: the fp16 sink and ring rows of
// a quantized layer (its extra splits) and every row of a layer kept at 16 bits. The logits are
// q . k with the unrotated query, V accumulates in the original basis; the partial (acc, m, l)
// has the layout of the packed splits, so the merge treats both alike (no R_v^T for these).
//
// Per tile of 128 rows: thread r dots row r with every query head (fp32 FMAs over 16-byte row
// loads), block max and p = exp(s - m) as in the scalar kernel, then thread (4 dims, row slice)
// accumulates p * v. Rows are read straight from global memory: these splits hold few tokens
// (sink + window) or an fp16 layer, not the packed hot path.
#pragma once

#include "cuda/decode_common.cuh"

namespace kvbits::cuda::decode_detail {

// Shared memory of plain_split, from its base: q [D][GQ], p [128][GQ], red [GQ][D], V row
// pointers [128], warp maxima [4][GQ], running max [2][GQ], correction [GQ], l [GQ].
__host__ __device__ inline uint32_t plain_smem_bytes(uint32_t D, uint32_t gq) {
  return D * gq * 4 + kCtaThreads * gq * 4 + gq * D * 4 + kCtaThreads * 8 + 8 * gq * 4;
}

// Row u of the plain token range of (sequence, KV head h): an fp16 page row (pages) or sink /
// ring row u. Returns false for a row that holds no token of the sequence.
__device__ __forceinline__ bool plain_row(const KernelArgs& a, const DecodeHead& hd, const SeqInfo& si,
                                          const uint32_t* table, const uint16_t* block, uint32_t h, bool pages,
                                          uint32_t u, const uint16_t*& k, const uint16_t*& v) {
  const uint32_t D = a.D;
  if (pages) {
    if (u >= si.n_packed) return false;
    const uint8_t* page = hd.pool + size_t(table[u / a.page_size]) * hd.page_bytes;
    const uint32_t row = u % a.page_size;
    k = reinterpret_cast<const uint16_t*>(page) + size_t(row) * D;
    v = reinterpret_cast<const uint16_t*>(page + hd.v_codes) + size_t(row) * D;
    return true;
  }
  const uint32_t S = a.sink, W = a.window, H = a.n_kv;
  if (u < S) {
    if (u >= si.sink) return false;
    k = block + (size_t(h) * S + u) * D;
    v = block + (size_t(H) * S + size_t(h) * S + u) * D;
    return true;
  }
  const uint32_t r = u - S, n_ring = si.len - si.qend;
  if (n_ring == 0 || r >= W) return false;
  const uint32_t r0 = (si.qend - S) % W;  // ring row of token qend (qend >= S when the ring is not empty)
  if ((r + W - r0) % W >= n_ring) return false;
  const size_t ring = 2 * size_t(H) * S * D;
  k = block + ring + (size_t(h) * W + r) * D;
  v = block + ring + (size_t(H) * W + size_t(h) * W + r) * D;
  return true;
}

// One split over plain rows [u_begin, u_end); writes partial `split` of the GQA group's rows.
// Needs the raw query (a.q) and plain_smem_bytes(D, GQ) bytes at smem.
template <int GQ>
__device__ void plain_split(const KernelArgs& a, const DecodeHead& hd, const SeqInfo& si, uint32_t seq, uint32_t h,
                            uint32_t split, bool pages, uint32_t u_begin, uint32_t u_end, uint8_t* smem) {
  const uint32_t D = a.D, tid = threadIdx.x;
  float* qp = reinterpret_cast<float*>(smem);
  float* ps = qp + D * GQ;
  float* red = ps + kCtaThreads * GQ;
  const uint16_t** vptr = reinterpret_cast<const uint16_t**>(red + GQ * D);
  float* wmax = reinterpret_cast<float*>(vptr + kCtaThreads);
  float* mrun = wmax + 4 * GQ;
  float* corr = mrun + 2 * GQ;
  float* lred = corr + GQ;

  const size_t row0 = size_t(seq) * a.n_q + size_t(h) * a.gqa;
  for (uint32_t idx = tid; idx < D * GQ; idx += kCtaThreads) {
    const uint32_t i = idx / D, d = idx % D;
    qp[d * GQ + i] = i < a.gqa ? load_q(a.q, a.q_dtype, (row0 + i) * D + d) : 0.0f;
  }
  if (tid < GQ) mrun[tid] = -INFINITY;
  const uint32_t* table = a.page_table + a.table_offset[seq];
  const uint16_t* block = pages ? nullptr : a.fp16_blocks[seq];

  const uint32_t n_quads = D / 4, n_slices = kCtaThreads / n_quads;
  const uint32_t quad = tid % n_quads, slice = tid / n_quads;
  const bool v_active = slice < n_slices;
  float vacc[4][GQ], lsum[GQ];
#pragma unroll
  for (int i = 0; i < GQ; ++i) {
    lsum[i] = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) vacc[k][i] = 0.0f;
  }
  const uint32_t lane = tid & 31u, warp = tid >> 5;
  uint32_t step = 0;
  for (uint32_t base = u_begin; base < u_end; base += kCtaThreads, ++step) {
    __syncthreads();  // q and mrun written (first step); the previous step's readers are done
    const uint16_t *kr = nullptr, *vr = nullptr;
    const uint32_t u = base + tid;
    const bool valid = u < u_end && plain_row(a, hd, si, table, block, h, pages, u, kr, vr);
    vptr[tid] = valid ? vr : nullptr;
    float s[GQ];
    if (valid) {
      float acc[GQ];
#pragma unroll
      for (int i = 0; i < GQ; ++i) acc[i] = 0.0f;
      // The row from global memory, eight 16-byte loads in flight per batch.
      for (uint32_t d0 = 0; d0 < D; d0 += 64) {
        uint4 raw[8];
#pragma unroll
        for (uint32_t u = 0; u < 8; ++u)
          raw[u] = d0 + 8 * u < D ? *reinterpret_cast<const uint4*>(kr + d0 + 8 * u) : make_uint4(0, 0, 0, 0);
#pragma unroll
        for (uint32_t u = 0; u < 8; ++u) {
          if (d0 + 8 * u >= D) break;
          const uint32_t w[4] = {raw[u].x, raw[u].y, raw[u].z, raw[u].w};
#pragma unroll
          for (int k = 0; k < 8; ++k) {
            const float x = __half2float(__ushort_as_half(uint16_t(w[k / 2] >> (16 * (k & 1)))));
            float qv[GQ];
            load_row<GQ>(qp + (d0 + 8 * u + k) * GQ, qv);
#pragma unroll
            for (int i = 0; i < GQ; ++i) acc[i] = __fmaf_rn(qv[i], x, acc[i]);
          }
        }
      }
#pragma unroll
      for (int i = 0; i < GQ; ++i) s[i] = a.scale * acc[i];
    } else {
#pragma unroll
      for (int i = 0; i < GQ; ++i) s[i] = -INFINITY;
    }
#pragma unroll
    for (int i = 0; i < GQ; ++i) {
      float m = s[i];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
      if (lane == 0) wmax[warp * GQ + i] = m;
    }
    __syncthreads();
    const uint32_t par = step & 1u;
#pragma unroll
    for (int i = 0; i < GQ; ++i) {
      const float mo = mrun[par * GQ + i];
      float mn = mo;
      for (uint32_t w = 0; w < kCtaThreads / 32; ++w) mn = fmaxf(mn, wmax[w * GQ + i]);
      ps[tid * GQ + i] = valid ? expf(s[i] - mn) : 0.0f;
      if (tid == 0) {
        mrun[(par ^ 1u) * GQ + i] = mn;
        corr[i] = mn == -INFINITY ? 1.0f : expf(mo - mn);
      }
    }
    __syncthreads();
    if (v_active) {
      float c[GQ];
      load_row<GQ>(corr, c);
#pragma unroll
      for (int i = 0; i < GQ; ++i) {
        lsum[i] *= c[i];
#pragma unroll
        for (int k = 0; k < 4; ++k) vacc[k][i] *= c[i];
      }
      // Eight rows' loads in flight per batch (rows without a token have a null pointer).
      for (uint32_t r0 = slice; r0 < kCtaThreads; r0 += 8 * n_slices) {
        uint2 raw[8];
#pragma unroll
        for (uint32_t u = 0; u < 8; ++u) {
          const uint32_t r = r0 + u * n_slices;
          const uint16_t* vrow = r < kCtaThreads ? vptr[r] : nullptr;
          raw[u] = vrow ? *reinterpret_cast<const uint2*>(vrow + quad * 4) : make_uint2(0, 0);
        }
#pragma unroll
        for (uint32_t u = 0; u < 8; ++u) {
          const uint32_t r = r0 + u * n_slices;
          if (r >= kCtaThreads || !vptr[r]) continue;
          const float y[4] = {__half2float(__ushort_as_half(uint16_t(raw[u].x))),
                              __half2float(__ushort_as_half(uint16_t(raw[u].x >> 16))),
                              __half2float(__ushort_as_half(uint16_t(raw[u].y))),
                              __half2float(__ushort_as_half(uint16_t(raw[u].y >> 16)))};
          float pr[GQ];
          load_row<GQ>(ps + r * GQ, pr);
#pragma unroll
          for (int i = 0; i < GQ; ++i) {
            lsum[i] += pr[i];
#pragma unroll
            for (int k = 0; k < 4; ++k) vacc[k][i] = __fmaf_rn(pr[i], y[k], vacc[k][i]);
          }
        }
      }
    }
  }
  // Row slices combined in a fixed order (deterministic), then the partial.
  __syncthreads();
  for (uint32_t sl = 0; sl < n_slices; ++sl) {
    if (v_active && slice == sl) {
#pragma unroll
      for (int i = 0; i < GQ; ++i) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          float& dst = red[i * D + quad * 4 + k];
          dst = sl == 0 ? vacc[k][i] : dst + vacc[k][i];
        }
        if (quad == 0) lred[i] = sl == 0 ? lsum[i] : lred[i] + lsum[i];
      }
    }
    __syncthreads();
  }
  const size_t r0 = partial_row(a, seq, h, 0);
  for (uint32_t idx = tid; idx < a.gqa * D; idx += kCtaThreads) {
    const uint32_t i = idx / D, d = idx % D;
    a.ws_acc[((r0 + i) * a.splits + split) * D + d] = red[i * D + d];
  }
  if (tid < a.gqa) {
    float* ml = a.ws_ml + ((r0 + tid) * a.splits + split) * 2;
    ml[0] = mrun[(step & 1u) * GQ + tid];
    ml[1] = lred[tid];
  }
}

}  // namespace kvbits::cuda::decode_detail
