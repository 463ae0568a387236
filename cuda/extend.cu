// Causal extend attention on the packed paged cache with tensor cores (docs/gpu-extend.md).
//
// Launches, all on the caller's stream, no allocation, no host synchronisation:
//  1. prep    per (32 query rows, KV head): q~ = fp16(q * scale * log2 e) in the original basis
//             and, for packed layers, q~' = fp16((R_g q_g) * scale * log2 e) per K group in hp
//             order; one extra CTA turns q_len into the list of query blocks (prefix sums).
//  2. extend  grid (query block, KV head, split). A CTA owns 64 query rows = 64 / G query
//             positions x the G query heads of one KV head, and one split of the tokens those
//             positions see. Page splits of a packed layer stream raw page bytes through a
//             cp.async pipeline, dequantize each 64-token tile once into fp16 K^ (rotated K
//             basis, hp order) and V^ (V's rotated basis) in shared memory, and run a
//             flash-attention step per warp (16 rows): S = Q~ K^T with mma.m16n8k16, causal
//             mask, online softmax in base 2, O += P V^. fp16 tokens (sink/window rows, fp16
//             layers) are copied as they are into the same tiles and dotted with the original-
//             basis q~. At the end packed-basis outputs are un-rotated once, O R_v, on tensor
//             cores with O and R_v split into fp16 hi + lo halves (three MMAs: fp32-grade).
//  3. merge   only when a row has more than one split: log-sum-exp combination in a fixed order.
// Every reduction runs in a fixed order: results are bit-identical from run to run.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "cuda/extend.cuh"
#include "cuda/extend.hpp"
#include "kvbits/status.hpp"

namespace kvbits::cuda {

using namespace extend_detail;

namespace {

constexpr float kLn2 = 0.693147180559945309f;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) fail(StatusCode::device_error, std::string(what) + ": " + cudaGetErrorString(e));
}

// ---------------------------------------------------------------------------------------------
// 1. Query pre-pass and block list.

struct PrepArgs {
  const void* q;
  const DecodeHead* heads;
  const float* k_rot;
  const uint32_t* k_rot_off;
  const uint32_t* k_slot_dim;
  const uint32_t* q_len;
  __half* q_orig;  // [total_q * n_q][D]
  __half* q_rotd;  // same, or null (fp16 layer)
  uint32_t* blk_off;  // [n_seqs + 1]
  float c;            // scale * log2(e)
  uint32_t q_dtype, n_seqs, n_q, gqa, D, total_q, qp, tokens_per_cta;
};

__device__ __forceinline__ float load_q(const void* q, uint32_t dtype, size_t i) {
  if (dtype == 0) return static_cast<const float*>(q)[i];
  const uint16_t b = static_cast<const uint16_t*>(q)[i];
  if (dtype == 1) return __half2float(__ushort_as_half(b));
  return __uint_as_float(uint32_t(b) << 16);  // bf16
}

// blk_off[s] = sum over s' < s of ceil(q_len[s'] / qp); blk_off[n_seqs] = number of blocks.
__device__ void plan_blocks(const PrepArgs& a) {
  __shared__ uint32_t part[kThreads];
  const uint32_t tid = threadIdx.x, n = a.n_seqs;
  const uint32_t per = (n + kThreads - 1) / kThreads;
  const uint32_t b0 = min(n, tid * per), b1 = min(n, b0 + per);
  uint32_t sum = 0;
  for (uint32_t s = b0; s < b1; ++s) sum += (a.q_len[s] + a.qp - 1) / a.qp;
  part[tid] = sum;
  __syncthreads();
  if (tid == 0) {
    uint32_t run = 0;
    for (uint32_t k = 0; k < kThreads; ++k) {
      const uint32_t v = part[k];
      part[k] = run;
      run += v;
    }
    a.blk_off[n] = run;
  }
  __syncthreads();
  uint32_t run = part[tid];
  for (uint32_t s = b0; s < b1; ++s) {
    a.blk_off[s] = run;
    run += (a.q_len[s] + a.qp - 1) / a.qp;
  }
}

// grid (ceil(total_q / tokens_per_cta) + 1, n_kv). CTA (x, h) prepares the G query rows of KV
// head h for tokens_per_cta tokens (<= 32 rows); CTA (last, 0) plans the blocks.
__global__ void __launch_bounds__(kThreads) prep_kernel(const PrepArgs a) {
  __shared__ float xs[kPrepRows * kDecodeMaxHeadDim];
  const uint32_t h = blockIdx.y, tid = threadIdx.x;
  if (blockIdx.x == gridDim.x - 1) {
    if (h == 0) plan_blocks(a);
    return;
  }
  const uint32_t G = a.gqa, D = a.D;
  const uint32_t tok0 = blockIdx.x * a.tokens_per_cta;
  const uint32_t n_tok = min(a.tokens_per_cta, a.total_q - tok0);
  const uint32_t rows = n_tok * G;  // local row k = token (k / G), head h * G + k % G
  auto grow = [&](uint32_t k) { return (size_t(tok0 + k / G) * a.n_q + size_t(h) * G + k % G); };
  for (uint32_t idx = tid; idx < rows * D; idx += kThreads) {
    const uint32_t k = idx / D, d = idx % D;
    const size_t g = grow(k) * D + d;
    const float x = load_q(a.q, a.q_dtype, g);
    xs[k * D + d] = x;
    a.q_orig[g] = __float2half_rn(x * a.c);
  }
  if (!a.q_rotd) return;
  __syncthreads();
  // q'[s] = sum_j R_g[s - first][j] * q[slot_dim[first + j]], R_g stored transposed (column j
  // contiguous) so that the lanes of a warp (consecutive s) read consecutive floats.
  const DecodeHead& hd = a.heads[h];
  const float* rot = a.k_rot + a.k_rot_off[h];
  const uint32_t* sd = a.k_slot_dim + size_t(h) * D;
  for (uint32_t s = tid; s < D; s += kThreads) {
    uint32_t first = 0, dims = 0, off = 0;
    for (uint32_t g = 0; g < hd.n_k_groups; ++g) {
      first = hd.k_groups[g].first_slot, dims = hd.k_groups[g].dims;
      if (s < first + dims) break;
      off += dims * dims;
    }
    const uint32_t r = s - first;
    float acc[kPrepRows];
#pragma unroll
    for (uint32_t k = 0; k < kPrepRows; ++k) acc[k] = 0.0f;
    for (uint32_t j = 0; j < dims; ++j) {
      const float m = rot[off + size_t(j) * dims + r];
      const float* xc = xs + sd[first + j];
#pragma unroll
      for (uint32_t k = 0; k < kPrepRows; ++k)
        if (k < rows) acc[k] = __fmaf_rn(m, xc[k * D], acc[k]);
    }
#pragma unroll
    for (uint32_t k = 0; k < kPrepRows; ++k)
      if (k < rows) a.q_rotd[grow(k) * D + s] = __float2half_rn(acc[k] * a.c);
  }
}

