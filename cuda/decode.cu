// Fused decode attention on the packed paged cache (docs/gpu-decode.md).
//
// Decode launch: grid (split, KV head, sequence), 128 threads. A CTA owns a contiguous range of
// 64-token sub-tiles of one (sequence, KV head) and all the GQA query heads of that KV head.
// It streams steps of two sub-tiles (128 tokens) through a 2-3 deep cp.async pipeline of
// shared-memory stages, so several steps of page bytes are in flight per CTA. Per step:
//   K phase  thread r takes token row r: unpacks its K codes group by group straight from the
//            bit stream in shared memory (aligned 32-bit words + funnel shift, four codes per
//            extraction), looks the centroids up in shared memory, scales by the fp16 group
//            scale and dots with q' of every query head (q' broadcast from shared memory).
//   softmax  block max per query, running max and rescale factor, p = exp(s - m) to smem.
//   V phase  thread (quad of 4 dims, row slice) accumulates p * (scale * centroid) for every
//            query head in registers, in V's rotated basis.
// The CTA writes an un-normalised partial (acc, m, l) per query head. The merge launch (one CTA
// per (sequence, query head)) combines the splits by log-sum-exp, skipping empty splits, and
// applies R_v^T once per output.
//
// Byte floor: every packed byte of the batch is read exactly once, i.e.
//   sum over (sequence, KV head) of len * (k_code_bytes + 2 * n_k_groups + v_code_bytes + 2)
// (≈ 112 B per token and head at Block-GTQ K3V3, D = 128), plus q', the page table and the
// centroids (negligible), plus the split partials (n_q * splits * (D + 2) * 4 B written and
// read once). At long contexts the time floor is that over the device's copy bandwidth.
//
// Numerics: fp32 throughout, one FMA per (query, dim); logits scaled as the CPU reference
// (scale * dot), ŷ = half(scale) * centroid as one fp32 product. The summation order differs
// from the CPU reference (docs/attention.md), hence the 1e-4 relative tolerance in the tests.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "cuda/decode.cuh"
#include "cuda/decode.hpp"
#include "kvbits/status.hpp"

