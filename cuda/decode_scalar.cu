// The scalar decode kernel (kDecodeVariantScalar, the first version; docs/gpu-decode.md): fp32
// FMAs on CUDA cores, any head_dim that is a multiple of 8.
//
// Grid (split, KV head, sequence), 128 threads. A packed split owns a contiguous range of
// 64-token sub-tiles of one (sequence, KV head) and all the GQA query heads of that KV head.
// It streams steps of two sub-tiles (128 tokens) through a 2-3 deep cp.async pipeline of
// shared-memory stages. Per step:
//   K phase  thread r takes token row r: unpacks its K codes group by group straight from the
//            bit stream in shared memory (aligned 32-bit words + funnel shift, four codes per
//            extraction), looks the centroids up in shared memory, scales by the fp16 group
//            scale and dots with q' of every query head (q' broadcast from shared memory).
//   softmax  block max per query, running max and rescale factor, p = exp(s - m) to smem.
//   V phase  thread (quad of 4 dims, row slice) accumulates p * (scale * centroid) for every
//            query head in registers, in V's rotated basis.
// Splits past packed_splits run plain_split over the fp16 sink and ring rows.
//
// Numerics: fp32 throughout, one FMA per (query, dim); logits scaled as the CPU reference
// (scale * dot), ŷ = half(scale) * centroid as one fp32 product.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>

#include "cuda/decode_common.cuh"
#include "cuda/decode_plain.cuh"

namespace kvbits::cuda::decode_detail {

namespace {

__device__ __forceinline__ float half_at(const uint8_t* p) {
  return __half2float(__ushort_as_half(*reinterpret_cast<const unsigned short*>(p)));
}

// Copies `bytes` (rounded up to 16; the page layout keeps the rounded range inside the page).
__device__ __forceinline__ void copy_range(uint8_t* dst, const uint8_t* src, uint32_t bytes) {
  for (uint32_t c = threadIdx.x * 16u; c < bytes; c += kThreads * 16u) cp_async16(dst + c, src + c);
}

// Issues the copies of sub-tiles [t, min(t + 2, t_end)) of the packed rows into one stage.
__device__ void issue_step(uint8_t* stage, const DecodeHead& hd, const SubTileLayout& st, const uint32_t* table,
                           uint32_t n_packed, uint32_t page_size, uint32_t t, uint32_t t_end) {
  const uint32_t kc = hd.k_code_bytes, ks = 2 * hd.n_k_groups, vc = hd.v_code_bytes;
  for (uint32_t u = 0; u < 2 && t + u < t_end; ++u) {
    uint8_t* sub = stage + u * st.bytes;
    const uint32_t tok_sub = (t + u) * kSubRows;
    for (uint32_t j = 0; j < (kSubRows >> st.seg_shift); ++j) {
      const uint32_t tok = tok_sub + (j << st.seg_shift);
      if (tok >= n_packed) break;
      const uint32_t rows = min(st.seg_rows, n_packed - tok), row0 = tok % page_size;
      const uint8_t* page = hd.pool + size_t(table[tok / page_size]) * hd.page_bytes;
      copy_range(sub + j * st.kc_seg, page + row0 * kc, round16(rows * kc));
      copy_range(sub + st.off_ks + j * st.ks_seg, page + hd.k_scales + row0 * ks, round16(rows * ks));
      copy_range(sub + st.off_vc + j * st.vc_seg, page + hd.v_codes + row0 * vc, round16(rows * vc));
      copy_range(sub + st.off_vs + j * st.vs_seg, page + hd.v_scales + row0 * 2, round16(rows * 2));
    }
  }
}

template <int GQ>
__global__ void __launch_bounds__(kThreads) decode_scalar_kernel(KernelArgs a) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ __align__(16) uint32_t hd_words[kHeadWords];
  const DecodeHead& hd = *reinterpret_cast<const DecodeHead*>(hd_words);
  const uint32_t split = blockIdx.x, h = blockIdx.y, seq = blockIdx.z, tid = threadIdx.x;
  const uint32_t D = a.D;
  load_head(hd_words, a.heads + h);
  const SeqInfo si = seq_info(a, seq);
  __syncthreads();  // hd
  if (split >= a.packed_splits) {
    const uint32_t u0 = (split - a.packed_splits) * a.fp16_chunk;
    plain_split<GQ>(a, hd, si, seq, h, split, false, u0, min(u0 + a.fp16_chunk, a.sink + a.window), smem);
    return;
  }