// ---------------------------------------------------------------------------------------------
// 2. The attention kernel.

struct KernelArgs {
  const DecodeHead* heads;
  const float* centroids;
  const uint32_t* page_table;
  const uint32_t* table_offset;
  const uint32_t* seq_len;
  const uint32_t* seq_qend;  // null: qend = len
  const uint16_t* const* fp16_blocks;
  const uint32_t* q_len;
  const uint32_t* q_offset;
  const uint32_t* blk_off;
  const __half* q_orig;
  const __half* q_rotd;
  float* out;
  float* lse;
  float* part_o;    // [total_splits][rows][D] when total_splits > 1
  float* part_lse;  // [total_splits][rows], log2 units
  SmemPlan sm;
  uint32_t n_seqs, n_q, n_kv, gqa, D, page_size, sink, window, total_q, qp;
  uint32_t page_splits, total_splits, fp16_layer;
};

__device__ __forceinline__ float half_at(const uint8_t* p) {
  return __half2float(__ushort_as_half(*reinterpret_cast<const unsigned short*>(p)));
}

__device__ __forceinline__ uint4 pack8(const float (&y)[8]) {
  return make_uint4(pack_half2(y[0], y[1]), pack_half2(y[2], y[3]), pack_half2(y[4], y[5]), pack_half2(y[6], y[7]));
}

// What one thread keeps across tiles: its two query rows (g and g + 8 of its warp), the running
// max / sum of each and the output accumulator O [16 rows x DP] in mma C fragments.
template <int DP>
struct WarpState {
  float o[DP / 8][4];
  float m[2], l[2];
  int pos[2];  // position of each row (-1: sees nothing)
  int warp_max;  // largest position among the warp's rows (-1: no row sees anything)
};

// One tile (tokens t0 .. t0 + n - 1, rows of Ks/Vs) for the calling warp.
template <int DP>
__device__ __forceinline__ void warp_tile(WarpState<DP>& st, const __half* Qs, const __half* Ks, const __half* Vs,
                                          uint32_t t0, uint32_t n, uint32_t D, uint32_t warp, uint32_t lane) {
  constexpr uint32_t LD = tile_ld(DP);
  if (st.warp_max < int(t0)) return;  // no row of this warp sees the tile (warp-uniform)
  float s[8][4];
#pragma unroll
  for (int j = 0; j < 8; ++j) s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.0f;
  // S = Q~ K^T: k-steps of 16 dims, two 8-token n-tiles per ldmatrix.x4.
#pragma unroll
  for (uint32_t kk = 0; kk < DP / 16; ++kk) {
    if (kk * 16 >= D) break;
    uint32_t qa[4];
    ldsm_x4(qa, Qs + (warp * 16 + (lane & 15)) * LD + kk * 16 + (lane >> 4) * 8);
#pragma unroll
    for (uint32_t np = 0; np < 4; ++np) {
      if (np * 16 >= n) break;
      uint32_t kb[4];
      ldsm_x4(kb, Ks + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * LD + kk * 16 + ((lane >> 3) & 1) * 8);
      mma16816(s[2 * np], qa, kb[0], kb[1]);
      mma16816(s[2 * np + 1], qa, kb[2], kb[3]);
    }
  }
  // Causal mask, online softmax (base 2: q~ carries log2 e), P in place of S.
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    float mx = -INFINITY;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const uint32_t col = 8 * j + 2 * (lane & 3) + e;
        float& v = s[j][2 * hh + e];
        if (col >= n || int(t0 + col) > st.pos[hh]) v = -INFINITY;
        mx = fmaxf(mx, v);
      }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(st.m[hh], mx);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // a row that saw nothing stays at 0
    const float alpha = exp2f(st.m[hh] - m_use);
    st.m[hh] = m_new;
    float rs = 0.0f;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float& v = s[j][2 * hh + e];
        v = exp2f(v - m_use);
        rs += v;
      }
    st.l[hh] = st.l[hh] * alpha + rs;  // this thread's columns; the quad is summed at the end
#pragma unroll
    for (int nt = 0; nt < DP / 8; ++nt) st.o[nt][2 * hh] *= alpha, st.o[nt][2 * hh + 1] *= alpha;
  }
  // O += P V^: P's C fragments are A fragments of the next MMA (k = tokens).
#pragma unroll
  for (uint32_t kk = 0; kk < 4; ++kk) {
    if (kk * 16 >= n) break;
    const uint32_t pa[4] = {pack_half2(s[2 * kk][0], s[2 * kk][1]), pack_half2(s[2 * kk][2], s[2 * kk][3]),
                            pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                            pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
    for (uint32_t np = 0; np < DP / 16; ++np) {
      if (np * 16 >= D) break;
      uint32_t vb[4];
      ldsm_x4_trans(vb, Vs + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * LD + np * 16 + (lane >> 4) * 8);
      mma16816(st.o[2 * np], pa, vb[0], vb[1]);
      mma16816(st.o[2 * np + 1], pa, vb[2], vb[3]);
    }
  }
}

// Row bookkeeping of one CTA: which rows are real and where their results go.
struct RowInfo {
  bool valid[2];
  size_t grow[2];  // global row (token * n_q + query head)
};

// Stores 8-column n-tiles [nt0, nt0 + count) of a C-fragment array holding columns col0 + 8 j.
template <int N>
__device__ __forceinline__ void store_rows(const float (&f)[N][4], uint32_t col0, uint32_t D, const RowInfo& ri,
                                           float* dst, uint32_t lane) {
#pragma unroll
  for (int j = 0; j < N; ++j) {
    const uint32_t col = col0 + 8 * j + 2 * (lane & 3);
    if (col >= D) break;
#pragma unroll
    for (int hh = 0; hh < 2; ++hh)
      if (ri.valid[hh])
        *reinterpret_cast<float2*>(dst + ri.grow[hh] * D + col) = make_float2(f[j][2 * hh], f[j][2 * hh + 1]);
  }
}