namespace kvbits::cuda {

using namespace decode_detail;

namespace {

constexpr uint32_t kMaxSplits = 1024;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(StatusCode::device_error, std::string(what) + ": " + cudaGetErrorString(e));
}

struct KernelArgs {
  const DecodeHead* heads;
  const float* centroids;
  const uint32_t* page_table;
  const uint32_t* table_offset;
  const uint32_t* seq_len;
  const float* q_rot;
  float* ws_acc;  // [n_seqs * n_q][splits][D]
  float* ws_ml;   // [n_seqs * n_q][splits][2]: running max, sum of exp
  float* out;
  float* lse;
  float scale;
  uint32_t n_q, gqa, D, page_size, splits, stage_stride, stages;
};

__device__ __forceinline__ float half_at(const uint8_t* p) {
  return __half2float(__ushort_as_half(*reinterpret_cast<const unsigned short*>(p)));
}

// Copies `bytes` (rounded up to 16; the page layout keeps the rounded range inside the page).
__device__ __forceinline__ void copy_range(uint8_t* dst, const uint8_t* src, uint32_t bytes) {
  for (uint32_t c = threadIdx.x * 16u; c < bytes; c += kThreads * 16u) cp_async16(dst + c, src + c);
}

// Issues the copies of sub-tiles [t, min(t + 2, t_end)) of a sequence into one stage.
__device__ void issue_step(uint8_t* stage, const DecodeHead& hd, const SubTileLayout& st, const uint32_t* table,
                           uint32_t len, uint32_t page_size, uint32_t t, uint32_t t_end) {
  const uint32_t kc = hd.k_code_bytes, ks = 2 * hd.n_k_groups, vc = hd.v_code_bytes;
  for (uint32_t u = 0; u < 2 && t + u < t_end; ++u) {
    uint8_t* sub = stage + u * st.bytes;
    const uint32_t tok_sub = (t + u) * kSubRows;
    for (uint32_t j = 0; j < (kSubRows >> st.seg_shift); ++j) {
      const uint32_t tok = tok_sub + (j << st.seg_shift);
      if (tok >= len) break;
      const uint32_t rows = min(st.seg_rows, len - tok), row0 = tok % page_size;
      const uint8_t* page = hd.pool + size_t(table[tok / page_size]) * hd.page_bytes;
      copy_range(sub + j * st.kc_seg, page + row0 * kc, round16(rows * kc));
      copy_range(sub + st.off_ks + j * st.ks_seg, page + hd.k_scales + row0 * ks, round16(rows * ks));
      copy_range(sub + st.off_vc + j * st.vc_seg, page + hd.v_codes + row0 * vc, round16(rows * vc));
      copy_range(sub + st.off_vs + j * st.vs_seg, page + hd.v_scales + row0 * 2, round16(rows * 2));
    }
  }
}

template <int GQ>
__global__ void __launch_bounds__(kThreads) decode_kernel(KernelArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  // DecodeHead has default member initialisers, which __shared__ objects may not have: raw words.
  __shared__ __align__(16) uint32_t hd_words[sizeof(DecodeHead) / 4];
  const DecodeHead& hd = *reinterpret_cast<const DecodeHead*>(hd_words);
  const uint32_t split = blockIdx.x, h = blockIdx.y, seq = blockIdx.z, tid = threadIdx.x;
  const uint32_t D = a.D;
  const SmemPlan sp = smem_plan(a.stage_stride, a.stages, D, GQ);
  float* qs = reinterpret_cast<float*>(smem + sp.off_q);
  float* ps = reinterpret_cast<float*>(smem + sp.off_p);
  float* cs = reinterpret_cast<float*>(smem + sp.off_cent);
  float* wmax = reinterpret_cast<float*>(smem + sp.off_wmax);
  float* mrun = reinterpret_cast<float*>(smem + sp.off_mrun);
  float* corr = reinterpret_cast<float*>(smem + sp.off_corr);
  float* lred = reinterpret_cast<float*>(smem + sp.off_l);

  static_assert(sizeof(DecodeHead) % 4 == 0, "DecodeHead is copied as words");
  for (uint32_t k = tid; k < sizeof(DecodeHead) / 4; k += kThreads)
    hd_words[k] = reinterpret_cast<const uint32_t*>(a.heads + h)[k];
  const uint32_t len = a.seq_len[seq];
  const uint32_t* table = a.page_table + a.table_offset[seq];
  // This split's sub-tiles: an even count per split, so steps never straddle two splits.
  const uint32_t n_sub = (len + kSubRows - 1) / kSubRows;
  uint32_t chunk = (n_sub + a.splits - 1) / a.splits;
  chunk += chunk & 1u;
  const uint32_t t_begin = min(n_sub, split * chunk), t_end = min(n_sub, t_begin + chunk);
  const uint32_t n_steps = (t_end - t_begin + 1) / 2;
  __syncthreads();  // hd

  const SubTileLayout st = sub_tile_layout(a.page_size, hd.k_code_bytes, hd.n_k_groups, hd.v_code_bytes);
  for (uint32_t s = 0; s < a.stages; ++s) {
    if (s < n_steps)
      issue_step(smem + s * sp.stage_stride, hd, st, table, len, a.page_size, t_begin + 2 * s, t_end);
    cp_async_commit();
  }

  // While the first stages load: q' of the GQA group as [D][GQ] (zero-padded heads), the
  // head's centroid tables, the over-read pads, the running max.
  const float* q_src = a.q_rot + (size_t(seq) * a.n_q + size_t(h) * a.gqa) * D;
  for (uint32_t idx = tid; idx < D * GQ; idx += kThreads) {
    const uint32_t i = idx / D, slot = idx % D;
    qs[slot * GQ + i] = i < a.gqa ? q_src[size_t(i) * D + slot] : 0.0f;
  }
  for (uint32_t k = tid; k < hd.n_centroids; k += kThreads) cs[k] = a.centroids[hd.centroid_base + k];
  if (tid < 2 * a.stages) {
    uint32_t* pad = reinterpret_cast<uint32_t*>(smem + (tid >> 1) * sp.stage_stride + (tid & 1) * st.bytes + st.bytes - 16);
    pad[0] = pad[1] = pad[2] = pad[3] = 0;
  }
  if (tid < GQ) mrun[tid] = -INFINITY;

  const float scale = a.scale;
  const uint32_t kc = hd.k_code_bytes, ks = 2 * hd.n_k_groups, vc = hd.v_code_bytes;
  const uint32_t seg_mask = st.seg_rows - 1;
  // V phase mapping: quad q of four dims, slice of rows r = slice (mod n_slices).
  const uint32_t n_quads = D / 4, n_slices = kThreads / n_quads;
  const uint32_t quad = tid % n_quads, slice = tid / n_quads;
  const bool v_active = slice < n_slices;
  const uint32_t vb = hd.v_bits, vmask = (1u << vb) - 1u;
  float vacc[4][GQ], lsum[GQ];
#pragma unroll
  for (int i = 0; i < GQ; ++i) {
    lsum[i] = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) vacc[k][i] = 0.0f;
  }

