// kvbits CUDA — device and launch helpers shared by the two tensor-core decode kernels:
// decode_mma.cu (fp32-grade hi/lo operands) and decode_fast.cu (fp16 operands). Both run four
// warps, each with its own cp.async pipeline of 64-token sub-tiles, online softmax and
// accumulators acc[dim tile][query tile][4] in the same fragment layout, so they share the
// sub-tile copies and the end of the CTA: the warp merge and the partial write.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "cuda/decode_common.cuh"
#include "cuda/decode_mma.cuh"

namespace kvbits::cuda::decode_detail {

constexpr uint32_t kMt = 4;  // 16-row m-tiles per warp step (64 rows: one sub-tile)

__device__ __forceinline__ void mma16816(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The k = 8 shape: a0 / a1 rows g and g + 8 at k slots (2 t, 2 t + 1), b0 the same k slots.
__device__ __forceinline__ void mma1688(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t b0) {
  asm("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5}, {%6}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(b0));
}

// x as (half(x), half(x - half(x))) in the low and high 16 bits.
__device__ __forceinline__ uint32_t split_hl(float x) {
  const __half h = __float2half_rn(x);
  const __half l = __float2half_rn(x - __half2float(h));
  return uint32_t(__half_as_ushort(h)) | (uint32_t(__half_as_ushort(l)) << 16);
}

__device__ __forceinline__ uint32_t dup_lo(uint32_t x) { return __byte_perm(x, 0, 0x1010); }

// 2^x by the special-function unit (ex2.approx.ftz: ~2^-22 relative, results below 2^-126
// flushed to 0, 2^-inf = 0): the fast kernel's softmax, where exp2f's denormal handling would
// add three instructions per value.
__device__ __forceinline__ float ex2_approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// 2^e for |e| <= 126, exactly.
__device__ __forceinline__ float exp2i(int e) { return __uint_as_float(uint32_t(127 + e) << 23); }

// floor(log2(x)) of a positive normal float.
__device__ __forceinline__ int ilog2f(float x) { return int((__float_as_uint(x) >> 23) & 0xFFu) - 127; }

// Exponent e such that max_abs * 2^e lies in [2^14, 2^15); 0 for 0. Clamped to +-60.
__device__ __forceinline__ int prescale(float max_abs) {
  if (!(max_abs > 0.0f)) return 0;
  const int e = 14 - (max_abs < 1.17549435e-38f ? -126 : ilog2f(max_abs));
  return e < -60 ? -60 : (e > 60 ? 60 : e);
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// Byte offset of row r of an array in a sub-tile (segments of 2^seg_shift rows).
__device__ __forceinline__ uint32_t row_off(const SubTileLayout& st, uint32_t r, uint32_t seg_bytes,
                                            uint32_t row_bytes) {
  return (r >> st.seg_shift) * seg_bytes + (r & (st.seg_rows - 1)) * row_bytes;
}

__device__ __forceinline__ void warp_copy(uint8_t* dst, const uint8_t* src, uint32_t bytes, uint32_t lane) {
  for (uint32_t c = lane * 16u; c < bytes; c += 32u * 16u) cp_async16(dst + c, src + c);
}

// One warp issues the copies of packed sub-tile `idx` (rows idx * 64 ...) into `sub`: its K half
// (codes and scales), its V half, or both.
__device__ inline void warp_issue(uint8_t* sub, const DecodeHead& hd, const SubTileLayout& st, const uint32_t* table,
                                  uint32_t n_packed, uint32_t page_size, uint32_t idx, uint32_t lane, bool k_half = true,
                                  bool v_half = true) {
  const uint32_t kc = hd.k_code_bytes, ks = 2 * hd.n_k_groups, vc = hd.v_code_bytes;
  const uint32_t tok_sub = idx * kSubRows;
  for (uint32_t j = 0; j < (kSubRows >> st.seg_shift); ++j) {
    const uint32_t tok = tok_sub + (j << st.seg_shift);
    if (tok >= n_packed) break;
    const uint32_t rows = min(st.seg_rows, n_packed - tok), row0 = tok % page_size;
    const uint8_t* page = hd.pool + size_t(table[tok / page_size]) * hd.page_bytes;
    if (k_half) {
      warp_copy(sub + j * st.kc_seg, page + row0 * kc, round16(rows * kc), lane);
      warp_copy(sub + st.off_ks + j * st.ks_seg, page + hd.k_scales + row0 * ks, round16(rows * ks), lane);
    }
    if (v_half) {
      warp_copy(sub + st.off_vc + j * st.vc_seg, page + hd.v_codes + row0 * vc, round16(rows * vc), lane);
      warp_copy(sub + st.off_vs + j * st.vs_seg, page + hd.v_scales + row0 * 2, round16(rows * 2), lane);
    }
  }
}

__device__ __forceinline__ float half_bits(const uint8_t* p) {
  return __half2float(__ushort_as_half(*reinterpret_cast<const unsigned short*>(p)));
}

// A warp's share of a packed split: whole quads of 64-token sub-tiles per split, warp w takes
// sub-tiles t_begin + w, t_begin + w + 4, ... (n_my of them) into its stages buffers.
struct WarpTiles {
  const uint32_t* table;  // the sequence's page table
  SubTileLayout st;
  uint8_t* wbuf;  // this warp's buffers
  uint32_t buffer, n_packed, t_begin, n_my, warp, lane;

  __device__ __forceinline__ uint32_t sub_idx(uint32_t it) const { return t_begin + warp + it * kMmaWarps; }
  __device__ __forceinline__ uint32_t valid_rows(uint32_t it) const {
    return min(kSubRows, n_packed - sub_idx(it) * kSubRows);
  }
  // After step `it` consumed `buf`: refill it with step it + stages (an empty group past the end,
  // so that the wait counts stay uniform).
  __device__ __forceinline__ void issue_next(const KernelArgs& a, const DecodeHead& hd, uint8_t* buf,
                                             uint32_t it) const {
    if (it + kMmaWarpStages < n_my)
      warp_issue(buf + kMmaSubPad, hd, st, table, n_packed, a.page_size, sub_idx(it + kMmaWarpStages), lane);
    cp_async_commit();
  }
  // One buffer, refilled in halves (kFastWarpStages): the K half of step it + 1 once step it's K
  // phase is done, its V half once step it's V phase is done; each its own group, so that a
  // wait for all but the newest group always finds the half about to be read.
  __device__ __forceinline__ void issue_next_half(const KernelArgs& a, const DecodeHead& hd, uint8_t* buf, uint32_t it,
                                                  bool k_half) const {
    if (it + 1 < n_my)
      warp_issue(buf + kMmaSubPad, hd, st, table, n_packed, a.page_size, sub_idx(it + 1), lane, k_half, !k_half);
    cp_async_commit();
  }
};

__device__ __forceinline__ WarpTiles start_warp_tiles(const KernelArgs& a, const DecodeHead& hd,
                                                      const MmaSmemPlan& sp, uint8_t* smem, uint32_t n_packed,
                                                      uint32_t seq, uint32_t split) {
  WarpTiles w;
  w.lane = threadIdx.x & 31u, w.warp = threadIdx.x >> 5;
  w.table = a.page_table + a.table_offset[seq];
  w.st = sub_tile_layout(a.page_size, hd.k_code_bytes, hd.n_k_groups, hd.v_code_bytes);
  w.buffer = sp.buffer;
  w.wbuf = smem + sp.off_buf + w.warp * sp.stages * sp.buffer;
  w.n_packed = n_packed;
  const uint32_t n_sub = (n_packed + kSubRows - 1) / kSubRows;
  const uint32_t n_quads = (n_sub + kMmaWarps - 1) / kMmaWarps;
  const uint32_t chunk = (n_quads + a.packed_splits - 1) / a.packed_splits * kMmaWarps;
  w.t_begin = min(n_sub, split * chunk);
  const uint32_t t_end = min(n_sub, w.t_begin + chunk);
  w.n_my = t_end > w.t_begin + w.warp ? (t_end - w.t_begin - w.warp + kMmaWarps - 1) / kMmaWarps : 0u;
  if (sp.stages == 1) {  // the K half, then the V half of the first step: two groups
    for (uint32_t half = 0; half < 2; ++half) {
      if (w.n_my > 0)
        warp_issue(w.wbuf + kMmaSubPad, hd, w.st, w.table, n_packed, a.page_size, w.sub_idx(0), w.lane, half == 0,
                   half == 1);
      cp_async_commit();
    }
    return w;
  }
#pragma unroll
  for (uint32_t s = 0; s < kMmaWarpStages; ++s) {
    if (s < w.n_my)
      warp_issue(w.wbuf + s * sp.buffer + kMmaSubPad, hd, w.st, w.table, n_packed, a.page_size, w.sub_idx(s), w.lane);
    cp_async_commit();
  }
  return w;
}

// The table word at byte offset byte_off (a pre-shifted code | its table's offset).
__device__ __forceinline__ uint32_t lut_word(const uint32_t* lut, uint32_t byte_off) {
  return *reinterpret_cast<const uint32_t*>(reinterpret_cast<const uint8_t*>(lut) + byte_off);
}

// Zeroes an array of MMA accumulator fragments.
template <int A, int B>
__device__ __forceinline__ void zero_frags(float (&x)[A][B][4]) {
#pragma unroll
  for (int i = 0; i < A; ++i)
#pragma unroll
    for (int j = 0; j < B; ++j)
#pragma unroll
      for (int k = 0; k < 4; ++k) x[i][j][k] = 0.0f;
}

// Running max -inf and running sum 0 of every query column of the thread.
template <int NT>
__device__ __forceinline__ void softmax_init(float (&mrun)[NT][2], float (&lrun)[NT][2]) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) mrun[nt][0] = mrun[nt][1] = -INFINITY, lrun[nt][0] = lrun[nt][1] = 0.0f;
}

// Stream bit of the K code row of each of the thread's rows (16 mt + 8 hh + g8) in a sub-tile.
__device__ __forceinline__ void k_row_bits(const SubTileLayout& st, uint32_t k_code_bytes, uint32_t (&kbit)[kMt][2]) {
  const uint32_t g8 = (threadIdx.x & 31u) >> 2;
#pragma unroll
  for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) kbit[mt][hh] = row_off(st, 16 * mt + 8 * hh + g8, st.kc_seg, k_code_bytes) * 8;
}

// s += c * f * (the row's fp16 scale of K group g): the end of one group's K phase.
template <int NT>
__device__ __forceinline__ void add_group_scores(float (&s)[kMt][NT][4], const float (&c)[kMt][NT][4],
                                                 const uint8_t* sub, const SubTileLayout& st, uint32_t ks2, uint32_t g,
                                                 float f) {
  const uint32_t g8 = (threadIdx.x & 31u) >> 2;
#pragma unroll
  for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const uint32_t r = 16 * mt + 8 * hh + g8;
      const float sc = half_bits(sub + st.off_ks + row_off(st, r, st.ks_seg, ks2) + 2 * g) * f;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        s[mt][nt][2 * hh] = __fmaf_rn(c[mt][nt][2 * hh], sc, s[mt][nt][2 * hh]);
        s[mt][nt][2 * hh + 1] = __fmaf_rn(c[mt][nt][2 * hh + 1], sc, s[mt][nt][2 * hh + 1]);
      }
    }
}