// Per-slot decoding info of one K octet (8 hp slots): bit offset in the row, width, group and
// centroid offset packed in one word; ~0 for slots past D.
__device__ __forceinline__ void k_slot_info(const DecodeHead& hd, uint32_t s0, uint32_t D, uint32_t (&info)[8]) {
#pragma unroll
  for (uint32_t e = 0; e < 8; ++e) {
    const uint32_t s = s0 + e;
    info[e] = ~0u;
    if (s >= D) continue;
    for (uint32_t g = 0; g < hd.n_k_groups; ++g) {
      const DecodeGroup& gr = hd.k_groups[g];
      if (s < gr.first_slot + gr.dims) {
        const uint32_t boff = gr.byte_offset * 8 + (s - gr.first_slot) * gr.bits;
        info[e] = boff | ((gr.bits - 1) << 12) | (g << 16) | (gr.centroid_offset << 20);
        break;
      }
    }
  }
}

template <int DP, int NW>
__global__ void __launch_bounds__(32 * NW, DP <= 128 && NW == 4 ? 2 : 1) extend_kernel(const KernelArgs a) {
  constexpr uint32_t kT = 32 * NW, kR = cta_rows(NW);  // threads, query rows
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ __align__(16) uint32_t hd_words[sizeof(DecodeHead) / 4];
  const DecodeHead& hd = *reinterpret_cast<const DecodeHead*>(hd_words);
  constexpr uint32_t LD = tile_ld(DP);
  const uint32_t tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
  const uint32_t h = blockIdx.y, split = blockIdx.z, w = blockIdx.x;
  const uint32_t D = a.D, G = a.gqa, QP = a.qp;

  // The query block: sequence s (binary search in the block list) and its block b.
  if (w >= a.blk_off[a.n_seqs]) return;  // CTA-uniform: the grid is an upper bound
  uint32_t lo = 0, hi = a.n_seqs;        // blk_off[lo] <= w < blk_off[hi]
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) >> 1;
    if (a.blk_off[mid] <= w) lo = mid; else hi = mid;
  }
  const uint32_t seq = lo, b = w - a.blk_off[seq];

  static_assert(sizeof(DecodeHead) % 4 == 0, "DecodeHead is copied as words");
  for (uint32_t k = tid; k < sizeof(DecodeHead) / 4; k += kT)
    hd_words[k] = reinterpret_cast<const uint32_t*>(a.heads + h)[k];

  const uint32_t len = a.seq_len[seq], qlen = a.q_len[seq], qoff = a.q_offset[seq];
  const uint32_t sink_end = min(len, a.sink);
  const uint32_t qend = min(max(a.seq_qend ? a.seq_qend[seq] : len, sink_end), len);
  const uint32_t i0 = b * QP, nq = min(QP, qlen - i0);
  const int pa = int(len) - int(qlen) + int(i0);  // position of query i0 (negative: sees nothing)
  const int pb = pa + int(nq) - 1;
  const uint32_t vis_end = pb < 0 ? 0u : min(uint32_t(pb) + 1u, len);  // the block sees [0, vis_end)
  const bool page_split = split < a.page_splits;
  const bool rotated = page_split && !a.fp16_layer;  // packed rows: rotated bases

  // Rows of this thread: g and g + 8 of its warp's 16.
  WarpState<DP> st;
  RowInfo ri;
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    const uint32_t r = warp * 16 + (lane >> 2) + 8 * hh, i = r / G;
    ri.valid[hh] = r < QP * G && i < nq && qoff + i0 + i < a.total_q;
    ri.grow[hh] = size_t(qoff + i0 + i) * a.n_q + size_t(h) * G + r % G;
    st.pos[hh] = ri.valid[hh] && pa + int(i) >= 0 ? pa + int(i) : -1;
    st.m[hh] = -INFINITY, st.l[hh] = 0.0f;
  }
  int wm = max(st.pos[0], st.pos[1]);
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) wm = max(wm, __shfl_xor_sync(0xffffffffu, wm, off));
  st.warp_max = wm;