  for (uint32_t step = 0; step < n_steps; ++step) {
    if (a.stages == 3) cp_async_wait<2>(); else cp_async_wait<1>();
    __syncthreads();  // this step's bytes from every thread's copies; the prologue's smem writes
    uint8_t* buf = smem + (step % a.stages) * sp.stage_stride;
    const uint32_t t0 = t_begin + 2 * step;
    const uint32_t v0 = min(kSubRows, len - t0 * kSubRows);
    const uint32_t v1 = t0 + 1 < t_end ? min(kSubRows, len - (t0 + 1) * kSubRows) : 0u;

    // ---- K phase: one token row per thread.
    const uint32_t u = tid / kSubRows, rr = tid % kSubRows;
    const bool valid = rr < (u ? v1 : v0);
    float s[GQ];
    if (valid) {
      const uint8_t* sub = buf + u * st.bytes;
      const uint32_t* words = reinterpret_cast<const uint32_t*>(sub);
      const uint32_t j = rr >> st.seg_shift, i = rr & seg_mask;
      const uint32_t kbyte = j * st.kc_seg + i * kc;
      const uint8_t* kscale = sub + st.off_ks + j * st.ks_seg + i * ks;
      float acc[GQ];
#pragma unroll
      for (int q = 0; q < GQ; ++q) acc[q] = 0.0f;
      for (uint32_t g = 0; g < hd.n_k_groups; ++g) {
        const DecodeGroup gr = hd.k_groups[g];
        const uint32_t b = gr.bits, mask = (1u << b) - 1u, d = gr.dims;
        const float sc = half_at(kscale + 2 * g);
        const float* cg = cs + gr.centroid_offset;
        const float* qg = qs + gr.first_slot * GQ;
        uint32_t bit = (kbyte + gr.byte_offset) * 8u;
#pragma unroll 2
        for (uint32_t jj = 0; jj < d; jj += 4, bit += 4 * b) {
          const uint32_t w = bits32(words, bit);
#pragma unroll
          for (uint32_t k = 0; k < 4; ++k) {
            if (k >= 2 && jj + k >= d) break;  // d is even: only the last two can be past it
            const float y = cg[(w >> (k * b)) & mask] * sc;
            float qv[GQ];
            load_row<GQ>(qg + (jj + k) * GQ, qv);
#pragma unroll
            for (int q = 0; q < GQ; ++q) acc[q] = __fmaf_rn(qv[q], y, acc[q]);
          }
        }
      }
#pragma unroll
      for (int q = 0; q < GQ; ++q) s[q] = scale * acc[q];
    } else {
#pragma unroll
      for (int q = 0; q < GQ; ++q) s[q] = -INFINITY;
    }

    // ---- softmax: block max per query, then p = exp(s - m_new) into smem.
    const uint32_t lane = tid & 31u, warp = tid >> 5;
#pragma unroll
    for (int q = 0; q < GQ; ++q) {
      float m = s[q];
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
      if (lane == 0) wmax[warp * GQ + q] = m;
    }
    __syncthreads();
    const uint32_t par = step & 1u;
    float p[GQ];
#pragma unroll
    for (int q = 0; q < GQ; ++q) {
      const float mo = mrun[par * GQ + q];
      float mn = mo;
      for (uint32_t w = 0; w < kThreads / 32; ++w) mn = fmaxf(mn, wmax[w * GQ + q]);
      p[q] = valid ? expf(s[q] - mn) : 0.0f;
      if (tid == 0) {
        mrun[(par ^ 1u) * GQ + q] = mn;
        corr[q] = mn == -INFINITY ? 1.0f : expf(mo - mn);  // mo = -inf (first step): 0, acc is 0
      }
    }
#pragma unroll
    for (int q = 0; q < GQ; ++q) ps[tid * GQ + q] = p[q];
    __syncthreads();

    // ---- V phase: rows of this thread's slice, four dims each, every query head.
    if (v_active) {
      float c[GQ];
      load_row<GQ>(corr, c);
#pragma unroll
      for (int q = 0; q < GQ; ++q) {
        lsum[q] *= c[q];
#pragma unroll
        for (int k = 0; k < 4; ++k) vacc[k][q] *= c[q];
      }
#pragma unroll 2
      for (uint32_t r = slice; r < kStepRows; r += n_slices) {
        const uint32_t ur = r / kSubRows, rrr = r % kSubRows;
        if (rrr >= (ur ? v1 : v0)) continue;
        const uint8_t* sub = buf + ur * st.bytes;
        const uint32_t j = rrr >> st.seg_shift, i = rrr & seg_mask;
        const float sc = half_at(sub + st.off_vs + j * st.vs_seg + 2 * i);
        const uint32_t w = bits32(reinterpret_cast<const uint32_t*>(sub),
                                  (st.off_vc + j * st.vc_seg + i * vc) * 8u + quad * 4u * vb);
        float y[4];
#pragma unroll
        for (uint32_t k = 0; k < 4; ++k) y[k] = cs[hd.v_centroid_offset + ((w >> (k * vb)) & vmask)] * sc;
        float pr[GQ];
        load_row<GQ>(ps + r * GQ, pr);
#pragma unroll
        for (int q = 0; q < GQ; ++q) {
          lsum[q] += pr[q];
#pragma unroll
          for (int k = 0; k < 4; ++k) vacc[k][q] = __fmaf_rn(pr[q], y[k], vacc[k][q]);
        }
      }
    }
    __syncthreads();  // everyone is done with this stage: refill it
    if (step + a.stages < n_steps)
      issue_step(buf, hd, st, table, len, a.page_size, t_begin + 2 * (step + a.stages), t_end);
    cp_async_commit();
  }