  const SmemPlan sp = smem_plan(a.stage_stride, a.stages, D, GQ);
  float* qs = reinterpret_cast<float*>(smem + sp.off_q);
  float* ps = reinterpret_cast<float*>(smem + sp.off_p);
  float* cs = reinterpret_cast<float*>(smem + sp.off_cent);
  float* wmax = reinterpret_cast<float*>(smem + sp.off_wmax);
  float* mrun = reinterpret_cast<float*>(smem + sp.off_mrun);
  float* corr = reinterpret_cast<float*>(smem + sp.off_corr);
  float* lred = reinterpret_cast<float*>(smem + sp.off_l);

  const uint32_t n_packed = si.n_packed;
  const uint32_t* table = a.page_table + a.table_offset[seq];
  // This split's sub-tiles: an even count per split, so steps never straddle two splits.
  const uint32_t n_sub = (n_packed + kSubRows - 1) / kSubRows;
  uint32_t chunk = (n_sub + a.packed_splits - 1) / a.packed_splits;
  chunk += chunk & 1u;
  const uint32_t t_begin = min(n_sub, split * chunk), t_end = min(n_sub, t_begin + chunk);
  const uint32_t n_steps = (t_end - t_begin + 1) / 2;

  const SubTileLayout st = sub_tile_layout(a.page_size, hd.k_code_bytes, hd.n_k_groups, hd.v_code_bytes);
  for (uint32_t s = 0; s < a.stages; ++s) {
    if (s < n_steps)
      issue_step(smem + s * sp.stage_stride, hd, st, table, n_packed, a.page_size, t_begin + 2 * s, t_end);
    cp_async_commit();
  }

  // While the first stages load: q' of the GQA group as [D][GQ] (zero-padded heads), the
  // head's centroid tables, the over-read pads, the running max.
  for (uint32_t k = tid; k < hd.n_centroids; k += kThreads) cs[k] = a.centroids[hd.centroid_base + k];
  if (tid < 2 * a.stages) {
    uint32_t* pad = reinterpret_cast<uint32_t*>(smem + (tid >> 1) * sp.stage_stride + (tid & 1) * st.bytes + st.bytes - 16);
    pad[0] = pad[1] = pad[2] = pad[3] = 0;
  }
  if (tid < GQ) mrun[tid] = -INFINITY;
  rotated_queries<GQ>(a, hd, seq, h, reinterpret_cast<float*>(smem + sp.off_qstage), qs, GQ, 1);

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
    const uint32_t v0 = min(kSubRows, n_packed - t0 * kSubRows);
    const uint32_t v1 = t0 + 1 < t_end ? min(kSubRows, n_packed - (t0 + 1) * kSubRows) : 0u;

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
      issue_step(buf, hd, st, table, n_packed, a.page_size, t_begin + 2 * (step + a.stages), t_end);
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
  const size_t row0 = partial_row(a, seq, h, 0);
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

template <int GQ>
void launch(const KernelArgs& a, uint32_t n_kv, uint32_t n_seqs, uint32_t smem, cudaStream_t stream) {
  // Raise the dynamic shared-memory limit once per size (a host-side attribute, not a stream op).
  static std::atomic<uint32_t> raised{0};  // 0: the default limit is 48 KiB minus static smem
  if (smem > raised.load()) {
    check(cudaFuncSetAttribute(decode_scalar_kernel<GQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
          "cudaFuncSetAttribute(decode smem)");
    raised.store(smem);
  }
  decode_scalar_kernel<GQ><<<dim3(a.splits, n_kv, n_seqs), kThreads, smem, stream>>>(a);
  check(cudaGetLastError(), "decode_scalar_kernel launch");
}

}  // namespace

void launch_decode_scalar(const KernelArgs& a, uint32_t gq, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                          cudaStream_t stream) {
  switch (gq) {
    case 1: launch<1>(a, n_kv, n_seqs, smem, stream); break;
    case 2: launch<2>(a, n_kv, n_seqs, smem, stream); break;
    case 4: launch<4>(a, n_kv, n_seqs, smem, stream); break;
    case 8: launch<8>(a, n_kv, n_seqs, smem, stream); break;
    default: launch<16>(a, n_kv, n_seqs, smem, stream); break;
  }
}

}  // namespace kvbits::cuda::decode_detail