#pragma unroll
  for (int nt = 0; nt < DP / 8; ++nt) st.o[nt][0] = st.o[nt][1] = st.o[nt][2] = st.o[nt][3] = 0.0f;

  // Q~ tile [64][LD] fp16: valid rows from the pre-pass, zero elsewhere (pad dims included).
  __half* Qs = reinterpret_cast<__half*>(smem + a.sm.q);
  const __half* qsrc = rotated ? a.q_rotd : a.q_orig;
  for (uint32_t idx = tid; idx < kR * (DP / 8); idx += kT) {
    const uint32_t r = idx / (DP / 8), c = idx % (DP / 8), i = r / G;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < QP * G && i < nq && qoff + i0 + i < a.total_q && 8 * c < D)
      v = *reinterpret_cast<const uint4*>(qsrc + (size_t(qoff + i0 + i) * a.n_q + size_t(h) * G + r % G) * D + 8 * c);
    *reinterpret_cast<uint4*>(Qs + r * LD + 8 * c) = v;
  }
  __syncthreads();  // hd

  const uint32_t P = a.page_size;
  const uint32_t* table = a.page_table + a.table_offset[seq];
  // Page tiles of this split: tile j = tokens sink_end + 64 j ... of [sink_end, region_end).
  const uint32_t region_end = min(qend, vis_end);
  const uint32_t n_tiles = region_end > sink_end ? (region_end - sink_end + kTile - 1) / kTile : 0u;
  const uint32_t chunk = (n_tiles + a.page_splits - 1) / a.page_splits;
  const uint32_t j_begin = page_split ? min(n_tiles, split * chunk) : 0u;
  const uint32_t j_end = page_split ? min(n_tiles, j_begin + chunk) : 0u;

  if (rotated) {
    // ---- packed page tiles: raw bytes -> cp.async stages -> dequantized fp16 K^, V^.
    float* cs = reinterpret_cast<float*>(smem + a.sm.cent);
    for (uint32_t k = tid; k < hd.n_centroids; k += kT) cs[k] = a.centroids[hd.centroid_base + k];
    __half* Ks = reinterpret_cast<__half*>(smem + a.sm.work);
    __half* Vs = Ks + kTile * LD;
    const uint32_t kc = hd.k_code_bytes, ng = hd.n_k_groups, vc = hd.v_code_bytes, vb = hd.v_bits;
    const RawLayout rl = raw_layout(P, kc, ng, vc);
    const uint32_t seg_mask = rl.seg_rows - 1, stages = a.sm.raw_stages;
    auto raw_stage = [&](uint32_t k) { return smem + a.sm.raw + k * a.sm.raw_stride; };
    auto issue = [&](uint32_t j, uint8_t* dst) {
      const uint32_t rel0 = j * kTile, rlen = region_end - sink_end;
      for (uint32_t js = 0; js < (kTile >> rl.seg_shift); ++js) {
        const uint32_t rel = rel0 + (js << rl.seg_shift);
        if (rel >= rlen) break;
        const uint32_t rows = min(rl.seg_rows, rlen - rel), row0 = rel % P;
        const uint8_t* page = hd.pool + size_t(table[rel / P]) * hd.page_bytes;
        // The four arrays of the segment (destination, source in the page, bytes rounded to 16:
        // the page layout keeps the rounded range inside the page).
        const uint32_t to[4] = {js * rl.kc_seg, rl.off_ks + js * rl.ks_seg, rl.off_vc + js * rl.vc_seg,
                                rl.off_vs + js * rl.vs_seg};
        const uint32_t from[4] = {row0 * kc, hd.k_scales + row0 * 2 * ng, hd.v_codes + row0 * vc, hd.v_scales + row0 * 2};
        const uint32_t nbytes[4] = {round16(rows * kc), round16(rows * 2 * ng), round16(rows * vc), round16(rows * 2)};
#pragma unroll
        for (int q = 0; q < 4; ++q)
          for (uint32_t c = tid * 16; c < nbytes[q]; c += kT * 16) cp_async16(dst + to[q] + c, page + from[q] + c);
      }
    };
    for (uint32_t k = 0; k < stages; ++k) {
      if (j_begin + k < j_end) issue(j_begin + k, raw_stage(k));
      cp_async_commit();
    }
    // Dequantization mapping: octet o of 8 dims, rows tr, tr + RPP, ...
    constexpr uint32_t OCT = DP / 8, RPP = kT / OCT;
    const uint32_t o = tid % OCT, tr = tid / OCT;
    uint32_t kinfo[8];
    k_slot_info(hd, 8 * o, D, kinfo);
    const uint32_t vmask = (1u << vb) - 1u, vco = hd.v_centroid_offset;
    const bool v_live = 8 * o < D;

    for (uint32_t j = j_begin; j < j_end; ++j) {
      if (stages == 3) cp_async_wait<2>(); else cp_async_wait<1>();
      __syncthreads();  // raw tile j from every thread; the previous tile's MMAs are done
      uint8_t* raw = raw_stage((j - j_begin) % stages);
      const uint32_t* words = reinterpret_cast<const uint32_t*>(raw);
      const uint32_t t0 = sink_end + j * kTile, n = min(kTile, region_end - t0);
      for (uint32_t r = tr; r < kTile; r += RPP) {
        uint4 kout = make_uint4(0, 0, 0, 0), vout = kout;
        if (r < n) {
          const uint32_t sg = r >> rl.seg_shift, i = r & seg_mask;
          const uint32_t kbit = (sg * rl.kc_seg + i * kc) * 8;
          const uint8_t* ksc = raw + rl.off_ks + sg * rl.ks_seg + i * 2 * ng;
          float y[8];
#pragma unroll
          for (int e = 0; e < 8; ++e) {
            const uint32_t info = kinfo[e];
            y[e] = 0.0f;
            if (info != ~0u) {
              const uint32_t bits = ((info >> 12) & 7u) + 1u;
              const uint32_t code = bits32(words, kbit + (info & 0xFFFu)) & ((1u << bits) - 1u);
              y[e] = cs[(info >> 20) + code] * half_at(ksc + 2 * ((info >> 16) & 7u));
            }
          }
          kout = pack8(y);
          if (v_live) {
            const uint32_t vbit = (rl.off_vc + sg * rl.vc_seg + i * vc) * 8 + 8 * o * vb;
            const uint64_t ww = uint64_t(bits32(words, vbit)) | (vb > 4 ? uint64_t(bits32(words, vbit + 32)) << 32 : 0ull);
            const float vs = half_at(raw + rl.off_vs + sg * rl.vs_seg + 2 * i);
#pragma unroll
            for (int e = 0; e < 8; ++e) y[e] = cs[vco + uint32_t((ww >> (e * vb)) & vmask)] * vs;
            vout = pack8(y);
          }
        }
        *reinterpret_cast<uint4*>(Ks + r * LD + 8 * o) = kout;
        *reinterpret_cast<uint4*>(Vs + r * LD + 8 * o) = vout;
      }
      __syncthreads();  // K^, V^ ready; the raw stage is free
      if (j + stages < j_end) issue(j + stages, raw);
      cp_async_commit();
      warp_tile<DP>(st, Qs, Ks, Vs, t0, n, D, warp, lane);
    }
    cp_async_wait<0>();
  } else {
    // ---- fp16 tiles (fp16 layer pages, or sink + window rows), two stages of K/V tiles filled
    // straight from the fp16 rows. Rows past a tile's end keep older (finite) rows or zeros.
    __half* kv = reinterpret_cast<__half*>(smem + a.sm.work);
    for (uint32_t idx = tid; idx < 4 * kTile * LD / 8; idx += kT)
      reinterpret_cast<uint4*>(kv)[idx] = make_uint4(0, 0, 0, 0);
    __syncthreads();  // zeros land before any cp.async into the same rows
    const uint16_t* blk = a.fp16_blocks ? a.fp16_blocks[seq] : nullptr;
    const uint32_t S = a.sink, W = a.window, H = a.n_kv;
    const uint32_t sink_lim = min(sink_end, vis_end), ring_lim = vis_end;
    // Tile cursor: page splits walk tiles [j_begin, j_end); the fp16 split walks sink rows
    // [0, sink_lim) then ring rows [qend, ring_lim), never across the ring's wrap.
    auto next = [&](uint32_t& cur, uint32_t& t0, uint32_t& n) -> bool {
      if (page_split) {
        if (cur >= j_end) return false;
        t0 = sink_end + cur * kTile, n = min(kTile, region_end - t0), ++cur;
        return true;
      }
      if (cur < sink_lim) {
        t0 = cur, n = min(kTile, sink_lim - cur), cur += n;
        return true;
      }
      cur = max(cur, qend);
      if (cur >= ring_lim) return false;
      const uint32_t rr = (cur - S) % W;
      t0 = cur, n = min(min(kTile, W - rr), ring_lim - cur), cur += n;
      return true;
    };
    auto row_ptr = [&](uint32_t t, bool v) -> const __half* {
      if (page_split) {
        const uint32_t rel = t - sink_end;
        const uint8_t* page = hd.pool + size_t(table[rel / P]) * hd.page_bytes;
        return reinterpret_cast<const __half*>(page + (v ? hd.v_codes : 0u) + size_t(rel % P) * 2 * D);
      }
      const __half* base = reinterpret_cast<const __half*>(blk);
      if (t < sink_end) return base + (size_t(v ? H : 0) * S + size_t(h) * S + t) * D;
      return base + (2 * size_t(H) * S + size_t(v ? H : 0) * W + size_t(h) * W + (t - S) % W) * D;
    };
    constexpr uint32_t OCT = DP / 8, RPP = kT / OCT;
    const uint32_t o = tid % OCT, tr = tid / OCT;
    auto issue = [&](uint32_t t0, uint32_t n, uint32_t stage) {
      __half* Kd = kv + (2 * stage) * kTile * LD;
      __half* Vd = Kd + kTile * LD;
      if (8 * o >= D) return;
      for (uint32_t r = tr; r < n; r += RPP) {
        cp_async16(Kd + r * LD + 8 * o, row_ptr(t0 + r, false) + 8 * o);
        cp_async16(Vd + r * LD + 8 * o, row_ptr(t0 + r, true) + 8 * o);
      }
    };
    uint32_t cur_issue = page_split ? j_begin : 0u, cur = cur_issue, t0 = 0, n = 0;
    for (uint32_t k = 0; k < 2; ++k) {
      if (next(cur_issue, t0, n)) issue(t0, n, k);
      cp_async_commit();
    }
    for (uint32_t k = 0; next(cur, t0, n); ++k) {
      cp_async_wait<1>();
      __syncthreads();  // tile k from every thread
      const __half* Kt = kv + (2 * (k & 1)) * kTile * LD;
      warp_tile<DP>(st, Qs, Kt, Kt + kTile * LD, t0, n, D, warp, lane);
      __syncthreads();  // every warp is done with this stage: refill it
      uint32_t t1 = 0, n1 = 0;
      if (next(cur_issue, t1, n1)) issue(t1, n1, k & 1);
      cp_async_commit();
    }
    cp_async_wait<0>();
  }

  // ---- Epilogue: row sums over the quad, normalise, un-rotate packed V, store.
  float lse2[2];
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    float l = st.l[hh];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    lse2[hh] = l > 0.0f ? st.m[hh] + log2f(l) : -INFINITY;
#pragma unroll
    for (int nt = 0; nt < DP / 8; ++nt) st.o[nt][2 * hh] *= inv, st.o[nt][2 * hh + 1] *= inv;
  }
  const size_t rows_total = size_t(a.total_q) * a.n_q;
  float* dst = a.total_splits == 1 ? a.out : a.part_o + size_t(split) * rows_total * D;
  if ((lane & 3) == 0) {
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      if (!ri.valid[hh]) continue;
      if (a.total_splits > 1) a.part_lse[size_t(split) * rows_total + ri.grow[hh]] = lse2[hh];
      else if (a.lse) a.lse[ri.grow[hh]] = lse2[hh] == -INFINITY ? -INFINITY : lse2[hh] * kLn2;
    }
  }
  const bool warp_live = __any_sync(0xffffffffu, ri.valid[0] || ri.valid[1]);
  if (!rotated) {
    if (warp_live) store_rows<DP / 8>(st.o, 0, D, ri, dst, lane);
    return;
  }
  // out = O R_v: A = O (16 x D, this warp's rows) as fp16 hi + lo, B = R_v staged in shared
  // memory 64 output columns at a time, also hi + lo; lo*hi + hi*lo + hi*hi in fp32.
  uint32_t ahi[DP / 16][4], alo[DP / 16][4];