  // ---- Split partial: combine the row slices in a fixed order (deterministic), then store.
  cp_async_wait<0>();
  __syncthreads();
  float* red = reinterpret_cast<float*>(smem);  // [GQ][D], over the (now idle) stages
  for (uint32_t sl = 0; sl < n_slices; ++sl) {
    if (v_active && slice == sl) {
#pragma unroll
      for (int q = 0; q < GQ; ++q) {
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          float& dst = red[q * D + quad * 4 + k];
          dst = sl == 0 ? vacc[k][q] : dst + vacc[k][q];
        }
        if (quad == 0) lred[q] = sl == 0 ? lsum[q] : lred[q] + lsum[q];
      }
    }
    __syncthreads();
  }
  const size_t row0 = size_t(seq) * a.n_q + size_t(h) * a.gqa;
  for (uint32_t idx = tid; idx < a.gqa * D; idx += kThreads) {
    const uint32_t q = idx / D, d = idx % D;
    a.ws_acc[((row0 + q) * a.splits + split) * D + d] = red[q * D + d];
  }
  if (tid < a.gqa) {
    float* ml = a.ws_ml + ((row0 + tid) * a.splits + split) * 2;
    ml[0] = mrun[(n_steps & 1u) * GQ + tid];
    ml[1] = lred[tid];
  }
}

// One CTA per (query head, sequence): log-sum-exp merge of the splits, then out = R_v^T acc / l.
// Latency-bound (a few KB per CTA): every loop keeps 8 independent loads in flight per thread
// and all 256 threads work; partial sums are combined in a fixed order (deterministic).
constexpr uint32_t kMergeThreads = 256;

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
    v = threadIdx.x < kMergeThreads / 32 ? tmp[threadIdx.x] : (is_max ? -INFINITY : 0.0f);
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