// acc *= corr * fz per query column (the new running max and the step's power of two).
template <int NT, int MD>
__device__ __forceinline__ void rescale_acc(float (&acc)[MD][NT][4], const float (&corr)[NT][2], float fz) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    const float f0 = corr[nt][0] * fz, f1 = corr[nt][1] * fz;
#pragma unroll
    for (int m = 0; m < MD; ++m) acc[m][nt][0] *= f0, acc[m][nt][1] *= f1, acc[m][nt][2] *= f0, acc[m][nt][3] *= f1;
  }
}

// Online softmax of one step: masks rows past `valid`, takes the step's max over the warp's
// rows, rescales the running sum; corr = e^(m_old - m_new) per (query tile, column), or
// 2^(m_old - m_new) with LOG2 (logits in log2 units).
template <int NT, bool LOG2 = false>
__device__ __forceinline__ void softmax_rescale(float (&s)[kMt][NT][4], uint32_t valid, float (&mrun)[NT][2],
                                                float (&lrun)[NT][2], float (&corr)[NT][2]) {
  const uint32_t g8 = (threadIdx.x & 31u) >> 2;
  float mstep[NT][2];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) mstep[nt][0] = mstep[nt][1] = -INFINITY;
#pragma unroll
  for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const bool ok = 16u * mt + 8u * hh + g8 < valid;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          float& x = s[mt][nt][2 * hh + j];
          x = ok ? x : -INFINITY;
          mstep[nt][j] = fmaxf(mstep[nt][j], x);
        }
    }
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float m = mstep[nt][j];
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 4));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 8));
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 16));
      const float mn = fmaxf(mrun[nt][j], m);
      corr[nt][j] = mn == -INFINITY ? 1.0f : (LOG2 ? ex2_approx(mrun[nt][j] - mn) : expf(mrun[nt][j] - mn));
      mrun[nt][j] = mn;
      lrun[nt][j] *= corr[nt][j];
    }
}