#pragma unroll
  for (int kk = 0; kk < DP / 16; ++kk)
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const float x0 = st.o[2 * kk + (q >> 1)][(q & 1) * 2], x1 = st.o[2 * kk + (q >> 1)][(q & 1) * 2 + 1];
      const __half2 hv = __floats2half2_rn(x0, x1);
      const float2 hf = __half22float2(hv);
      ahi[kk][q] = *reinterpret_cast<const uint32_t*>(&hv);
      alo[kk][q] = pack_half2(x0 - hf.x, x1 - hf.y);
    }
  const float* R = hd.v_rotation;
  __half* Rh = reinterpret_cast<__half*>(smem);
  __half* Rl = Rh + DP * kRotLd;
  for (uint32_t nc = 0; nc * kRotCols < D; ++nc) {
    __syncthreads();  // the token loop's tiles / the previous chunk are no longer read
    for (uint32_t idx = tid; idx < DP * kRotCols; idx += kT) {
      const uint32_t k = idx / kRotCols, c = idx % kRotCols, col = nc * kRotCols + c;
      const float v = k < D && col < D ? R[size_t(k) * D + col] : 0.0f;
      const __half vh = __float2half_rn(v);
      Rh[k * kRotLd + c] = vh;
      Rl[k * kRotLd + c] = __float2half_rn(v - __half2float(vh));
    }
    __syncthreads();
    if (!warp_live) continue;
    float f[kRotCols / 8][4];
#pragma unroll
    for (int j = 0; j < int(kRotCols / 8); ++j) f[j][0] = f[j][1] = f[j][2] = f[j][3] = 0.0f;
#pragma unroll
    for (uint32_t kk = 0; kk < DP / 16; ++kk) {
      if (kk * 16 >= D) break;
#pragma unroll
      for (uint32_t np = 0; np < kRotCols / 16; ++np) {
        if (nc * kRotCols + np * 16 >= D) break;
        const uint32_t off = (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * kRotLd + np * 16 + (lane >> 4) * 8;
        uint32_t bh[4], bl[4];
        ldsm_x4_trans(bh, Rh + off);
        ldsm_x4_trans(bl, Rl + off);
        mma16816(f[2 * np], alo[kk], bh[0], bh[1]);
        mma16816(f[2 * np], ahi[kk], bl[0], bl[1]);
        mma16816(f[2 * np], ahi[kk], bh[0], bh[1]);
        mma16816(f[2 * np + 1], alo[kk], bh[2], bh[3]);
        mma16816(f[2 * np + 1], ahi[kk], bl[2], bl[3]);
        mma16816(f[2 * np + 1], ahi[kk], bh[2], bh[3]);
      }
    }
    store_rows<kRotCols / 8>(f, nc * kRotCols, D, ri, dst, lane);
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Split merge: one warp per row, splits in order.

struct MergeArgs {
  const float* part_o;
  const float* part_lse;
  float* out;
  float* lse;
  size_t rows;
  uint32_t D, splits;
};

__global__ void __launch_bounds__(kThreads) merge_kernel(const MergeArgs a) {
  const size_t row = size_t(blockIdx.x) * (kThreads / 32) + (threadIdx.x >> 5);
  const uint32_t lane = threadIdx.x & 31u, D = a.D;
  if (row >= a.rows) return;
  float M = -INFINITY;
  for (uint32_t k = 0; k < a.splits; ++k) M = fmaxf(M, a.part_lse[k * a.rows + row]);
  float acc[kDecodeMaxHeadDim / 32], wsum = 0.0f;
#pragma unroll
  for (int i = 0; i < int(kDecodeMaxHeadDim / 32); ++i) acc[i] = 0.0f;
  if (M != -INFINITY) {
    for (uint32_t k = 0; k < a.splits; ++k) {
      const float lk = a.part_lse[k * a.rows + row];
      if (lk == -INFINITY) continue;  // an empty split: weight 0
      const float wk = exp2f(lk - M);
      wsum += wk;
      const float* o = a.part_o + (k * a.rows + row) * D;
#pragma unroll
      for (int i = 0; i < int(kDecodeMaxHeadDim / 32); ++i)
        if (lane + 32 * i < D) acc[i] = __fmaf_rn(wk, o[lane + 32 * i], acc[i]);
    }
  }
  const float inv = wsum > 0.0f ? 1.0f / wsum : 0.0f;
#pragma unroll
  for (int i = 0; i < int(kDecodeMaxHeadDim / 32); ++i)
    if (lane + 32 * i < D) a.out[row * D + lane + 32 * i] = acc[i] * inv;
  if (a.lse && lane == 0) a.lse[row] = wsum > 0.0f ? (M + log2f(wsum)) * kLn2 : -INFINITY;
}

// ---------------------------------------------------------------------------------------------
// Host side.

int current_sm_count() {
  int dev = 0, n = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute(SMs)");
  return n;
}

std::string head_name(uint32_t h) { return "extend_attention: KV head " + std::to_string(h) + ": "; }

uint32_t padded_dim(uint32_t D) { return D <= 64 ? 64 : D <= 128 ? 128 : 256; }

uint32_t gqa_of(const DecodeParams& p) { return std::max(1u, p.n_kv_heads ? p.n_q_heads / p.n_kv_heads : 1u); }

// Warps per CTA: 8 (128 query rows share each dequantized tile) once a sequence's chunk fills
// at least four such blocks, 4 (64 rows, less idle work for short chunks) otherwise.
uint32_t warps_of(const ExtendParams& e) {
  if (e.warps == 4 || e.warps == 8) return e.warps;
  return uint64_t(e.max_q_len) * gqa_of(e.base) >= 4 * cta_rows(8) ? 8u : 4u;
}

void validate(const ExtendParams& e) {
  const DecodeParams& p = e.base;
  if (p.q_rot) fail(StatusCode::invalid_argument, "extend_attention: queries go unrotated in base.q; base.q_rot must be null");
  if (p.q_dtype > 2) fail(StatusCode::invalid_argument, "extend_attention: q_dtype must be 0 (f32), 1 (f16) or 2 (bf16)");
  if (p.n_q_heads == 0 || p.n_kv_heads == 0 || p.n_q_heads % p.n_kv_heads != 0)
    fail(StatusCode::invalid_argument, "extend_attention: n_q_heads must be a positive multiple of n_kv_heads");
  if (p.n_q_heads / p.n_kv_heads > kDecodeMaxGqa)
    fail(StatusCode::unsupported, "extend_attention: more than 16 query heads per KV head");
  if (p.head_dim == 0 || p.head_dim % 8 != 0)
    fail(StatusCode::invalid_argument, "extend_attention: head_dim must be a positive multiple of 8");
  if (p.head_dim > kDecodeMaxHeadDim) fail(StatusCode::unsupported, "extend_attention: head_dim > 256");
  const uint32_t P = p.page_size;
  if (P == 0 || (P < kTile ? kTile % P != 0 : P % kTile != 0))
    fail(StatusCode::unsupported, "extend_attention: page_size must divide 64 or be a multiple of 64");
  if (p.n_kv_heads > 65535) fail(StatusCode::unsupported, "extend_attention: more than 65535 KV heads");
  if (!std::isfinite(p.scale) || p.scale < 0.0f)
    fail(StatusCode::invalid_argument, "extend_attention: scale must be finite and >= 0");
  if (e.max_q_len == 0 || e.max_q_len > e.total_q)
    fail(StatusCode::invalid_argument, "extend_attention: max_q_len must be in [1, total_q]");
  if (e.warps != 0 && e.warps != 4 && e.warps != 8)
    fail(StatusCode::invalid_argument, "extend_attention: warps must be 0 (automatic), 4 or 8");
  if (p.max_len >= 0x80000000u) fail(StatusCode::unsupported, "extend_attention: max_len must be below 2^31");
  if (!p.heads || !p.heads_host || !p.page_table || !p.table_offset || !p.seq_len || !p.q || !p.out ||
      !p.workspace || !e.q_len || !e.q_offset)
    fail(StatusCode::null_pointer, "extend_attention: a required pointer is null");
  if (reinterpret_cast<uintptr_t>(p.out) % 8 != 0 || reinterpret_cast<uintptr_t>(p.workspace) % 256 != 0)
    fail(StatusCode::invalid_argument, "extend_attention: out must be 8-byte and workspace 256-byte aligned");
  if (p.sink_tokens + uint64_t(p.window_tokens) > 0 && (!p.seq_qend || !p.fp16_blocks))
    fail(StatusCode::null_pointer, "extend_attention: sink/window tokens need seq_qend and fp16_blocks");
  if (!p.fp16_layer && (!p.centroids || !e.k_rotations || !e.k_rotation_offset || !e.k_slot_dim))
    fail(StatusCode::null_pointer, "extend_attention: a packed layer needs centroids and the K rotation tables");
  const uint32_t D = p.head_dim;
  for (uint32_t h = 0; h < p.n_kv_heads; ++h) {
    const DecodeHead& hd = p.heads_host[h];
    if (!hd.pool) fail(StatusCode::null_pointer, head_name(h) + "null pool");
    if (reinterpret_cast<uintptr_t>(hd.pool) % 16 != 0) fail(StatusCode::invalid_argument, head_name(h) + "pool not 16-byte aligned");
    if (p.fp16_layer) {
      const size_t v_off = round16(2 * P * D);
      if (hd.n_k_groups != 0 || hd.k_code_bytes != 2 * D || hd.v_code_bytes != 2 * D || hd.v_codes != v_off ||
          hd.page_bytes < v_off + 2 * P * D || hd.page_bytes % 16 != 0)
        fail(StatusCode::invalid_argument, head_name(h) + "fp16 layer page layout differs from docs/cache-layout.md");
      continue;
    }
    if (!hd.v_rotation) fail(StatusCode::null_pointer, head_name(h) + "null V rotation");
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
    const size_t k_scales = round16(P * hd.k_code_bytes);
    const size_t v_codes = round16(uint32_t(k_scales) + 2 * P * hd.n_k_groups);
    const size_t v_scales = round16(uint32_t(v_codes) + P * hd.v_code_bytes);
    if (hd.k_scales != k_scales || hd.v_codes != v_codes || hd.v_scales != v_scales ||
        hd.page_bytes < round16(uint32_t(v_scales) + 2 * P) || hd.page_bytes % 16 != 0)
      fail(StatusCode::invalid_argument, head_name(h) + "page layout differs from docs/cache-layout.md");
  }
}

// Everything the launches need that depends only on host fields.
struct LaunchPlan {
  uint32_t dp, warps, gqa, qp, page_splits, total_splits, grid_x, prep_tokens;
  bool packed, fp16_split;
  size_t rows, off_qr, off_blk, off_po, off_pl, bytes;
};

size_t round256(size_t x) { return (x + 255) / 256 * 256; }

LaunchPlan make_plan(const ExtendParams& e) {
  const DecodeParams& p = e.base;
  LaunchPlan L{};
  L.dp = padded_dim(p.head_dim);
  L.warps = warps_of(e);
  L.gqa = gqa_of(p);
  L.qp = std::max(1u, cta_rows(L.warps) / L.gqa);
  L.packed = !p.fp16_layer;
  L.fp16_split = p.sink_tokens + uint64_t(p.window_tokens) > 0;
  L.page_splits = extend_splits(e);
  L.total_splits = L.page_splits + (L.fp16_split ? 1u : 0u);
  // Blocks: sum over sequences of ceil(q_len / qp) < total_q / qp + (sequences with queries).
  L.grid_x = uint32_t(std::min<uint64_t>((uint64_t(e.total_q) + L.qp - 1) / L.qp + std::min(p.n_seqs, e.total_q),
                                         0x7fffffffu));
  L.prep_tokens = std::max(1u, kPrepRows / L.gqa);
  L.rows = size_t(e.total_q) * p.n_q_heads;
  const size_t q_bytes = round256(L.rows * p.head_dim * 2);
  L.off_qr = q_bytes;
  L.off_blk = L.off_qr + (L.packed ? q_bytes : 0);
  L.off_po = L.off_blk + round256((size_t(p.n_seqs) + 1) * 4);
  const size_t po = L.total_splits > 1 ? round256(size_t(L.total_splits) * L.rows * p.head_dim * 4) : 0;
  L.off_pl = L.off_po + po;
  L.bytes = L.off_pl + (L.total_splits > 1 ? round256(size_t(L.total_splits) * L.rows * 4) : 0);
  return L;
}

template <int DP, int NW>
void launch_main(const KernelArgs& a, dim3 grid, cudaStream_t stream) {
  // Starts at 0: without the attribute the dynamic limit is 48 KiB minus the static shared memory.
  static std::atomic<uint32_t> raised{0};
  if (a.sm.total > raised.load()) {
    check(cudaFuncSetAttribute(extend_kernel<DP, NW>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(a.sm.total)),
          "cudaFuncSetAttribute(extend smem)");
    raised.store(a.sm.total);
  }
  extend_kernel<DP, NW><<<grid, 32 * NW, a.sm.total, stream>>>(a);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    // Say what was asked of the launch: these numbers are what a launch failure depends on.
    cudaFuncAttributes fa{};
    cudaFuncGetAttributes(&fa, extend_kernel<DP, NW>);
    check(e, ("extend_kernel<" + std::to_string(DP) + "," + std::to_string(NW) + "> launch (grid " +
              std::to_string(grid.x) + "x" + std::to_string(grid.y) + "x" + std::to_string(grid.z) +
              ", dynamic smem " + std::to_string(a.sm.total) + ", static " + std::to_string(fa.sharedSizeBytes) +
              ", max dynamic " + std::to_string(fa.maxDynamicSharedSizeBytes) + ", regs " +
              std::to_string(fa.numRegs) + ")").c_str());
  }
}

}  // namespace