__global__ void __launch_bounds__(kMergeThreads) merge_kernel(KernelArgs a) {
  __shared__ float wsplit[kMaxSplits];
  __shared__ float part[kMergeThreads];
  __shared__ float vec[kDecodeMaxHeadDim];
  __shared__ float tmp[33];
  const uint32_t qh = blockIdx.x, seq = blockIdx.y, tid = threadIdx.x, D = a.D, S = a.splits;
  const size_t row = size_t(seq) * a.n_q + qh;
  const float* ml = a.ws_ml + row * S * 2;
  float m = -INFINITY;
  for (uint32_t k = tid; k < S; k += kMergeThreads) m = fmaxf(m, ml[2 * k]);
  const float M = block_reduce(m, tmp, true);
  float l = 0.0f;
  for (uint32_t k = tid; k < S; k += kMergeThreads) {
    const float mk = ml[2 * k];
    const float w = mk == -INFINITY ? 0.0f : expf(mk - M);  // empty split: weight 0, never 0 * NaN
    wsplit[k] = w;
    l += w * ml[2 * k + 1];
  }
  const float L = block_reduce(l, tmp, false);  // its barriers also publish wsplit

  // Thread (r, pt): dims r of the combined accumulator over splits k = pt (mod n_parts).
  const uint32_t n_parts = kMergeThreads / D, r = tid % D, pt = tid / D;
  const float* acc = a.ws_acc + row * S * D;
  float v = 0.0f;
  if (pt < n_parts) {
    uint32_t k = pt;
    for (; k + 7 * n_parts < S; k += 8 * n_parts) {
      float x[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) x[u] = acc[size_t(k + u * n_parts) * D + r];
#pragma unroll
      for (int u = 0; u < 8; ++u) v = __fmaf_rn(wsplit[k + u * n_parts], x[u], v);
    }
    for (; k < S; k += n_parts) v = __fmaf_rn(wsplit[k], acc[size_t(k) * D + r], v);
    part[tid] = v;
  }
  __syncthreads();
  if (tid < D) {
    float t = 0.0f;
    for (uint32_t q = 0; q < n_parts; ++q) t += part[q * D + tid];
    vec[tid] = t;
  }
  __syncthreads();
  // out[d] = sum_r R[r][d] vec[r]: thread (d, pt) takes rows r = pt (mod n_parts).
  const float* R = a.heads[qh / a.gqa].v_rotation;
  if (pt < n_parts) {
    const uint32_t d = r;
    float o = 0.0f;
    uint32_t rr = pt;
    for (; rr + 7 * n_parts < D; rr += 8 * n_parts) {
      float x[8];
#pragma unroll
      for (int u = 0; u < 8; ++u) x[u] = R[size_t(rr + u * n_parts) * D + d];
#pragma unroll
      for (int u = 0; u < 8; ++u) o = __fmaf_rn(x[u], vec[rr + u * n_parts], o);
    }
    for (; rr < D; rr += n_parts) o = __fmaf_rn(R[size_t(rr) * D + d], vec[rr], o);
    part[tid] = o;
  }
  __syncthreads();
  if (tid < D) {
    float t = 0.0f;
    for (uint32_t q = 0; q < n_parts; ++q) t += part[q * D + tid];
    a.out[row * D + tid] = L > 0.0f ? t / L : 0.0f;
  }
  if (a.lse && tid == 0) a.lse[row] = L > 0.0f ? M + logf(L) : -INFINITY;
}

int current_sm_count() {
  int dev = 0, n = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute(SMs)");
  return n;
}

std::string head_name(uint32_t h) { return "decode_attention: KV head " + std::to_string(h) + ": "; }