// The V scales of the thread's rows (0 past `valid`) and the step's exponent z, chosen so that
// p * v_scale * 2^z < 2^15 for every row of the warp.
__device__ __forceinline__ int v_scales_exponent(const uint8_t* sub, const SubTileLayout& st, uint32_t valid,
                                                 float (&sv)[kMt][2]) {
  const uint32_t g8 = (threadIdx.x & 31u) >> 2;
  float mx = 0.0f;
#pragma unroll
  for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const uint32_t r = 16 * mt + 8 * hh + g8;
      sv[mt][hh] = r < valid ? half_bits(sub + st.off_vs + row_off(st, r, st.vs_seg, 2)) : 0.0f;
      mx = fmaxf(mx, sv[mt][hh]);
    }
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
  mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
  return prescale(mx);
}

// The end of a packed split: the four warps' (max, sum, acc) merged in a fixed order into the
// CTA's partial. acc[m][nt][j] / acc[m][nt][2 + j] hold dims 2 MD g8 + 2 m and + 1 of query
// 8 nt + 2 t4 + j, in units of `unit`. Reuses the sub-tile buffers (the caller's pipelines are
// drained here).
template <int NT, int MD>
__device__ __forceinline__ void mma_write_partial(const KernelArgs& a, const MmaSmemPlan& sp, uint8_t* smem,
                                                  float (&acc)[MD][NT][4], float (&mrun)[NT][2],
                                                  float (&lrun)[NT][2], float unit, uint32_t seq, uint32_t h,
                                                  uint32_t split) {
  constexpr uint32_t GQP = 8 * NT;
  const uint32_t tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5, g8 = lane >> 2, t4 = lane & 3u;
  const uint32_t D = a.D;
  float* wm = reinterpret_cast<float*>(smem + sp.off_wm);
  float* wl = reinterpret_cast<float*>(smem + sp.off_wl);
  float* wt = reinterpret_cast<float*>(smem + sp.off_wt);
  cp_async_wait<0>();
  __syncthreads();  // every warp is done with its buffers: they become red [warp][GQP][D]
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float l = lrun[nt][j];
      l += __shfl_xor_sync(0xffffffffu, l, 4);
      l += __shfl_xor_sync(0xffffffffu, l, 8);
      l += __shfl_xor_sync(0xffffffffu, l, 16);
      lrun[nt][j] = l;
    }
  float* red = reinterpret_cast<float*>(smem + sp.off_buf) + warp * GQP * D;