uint32_t extend_splits(const ExtendParams& e) {
  const DecodeParams& p = e.base;
  if (p.splits != 0) return std::min(p.splits, kMaxSplits);
  const uint32_t gqa = gqa_of(p), warps = warps_of(e);
  const uint32_t qp = std::max(1u, cta_rows(warps) / gqa);
  // Estimated CTAs without splitting; aim for 8 warps per SM, two waves' worth of CTAs.
  const uint64_t blocks = std::min<uint64_t>((uint64_t(e.total_q) + qp - 1) / qp + std::min(p.n_seqs, e.total_q),
                                             uint64_t(p.n_seqs) * ((uint64_t(e.max_q_len) + qp - 1) / qp));
  const uint64_t ctas = std::max<uint64_t>(1, blocks * std::max(1u, p.n_kv_heads));
  const uint64_t sms = uint64_t(p.sm_count > 0 ? p.sm_count : current_sm_count());
  const uint64_t per_sm = warps == 4 ? 2 : 1;  // resident CTAs at D <= 128 (registers)
  const uint64_t want = (2 * per_sm * sms + ctas - 1) / ctas;
  const uint64_t by_len = std::max<uint64_t>(1, (uint64_t(p.max_len) + 511) / 512);
  return uint32_t(std::max<uint64_t>(1, std::min<uint64_t>({want, by_len, kMaxSplits})));
}