void validate(const DecodeParams& p) {
  if (p.sink_tokens != 0 || p.window_tokens != 0 || p.fp16_layer || p.seq_qend || p.fp16_blocks || p.q)
    fail(StatusCode::unsupported,
         "decode_attention: this version serves packed tokens only (sink = window = 0, no fp16 layer)");
  if (p.n_q_heads == 0 || p.n_kv_heads == 0 || p.n_q_heads % p.n_kv_heads != 0)
    fail(StatusCode::invalid_argument, "decode_attention: n_q_heads must be a positive multiple of n_kv_heads");
  if (p.n_q_heads / p.n_kv_heads > kDecodeMaxGqa)
    fail(StatusCode::unsupported, "decode_attention: more than 16 query heads per KV head");
  if (p.head_dim == 0 || p.head_dim % 8 != 0)
    fail(StatusCode::invalid_argument, "decode_attention: head_dim must be a positive multiple of 8");
  if (p.head_dim > kDecodeMaxHeadDim) fail(StatusCode::unsupported, "decode_attention: head_dim > 256");
  const uint32_t P = p.page_size;
  if (P == 0 || (P < kSubRows ? kSubRows % P != 0 : P % kSubRows != 0))
    fail(StatusCode::unsupported, "decode_attention: page_size must divide 64 or be a multiple of 64");
  if (p.n_seqs > 65535 || p.n_kv_heads > 65535)
    fail(StatusCode::unsupported, "decode_attention: more than 65535 sequences or KV heads in one launch");
  if (!std::isfinite(p.scale) || p.scale < 0.0f)
    fail(StatusCode::invalid_argument, "decode_attention: scale must be finite and >= 0");
  if (!p.heads || !p.heads_host || !p.centroids || !p.page_table || !p.table_offset || !p.seq_len || !p.q_rot ||
      !p.out || !p.workspace)
    fail(StatusCode::null_pointer, "decode_attention: a required pointer is null");
  const uint32_t D = p.head_dim;
  for (uint32_t h = 0; h < p.n_kv_heads; ++h) {
    const DecodeHead& hd = p.heads_host[h];
    if (!hd.pool || !hd.v_rotation) fail(StatusCode::null_pointer, head_name(h) + "null pool or V rotation");
    if (hd.n_k_groups == 0 || hd.n_k_groups > kDecodeMaxGroups)
      fail(StatusCode::invalid_argument, head_name(h) + "1..8 K groups");
    uint32_t slot = 0, bytes = 0;
    for (uint32_t g = 0; g < hd.n_k_groups; ++g) {
      const DecodeGroup& gr = hd.k_groups[g];
      if (gr.bits < 1 || gr.bits > 8 || gr.dims == 0 || gr.dims % 2 != 0 || gr.first_slot != slot ||
          gr.byte_offset != bytes || gr.centroid_offset + (1u << gr.bits) > hd.n_centroids)
        fail(StatusCode::invalid_argument, head_name(h) + "bad K group " + std::to_string(g));
      slot += gr.dims;
      bytes += (gr.dims * gr.bits + 7) / 8;
    }
    if (slot != D || bytes != hd.k_code_bytes)
      fail(StatusCode::invalid_argument, head_name(h) + "K groups do not cover head_dim / k_code_bytes");
    if (hd.v_bits < 1 || hd.v_bits > 8 || hd.v_code_bytes != (D * hd.v_bits + 7) / 8 ||
        hd.v_centroid_offset + (1u << hd.v_bits) > hd.n_centroids || hd.n_centroids > kDecodeMaxCentroids)
      fail(StatusCode::invalid_argument, head_name(h) + "bad V description or centroid table");
    // The page layout of docs/cache-layout.md §10.2: 16-byte reads rounded past an array's
    // last row then stay inside the page.
    const size_t k_scales = round16(P * hd.k_code_bytes);
    const size_t v_codes = round16(uint32_t(k_scales) + 2 * P * hd.n_k_groups);
    const size_t v_scales = round16(uint32_t(v_codes) + P * hd.v_code_bytes);
    if (hd.k_scales != k_scales || hd.v_codes != v_codes || hd.v_scales != v_scales ||
        hd.page_bytes < round16(uint32_t(v_scales) + 2 * P) || hd.page_bytes % 16 != 0)
      fail(StatusCode::invalid_argument, head_name(h) + "page layout differs from docs/cache-layout.md");
  }
}

template <int GQ>
void launch(const KernelArgs& a, uint32_t n_kv, uint32_t n_seqs, uint32_t smem, cudaStream_t stream) {
  // Raise the dynamic shared-memory limit once per size (a host-side attribute, not a stream op).
  static std::atomic<uint32_t> raised{48u * 1024u};
  if (smem > raised.load()) {
    check(cudaFuncSetAttribute(decode_kernel<GQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "cudaFuncSetAttribute(decode smem)");
    raised.store(smem);
  }
  decode_kernel<GQ><<<dim3(a.splits, n_kv, n_seqs), kThreads, smem, stream>>>(a);
  check(cudaGetLastError(), "decode_kernel launch");
}

}  // namespace