#pragma unroll
  for (int m = 0; m < MD; ++m)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const uint32_t q = 8 * nt + 2 * t4 + j, d = 2 * MD * g8 + 2 * m;
        *reinterpret_cast<float2*>(red + q * D + d) = make_float2(acc[m][nt][j] * unit, acc[m][nt][2 + j] * unit);
      }
  if (g8 == 0) {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        wm[warp * GQP + 8 * nt + 2 * t4 + j] = mrun[nt][j];
        wl[warp * GQP + 8 * nt + 2 * t4 + j] = lrun[nt][j];
      }
  }
  __syncthreads();
  const size_t row0 = partial_row(a, seq, h, 0);
  if (tid < GQP) {
    float M = -INFINITY;
    for (uint32_t w = 0; w < kMmaWarps; ++w) M = fmaxf(M, wm[w * GQP + tid]);
    float L = 0.0f;
    for (uint32_t w = 0; w < kMmaWarps; ++w) {
      const float mw = wm[w * GQP + tid];
      const float x = mw == -INFINITY ? 0.0f : expf(mw - M);
      wt[w * GQP + tid] = x;
      L += x * wl[w * GQP + tid];
    }
    if (tid < a.gqa) {
      float* ml = a.ws_ml + ((row0 + tid) * a.splits + split) * 2;
      ml[0] = M;
      ml[1] = L;
    }
  }
  __syncthreads();
  const float* red0 = reinterpret_cast<const float*>(smem + sp.off_buf);
  for (uint32_t idx = tid; idx < a.gqa * D; idx += kCtaThreads) {
    const uint32_t q = idx / D, d = idx % D;
    float v = 0.0f;
    for (uint32_t w = 0; w < kMmaWarps; ++w) v = __fmaf_rn(wt[w * GQP + q], red0[(w * GQP + q) * D + d], v);
    a.ws_acc[((row0 + q) * a.splits + split) * D + d] = v;
  }
}