size_t extend_workspace_bytes(const ExtendParams& e) {
  if (e.base.n_seqs == 0 || e.total_q == 0) return 0;
  return make_plan(e).bytes;
}

void extend_attention(const ExtendParams& e, void* stream_ptr) {
  const DecodeParams& p = e.base;
  if (p.n_seqs == 0 || e.total_q == 0) return;
  validate(e);
  const LaunchPlan L = make_plan(e);
  if (L.grid_x == 0x7fffffffu || L.total_splits > 65535)
    fail(StatusCode::unsupported, "extend_attention: too many query blocks for one launch");

  // Shared memory: the largest raw tile over the heads, 3 stages (2 when the device is short).
  uint32_t raw_stride = 0;
  if (L.packed)
    for (uint32_t h = 0; h < p.n_kv_heads; ++h) {
      const DecodeHead& hd = p.heads_host[h];
      raw_stride = std::max(raw_stride, raw_layout(p.page_size, hd.k_code_bytes, hd.n_k_groups, hd.v_code_bytes).bytes);
    }
  raw_stride = round16(raw_stride);
  const bool fp16_tiles = L.fp16_split || !L.packed;
  int dev = 0, optin = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute(smem)");
  const uint32_t static_smem = uint32_t(sizeof(DecodeHead)) + 64;
  uint32_t stages = 3;
  const uint32_t rows = cta_rows(L.warps);
  SmemPlan sm = smem_plan(L.dp, rows, L.packed, fp16_tiles, raw_stride, stages);
  if (sm.total + static_smem > uint32_t(optin)) sm = smem_plan(L.dp, rows, L.packed, fp16_tiles, raw_stride, stages = 2);
  if (sm.total + static_smem > uint32_t(optin))
    fail(StatusCode::unsupported, "extend_attention: needs " + std::to_string(sm.total) +
                                      " bytes of shared memory per block, the device allows " + std::to_string(optin));

  auto* ws = static_cast<uint8_t*>(p.workspace);
  const float scale = p.scale > 0.0f ? p.scale : float(1.0 / std::sqrt(double(p.head_dim)));
  auto stream = static_cast<cudaStream_t>(stream_ptr);

  PrepArgs pa{};
  pa.q = p.q, pa.heads = p.heads, pa.k_rot = e.k_rotations, pa.k_rot_off = e.k_rotation_offset;
  pa.k_slot_dim = e.k_slot_dim, pa.q_len = e.q_len;
  pa.q_orig = reinterpret_cast<__half*>(ws);
  pa.q_rotd = L.packed ? reinterpret_cast<__half*>(ws + L.off_qr) : nullptr;
  pa.blk_off = reinterpret_cast<uint32_t*>(ws + L.off_blk);
  pa.c = float(double(scale) * 1.4426950408889634);
  pa.q_dtype = p.q_dtype, pa.n_seqs = p.n_seqs, pa.n_q = p.n_q_heads, pa.gqa = L.gqa, pa.D = p.head_dim;
  pa.total_q = e.total_q, pa.qp = L.qp, pa.tokens_per_cta = L.prep_tokens;
  const uint32_t prep_x = (e.total_q + L.prep_tokens - 1) / L.prep_tokens + 1;
  prep_kernel<<<dim3(prep_x, p.n_kv_heads), kThreads, 0, stream>>>(pa);
  check(cudaGetLastError(), "extend prep_kernel launch");

  KernelArgs a{};
  a.heads = p.heads, a.centroids = p.centroids, a.page_table = p.page_table, a.table_offset = p.table_offset;
  a.seq_len = p.seq_len, a.seq_qend = p.seq_qend, a.fp16_blocks = p.fp16_blocks;
  a.q_len = e.q_len, a.q_offset = e.q_offset, a.blk_off = pa.blk_off;
  a.q_orig = pa.q_orig, a.q_rotd = pa.q_rotd, a.out = p.out, a.lse = p.lse;
  a.part_o = L.total_splits > 1 ? reinterpret_cast<float*>(ws + L.off_po) : nullptr;
  a.part_lse = L.total_splits > 1 ? reinterpret_cast<float*>(ws + L.off_pl) : nullptr;
  a.sm = sm;
  a.n_seqs = p.n_seqs, a.n_q = p.n_q_heads, a.n_kv = p.n_kv_heads, a.gqa = L.gqa, a.D = p.head_dim;
  a.page_size = p.page_size, a.sink = p.sink_tokens, a.window = p.window_tokens, a.total_q = e.total_q;
  a.qp = L.qp, a.page_splits = L.page_splits, a.total_splits = L.total_splits, a.fp16_layer = p.fp16_layer ? 1u : 0u;
  const dim3 grid(L.grid_x, p.n_kv_heads, L.total_splits);
  if (L.warps == 4) {
    switch (L.dp) {
      case 64: launch_main<64, 4>(a, grid, stream); break;
      case 128: launch_main<128, 4>(a, grid, stream); break;
      default: launch_main<256, 4>(a, grid, stream); break;
    }
  } else {
    switch (L.dp) {
      case 64: launch_main<64, 8>(a, grid, stream); break;
      case 128: launch_main<128, 8>(a, grid, stream); break;
      default: launch_main<256, 8>(a, grid, stream); break;
    }
  }
  if (L.total_splits > 1) {
    MergeArgs m{a.part_o, a.part_lse, p.out, p.lse, L.rows, p.head_dim, L.total_splits};
    const uint64_t blocks = (L.rows + kThreads / 32 - 1) / (kThreads / 32);
    if (blocks > 0x7fffffffu) fail(StatusCode::unsupported, "extend_attention: too many rows for the merge launch");
    merge_kernel<<<uint32_t(blocks), kThreads, 0, stream>>>(m);
    check(cudaGetLastError(), "extend merge_kernel launch");
  }
}

}  // namespace kvbits::cuda