uint32_t decode_splits(const DecodeParams& p) {
  const uint32_t max_sub = (p.max_len + kSubRows - 1) / kSubRows;
  const uint32_t max_steps = std::max(1u, (max_sub + 1) / 2);
  if (p.splits != 0) return std::min(p.splits, kMaxSplits);
  const uint64_t ctas = uint64_t(std::max(1u, p.n_seqs)) * std::max(1u, p.n_kv_heads);
  const uint64_t sms = uint64_t(p.sm_count > 0 ? p.sm_count : current_sm_count());
  // Four CTAs per SM: the kernel is bound by shared-memory and FMA latency at 4 warps per
  // CTA, so it needs several CTAs per SM; their 2-3 stages of ~14 KB in flight are far above
  // the ~25 KB per SM the H100 needs to cover its memory latency.
  const uint64_t want = (4 * sms + ctas - 1) / ctas;
  return uint32_t(std::max<uint64_t>(1, std::min<uint64_t>({want, max_steps, kMaxSplits})));
}

size_t decode_workspace_bytes(const DecodeParams& p) {
  const size_t rows = size_t(p.n_seqs) * p.n_q_heads * decode_splits(p);
  return (rows * p.head_dim * 4 + 255) / 256 * 256 + rows * 2 * 4;
}

void decode_attention(const DecodeParams& p, void* stream_ptr) {
  if (p.n_seqs == 0) return;
  validate(p);
  const uint32_t gqa = p.n_q_heads / p.n_kv_heads, D = p.head_dim;
  uint32_t sub_max = 0;
  for (uint32_t h = 0; h < p.n_kv_heads; ++h) {
    const DecodeHead& hd = p.heads_host[h];
    sub_max = std::max(sub_max, sub_tile_layout(p.page_size, hd.k_code_bytes, hd.n_k_groups, hd.v_code_bytes).bytes);
  }
  const uint32_t gq = gqa <= 1 ? 1 : gqa <= 2 ? 2 : gqa <= 4 ? 4 : gqa <= 8 ? 8 : 16;
  int dev = 0, optin = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute(smem)");
  const uint32_t static_smem = uint32_t(sizeof(DecodeHead)) + 64;
  uint32_t stages = 3;
  while (stages > 2 && smem_plan(2 * sub_max, stages, D, gq).total + static_smem > uint32_t(optin)) --stages;
  const uint32_t smem = smem_plan(2 * sub_max, stages, D, gq).total;
  if (smem + static_smem > uint32_t(optin))
    fail(StatusCode::unsupported, "decode_attention: needs " + std::to_string(smem) +
                                      " bytes of shared memory per block, the device allows " + std::to_string(optin));

  KernelArgs a{};
  a.heads = p.heads, a.centroids = p.centroids, a.page_table = p.page_table, a.table_offset = p.table_offset;
  a.seq_len = p.seq_len, a.q_rot = p.q_rot, a.out = p.out, a.lse = p.lse;
  a.scale = p.scale > 0.0f ? p.scale : float(1.0 / std::sqrt(double(D)));
  a.n_q = p.n_q_heads, a.gqa = gqa, a.D = D, a.page_size = p.page_size;
  a.splits = decode_splits(p), a.stage_stride = 2 * sub_max, a.stages = stages;
  const size_t rows = size_t(p.n_seqs) * p.n_q_heads * a.splits;
  a.ws_acc = static_cast<float*>(p.workspace);
  a.ws_ml = reinterpret_cast<float*>(static_cast<uint8_t*>(p.workspace) + (rows * D * 4 + 255) / 256 * 256);

  auto stream = static_cast<cudaStream_t>(stream_ptr);
  switch (gq) {
    case 1: launch<1>(a, p.n_kv_heads, p.n_seqs, smem, stream); break;
    case 2: launch<2>(a, p.n_kv_heads, p.n_seqs, smem, stream); break;
    case 4: launch<4>(a, p.n_kv_heads, p.n_seqs, smem, stream); break;
    case 8: launch<8>(a, p.n_kv_heads, p.n_seqs, smem, stream); break;
    default: launch<16>(a, p.n_kv_heads, p.n_seqs, smem, stream); break;
  }
  merge_kernel<<<dim3(p.n_q_heads, p.n_seqs), kMergeThreads, 0, stream>>>(a);
  check(cudaGetLastError(), "merge_kernel launch");
}

}  // namespace kvbits::cuda