// Raises a kernel's dynamic shared-memory limit to at least `smem`, never lowers it (a host-side
// attribute, not a stream operation; launches and occupancy queries of several sizes interleave).
template <auto Kernel>
void ensure_smem(uint32_t smem, const char* what) {
  // Starts at 0, not 48 KiB: without the attribute the dynamic limit is 48 KiB minus the
  // kernel's static shared memory, so every size is set once explicitly.
  static std::atomic<uint32_t> raised{0};
  static std::mutex mu;
  if (smem <= raised.load()) return;
  std::lock_guard<std::mutex> lock(mu);
  if (smem <= raised.load()) return;
  check(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)),
        (std::string("cudaFuncSetAttribute(") + what + " smem)").c_str());
  raised.store(smem);
}

// Launches a tensor-core decode kernel on grid (splits, KV heads, sequences); a launch error
// names what was asked of the launch (grid, shared memory, registers).
template <auto Kernel>
void launch_mma_kernel(const KernelArgs& a, uint32_t n_kv, uint32_t n_seqs, uint32_t smem, cudaStream_t stream,
                       const std::string& name, bool pdl = false) {
  ensure_smem<Kernel>(smem, name.c_str());
  KernelArgs b = a;
  b.pdl = pdl ? 1u : 0u;  // programmatic dependent launch: starts while the previous launch runs (see pdl_wait)
  cudaError_t e = launch_pdl(Kernel, dim3(a.splits, n_kv, n_seqs), dim3(kCtaThreads), smem, stream, b);
  if (e == cudaSuccess) e = cudaGetLastError();
  if (e != cudaSuccess) {
    cudaFuncAttributes fa{};
    cudaFuncGetAttributes(&fa, Kernel);
    check(e, (name + " launch (grid " + std::to_string(a.splits) + "x" + std::to_string(n_kv) + "x" +
              std::to_string(n_seqs) + ", dynamic smem " + std::to_string(smem) + ", static " +
              std::to_string(fa.sharedSizeBytes) + ", max dynamic " + std::to_string(fa.maxDynamicSharedSizeBytes) +
              ", regs " + std::to_string(fa.numRegs) + ", param bytes " + std::to_string(sizeof(KernelArgs)) + ")")
                 .c_str());
  }
}

// Resident CTAs per SM of a kernel with `smem` dynamic bytes, cached per (device, kernel, smem):
// decode_attention plans every call, and a call inside a stream capture should not need the
// attribute and occupancy APIs again.
template <auto Kernel>
int mma_kernel_occupancy(uint32_t smem, const char* name) {
  static std::mutex mu;
  static std::vector<std::pair<int, uint32_t>> keys;
  static std::vector<int> values;
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  {
    std::lock_guard<std::mutex> lock(mu);
    for (size_t i = 0; i < keys.size(); ++i)
      if (keys[i].first == dev && keys[i].second == smem) return values[i];
  }
  ensure_smem<Kernel>(smem, name);
  int n = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, Kernel, int(kCtaThreads), smem),
        "cudaOccupancyMaxActiveBlocksPerMultiprocessor");
  std::lock_guard<std::mutex> lock(mu);
  keys.emplace_back(dev, smem);
  values.push_back(n);
  return n;
}

}  // namespace kvbits::cuda::decode_detail
