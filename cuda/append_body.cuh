// kvbits CUDA — the bodies of the append kernels (append.cu), written once for the device and the
// host. A block's work is a sequence of phases; `Threads` runs one phase on every thread of the
// block and then the barrier (DeviceThreads: this thread, then __syncthreads; HostThreads: every
// thread in turn). append.cu runs them on the GPU; tests/cache/test_append_emulated.cpp runs the
// very same sequence on the CPU, so the kernels' indexing, the fast path's bound and its exact
// fallback are checked against the CPU encoder on machines without a GPU.
// See append.cu for the method and the bound.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cuda/append.hpp"
#include "cuda/half_bits.cuh"
#include "quant/canonical_sum.hpp"

#ifndef __CUDA_ARCH__
#include <algorithm>

#include "kvbits/half.hpp"
#endif

namespace kvbits::cuda::append_body {

#define KVB_HD __host__ __device__ inline
#ifdef __CUDACC__
#define KVB_HD_OUT_OF_LINE static __host__ __device__ __noinline__
#else
#define KVB_HD_OUT_OF_LINE inline
#endif
#ifdef __CUDA_ARCH__
#define KVB_UNROLL _Pragma("unroll")
#else
#define KVB_UNROLL
#endif

constexpr uint32_t kThreads = 256;
constexpr uint32_t kMaxMatrices = kAppendMaxGroups + 1;  // K groups and V
constexpr uint32_t kCheckRows = 4;                        // input rows per check-only block

// ---- running a phase on every thread of a block ----

struct DeviceThreads {
  template <class F>
  KVB_HD void operator()(F&& f) const {
#ifdef __CUDA_ARCH__
    f(uint32_t(threadIdx.x), uint32_t(blockDim.x));
    __syncthreads();
#else
    (void)f;
#endif
  }
};

struct HostThreads {
  template <class F>
  void operator()(F&& f) const {
    for (uint32_t tid = 0; tid < kThreads; ++tid) f(tid, kThreads);
  }
};

// ---- arithmetic that must round the same on both sides ----

KVB_HD float fma32(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fmaf(a, b, c);
#endif
}

KVB_HD uint16_t to_half_bits(float x) {
#ifdef __CUDA_ARCH__
  return __half_as_ushort(__float2half_rn(x));
#else
  return float_to_half(x);
#endif
}
KVB_HD float half_bits_to_float(uint16_t h) {
#ifdef __CUDA_ARCH__
  return __half2float(__ushort_as_half(h));
#else
  return half_to_float(h);
#endif
}
KVB_HD bool finite32(float x) {
#ifdef __CUDA_ARCH__
  return isfinite(x);
#else
  return std::isfinite(x);
#endif
}
KVB_HD float abs32(float x) {
#ifdef __CUDA_ARCH__
  return fabsf(x);
#else
  return std::fabs(x);
#endif
}
KVB_HD float bits_to_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

KVB_HD void error_min(unsigned long long* word, unsigned long long key) {
#ifdef __CUDA_ARCH__
  atomicMin(word, key);
#else
  *word = std::min(*word, key);
#endif
}

KVB_HD float4 load_rot4(const float4* p) {
#ifdef __CUDA_ARCH__
  return __ldg(p);
#else
  return *p;
#endif
}

// Loads of what other blocks of the same launch wrote (the fused commit): from L2, not L1.
KVB_HD uint32_t load_cg32(const uint32_t* p) {
#ifdef __CUDA_ARCH__
  return __ldcg(p);
#else
  return *p;
#endif
}
KVB_HD uint16_t load_cg16(const uint16_t* p) {
#ifdef __CUDA_ARCH__
  return __ldcg(reinterpret_cast<const unsigned short*>(p));
#else
  return *p;
#endif
}
KVB_HD unsigned long long load_error(const unsigned long long* p) {
#ifdef __CUDA_ARCH__
  return *reinterpret_cast<const volatile unsigned long long*>(p);
#else
  return *p;
#endif
}

// ---- inputs and positions ----

KVB_HD float load_input(const void* p, size_t i, uint32_t dtype) {
  if (dtype == 0) return static_cast<const float*>(p)[i];
  const unsigned short b = static_cast<const unsigned short*>(p)[i];
  if (dtype == 1) return half_bits_to_float(b);
  return bits_to_float(uint32_t(b) << 16);  // bf16
}

// The entry whose rows contain `row` (entries are in row order).
KVB_HD uint32_t entry_of_row(const AppendEntry* e, uint32_t n, uint32_t row) {
  uint32_t lo = 0, hi = n;  // invariant: e[lo].first_row <= row < e[hi].first_row
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (e[mid].first_row <= row) lo = mid; else hi = mid;
  }
  return lo;
}

// Offsets (in fp16 values) of sink row t / the ring row of token t inside a (sequence, layer) block.
KVB_HD size_t sink_offset(const AppendParams& p, uint32_t tensor, uint32_t h, uint32_t t) {
  return (tensor ? size_t(p.n_heads) * p.sink * p.head_dim : 0) + (size_t(h) * p.sink + t) * p.head_dim;
}
KVB_HD size_t ring_offset(const AppendParams& p, uint32_t tensor, uint32_t h, uint32_t t) {
  return size_t(2) * p.n_heads * p.sink * p.head_dim + (tensor ? size_t(p.n_heads) * p.window * p.head_dim : 0) +
         (size_t(h) * p.window + (t - p.sink) % p.window) * p.head_dim;
}

// Checks one input value; records the error key of a problem (append.hpp, AppendError).
KVB_HD void check_value(const AppendParams& p, float x, bool held_fp16, uint32_t row, uint32_t h, uint32_t tensor,
                        uint32_t dim) {
  uint32_t kind;
  if (!finite32(x)) kind = AppendError::non_finite;
  else if (held_fp16 && (to_half_bits(x) & 0x7C00u) == 0x7C00u) kind = AppendError::fp16_range;
  else return;
  const unsigned long long key =
      ((((unsigned long long)row * p.n_heads + h) * 2 + tensor) * p.head_dim + dim) * 2 + kind;
  error_min(p.error, key);
}

// K (tensor 0) or V (1), head h, dim `dim` of packed token `tok` as it is to be encoded, in two
// steps so that a thread can have several loads in flight: packed_raw loads it (from the ring
// for a token leaving the window, else from the input), packed_finish checks an input value and
// rounds it through fp16 when there is a window.
KVB_HD float packed_raw(const AppendParams& p, const AppendToken& tok, uint32_t h, uint32_t tensor, uint32_t dim) {
  if (tok.in_row == AppendToken::kFromRing)
    return half_bits_to_float(p.entries[tok.entry].fp16[ring_offset(p, tensor, h, tok.t) + dim]);
  return load_input(tensor ? p.v : p.k, (size_t(tok.in_row) * p.n_heads + h) * p.head_dim + dim, p.dtype);
}
KVB_HD float packed_finish(const AppendParams& p, const AppendToken& tok, uint32_t h, uint32_t tensor, uint32_t dim,
                           float x) {
  if (tok.in_row == AppendToken::kFromRing) return x;
  check_value(p, x, p.window > 0 || p.fp16_layer, tok.in_row, h, tensor, dim);
  return p.window > 0 ? half_bits_to_float(to_half_bits(x)) : x;
}

// Brings a line into L1 ahead of its use (a hint; nothing on the host).
KVB_HD void prefetch_l1(const void* ptr) {
#ifdef __CUDA_ARCH__
  asm volatile("prefetch.global.L1 [%0];" ::"l"(__cvta_generic_to_global(ptr)));
#else
  (void)ptr;
#endif
}

// ---- the encode block ----

// A rotation group as the encode block uses it.
struct Matrix {
  uint32_t bits, first, dims, byte_offset, rot_offset, cb_offset;
  uint32_t xoff;       // its values in a token's row of xs (a multiple of 4)
  uint32_t code_base;  // its first output: K slot `first`, or D for V (codes rows are K slots then V rows)
  float margin;        // fast-path margin of its dimension (fast_margin)
};

// The fast path's margin for a coordinate of a d-dim group, in units of y = s / n (append.cu):
// 1.002 d 2^-24 + 2^-77, rounded to fp32.
KVB_HD float fast_margin(uint32_t d) { return float(1.002 * double(d) * 0x1p-24 + 0x1p-77); }

// Shared memory of one encode block: the fixed part and the dynamic part (layout below).
struct EncodeShared {
  // The head's AppendHead as raw words (a struct with member initialisers cannot be __shared__).
  alignas(16) uint32_t head_words[(sizeof(AppendHead) + 3) / 4];
  Matrix mats[kMaxMatrices];
  uint32_t n_mats;  // K groups + V
  uint32_t m0, m1;  // the matrices this block encodes
  uint32_t o0, o1;  // their outputs (K slots [0, D), V rows [D, 2D))
  uint32_t b0, b1;  // their bytes of the staged code row
  uint32_t tok0, nt;
  uint32_t last;    // the fused commit: this block finished encoding last
  AppendToken* toks;  // [TT]
  KVB_HD const AppendHead& head() const { return *reinterpret_cast<const AppendHead*>(head_words); }
  float* xs;        // [TT][xw]
  double* nrm;      // [TT][kMaxMatrices]
  float* inv;       // [TT][kMaxMatrices]: fp32(1 / n), 0 where the fast path is not allowed
  uint8_t* codes;   // [TT][2D]
  float* cent;      // [max_cb]
  float* bnd;       // [max_cb]
  uint32_t* slot;   // [D]: hp slot -> original dim (K)
};

KVB_HD size_t enc_xw(uint32_t D) { return size_t(2) * D + 4 * kMaxMatrices; }  // floats per token
KVB_HD size_t enc_off_norm(uint32_t tt, uint32_t D) { return (tt * enc_xw(D) * 4 + 15) / 16 * 16; }
KVB_HD size_t enc_off_inv(uint32_t tt, uint32_t D) { return enc_off_norm(tt, D) + size_t(tt) * kMaxMatrices * 8; }
KVB_HD size_t enc_off_codes(uint32_t tt, uint32_t D) {
  return (enc_off_inv(tt, D) + size_t(tt) * kMaxMatrices * 4 + 15) / 16 * 16;
}
KVB_HD size_t enc_off_cent(uint32_t tt, uint32_t D) { return (enc_off_codes(tt, D) + size_t(tt) * 2 * D + 15) / 16 * 16; }
KVB_HD size_t enc_smem_bytes(uint32_t tt, uint32_t D, uint32_t max_cb) {
  return enc_off_cent(tt, D) + size_t(max_cb) * 8 + size_t(D) * 4;
}

KVB_HD void enc_bind(EncodeShared& s, unsigned char* dyn, uint32_t tt, uint32_t D, uint32_t max_cb) {
  s.xs = reinterpret_cast<float*>(dyn);
  s.nrm = reinterpret_cast<double*>(dyn + enc_off_norm(tt, D));
  s.inv = reinterpret_cast<float*>(dyn + enc_off_inv(tt, D));
  s.codes = dyn + enc_off_codes(tt, D);
  s.cent = reinterpret_cast<float*>(dyn + enc_off_cent(tt, D));
  s.bnd = s.cent + max_cb;
  s.slot = reinterpret_cast<uint32_t*>(s.bnd + max_cb);
}

// Number of boundaries strictly below y (boundaries ascending), fp64 and fp32 comparisons.
KVB_HD uint32_t code_of(const float* bnd, uint32_t nb, double y) {
  uint32_t lo = 0, hi = nb;
  while (lo < hi) {
    const uint32_t mid = (lo + hi) / 2;
    if (double(bnd[mid]) < y) lo = mid + 1; else hi = mid;
  }
  return lo;
}
KVB_HD uint32_t code_of32(const float* bnd, uint32_t nb, float y) {
  uint32_t lo = 0, hi = nb;
  while (lo < hi) {
    const uint32_t mid = (lo + hi) / 2;
    if (bnd[mid] < y) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// The canonical coordinate (src/quant/canonical_sum.hpp) of rotation row r with the fp32 values
// x (16-byte aligned, zero past dims), reading the rotation in its j-blocks of four. Rare on the
// device (an undecided coordinate), so kept out of line: its 32 fp64 partials do not add to the
// registers of the fast loops.
KVB_HD_OUT_OF_LINE double exact_dot(const float* rot, const Matrix& m, uint32_t r, const float* x) {
  const float4* R4 = reinterpret_cast<const float4*>(rot + m.rot_offset) + r;
  const float4* X4 = reinterpret_cast<const float4*>(x);
  return canonical_sum_quads(m.dims, [&](uint32_t q, double* t) {
    const float4 w = load_rot4(R4 + size_t(q) * m.dims);
    const float4 v = X4[q];
    t[0] = double(w.x) * double(v.x);
    t[1] = double(w.y) * double(v.y);
    t[2] = double(w.z) * double(v.z);
    t[3] = double(w.w) * double(v.w);
  });
}

#ifndef __CUDA_ARCH__
// Host emulation only: coordinates decided, and how many of them by the exact fallback (a test
// checks that the fast path decides almost all of them; bit-identity alone would not notice).
struct DecideCount {
  uint64_t all = 0, exact = 0;
};
inline DecideCount host_decide_count;
#endif

// The code of coordinate r of matrix `mi` for token t, given its fast fp32 sum (append.cu: the
// fast decision and its bound). Falls back to the canonical fp64 coordinate when undecided.
KVB_HD uint32_t decide(const AppendParams& p, const EncodeShared& s, uint32_t t, uint32_t mi, uint32_t r, float sum) {
  const Matrix& m = s.mats[mi];
  const float* bnd = s.bnd + m.cb_offset;
  const uint32_t nb = (1u << m.bits) - 1;
  const double n = s.nrm[t * kMaxMatrices + mi];
#ifndef __CUDA_ARCH__
  ++host_decide_count.all;
#endif
  if (n == 0.0) return code_of(bnd, nb, 0.0);
  const float q = s.inv[t * kMaxMatrices + mi];
  if (q != 0.0f && !p.force_exact) {
    const float y = sum * q;
    if (finite32(y)) {
      const uint32_t c = code_of32(bnd, nb, y);
      const float margin = m.margin + abs32(y) * 0x1p-22f;
      if ((c == 0 || y - bnd[c - 1] > margin) && (c == nb || bnd[c] - y > margin)) return c;
    }
  }
#ifndef __CUDA_ARCH__
  ++host_decide_count.exact;
#endif
  const float* x = s.xs + size_t(t) * enc_xw(p.head_dim) + m.xoff;
  return code_of(bnd, nb, exact_dot(s.head().rot, m, r, x) / n);
}

// The matrix (in [m0, m1)) that output o belongs to.
KVB_HD uint32_t matrix_of(const EncodeShared& s, uint32_t o) {
  uint32_t m = s.m0;
  while (m + 1 < s.m1 && s.mats[m + 1].code_base <= o) ++m;
  return m;
}

// Check-only block: rows [first, first + kCheckRows) of the fp16 row list (sink and ring tokens;
// packed tokens are checked by their encode blocks). Every one of them is held in fp16.
KVB_HD void check_rows(const AppendParams& p, uint32_t first, uint32_t h, uint32_t tid, uint32_t nthreads) {
  const uint32_t D = p.head_dim;
  for (uint32_t idx = tid; idx < kCheckRows * 2 * D; idx += nthreads) {
    const uint32_t i = first + idx / (2 * D), tensor = idx % (2 * D) / D, dim = idx % D;
    if (i >= p.n_fp16_rows) break;
    const uint32_t row = p.fp16_rows[i];
    const float x = load_input(tensor ? p.v : p.k, (size_t(row) * p.n_heads + h) * D + dim, p.dtype);
    check_value(p, x, true, row, h, tensor, dim);
  }
}

// Phase 0: the block's tokens, its head descriptor and matrices, the codebook tables.
// part: 0 = the K groups, 1 = V, 2 = both.
KVB_HD void enc_prologue(const AppendParams& p, EncodeShared& s, uint32_t tok0, uint32_t nt, uint32_t h,
                         uint32_t part, uint32_t tid, uint32_t nthreads) {
  static_assert(sizeof(AppendHead) % 4 == 0, "AppendHead is copied as words");
  const AppendHead* src = p.heads + size_t(p.layer) * p.n_heads + h;
  if (tid < nt) s.toks[tid] = p.tokens[tok0 + tid];
  const uint32_t* words = reinterpret_cast<const uint32_t*>(src);
  for (uint32_t i = tid; i < sizeof(AppendHead) / 4; i += nthreads) s.head_words[i] = words[i];
  const uint32_t D = p.head_dim;
  if (tid == 0) {
    s.tok0 = tok0, s.nt = nt;
    const uint32_t nk = src->n_k_groups, kc = src->k_code_bytes;
    uint32_t xoff = 0;
    for (uint32_t m = 0; m < nk; ++m) {
      const AppendGroup& g = src->k[m];
      s.mats[m] = {g.bits, g.first, g.dims, g.byte_offset, g.rot_offset, g.cb_offset, xoff, g.first, fast_margin(g.dims)};
      xoff += (g.dims + 3) & ~3u;
    }
    const AppendGroup& g = src->v;
    s.mats[nk] = {g.bits, 0, g.dims, kc + g.byte_offset, g.rot_offset, g.cb_offset, xoff, D, fast_margin(g.dims)};
    s.n_mats = nk + 1;
    const uint32_t kv = kc + src->v_code_bytes;  // fp16 layer: nk = 0, kc = vc = 2D
    s.m0 = part == 1 ? nk : 0, s.m1 = part == 0 ? nk : nk + 1;
    s.o0 = part == 1 ? D : 0, s.o1 = part == 0 ? D : 2 * D;
    s.b0 = part == 1 ? kc : 0, s.b1 = part == 0 ? kc : kv;
  }
  if (!src->fp16) {
    const float* cent = src->cent;
    const float* bnd = src->bnd;
    for (uint32_t i = tid; i < src->n_cb; i += nthreads) {
      s.cent[i] = cent[i];
      s.bnd[i] = bnd[i];
    }
    if (part != 1) {
      const uint32_t* slot = src->slot_dim;
      for (uint32_t i = tid; i < D; i += nthreads) s.slot[i] = slot[i];
    }
  }
}

// Values a thread loads at once in the load phases (their loads are in flight together).
constexpr uint32_t kLoadBatch = 8;

// fp16 layer, after phase 0: the staged row is the fp16 K row then the fp16 V row (outputs
// [o0, o1) of this block).
KVB_HD void enc_fp16_rows(const AppendParams& p, const EncodeShared& s, uint32_t h, uint32_t tid, uint32_t nthreads) {
  const uint32_t D = p.head_dim, width = s.o1 - s.o0, total = s.nt * width;
  for (uint32_t base = tid; base < total; base += kLoadBatch * nthreads) {
    float x[kLoadBatch];
    KVB_UNROLL
    for (uint32_t k = 0; k < kLoadBatch; ++k) {
      const uint32_t idx = base + k * nthreads, t = idx / width, o = s.o0 + idx % width;
      x[k] = idx < total ? packed_raw(p, s.toks[t], h, o / D, o % D) : 0.0f;
    }
    KVB_UNROLL
    for (uint32_t k = 0; k < kLoadBatch; ++k) {
      const uint32_t idx = base + k * nthreads, t = idx / width, o = s.o0 + idx % width;
      if (idx >= total) break;
      const float v = packed_finish(p, s.toks[t], h, o / D, o % D, x[k]);
      const size_t item = size_t(s.tok0 + t) * p.n_heads + h;
      reinterpret_cast<uint16_t*>(p.stage_codes + item * p.code_stride)[o] = to_half_bits(v);
    }
  }
}

// Where element idx of the load phase goes: token t, position pos of its xs row; tensor and
// input dim of its value, or live = false for padding and missing tokens (stored as zero).
struct LoadAt {
  uint32_t t, pos, tensor, dim;
  bool live;
};
KVB_HD LoadAt locate_load(const EncodeShared& s, uint32_t x0, uint32_t width, uint32_t idx) {
  LoadAt a;
  a.t = idx / width, a.pos = x0 + idx % width;
  uint32_t m = s.m0;
  while (m + 1 < s.m1 && s.mats[m + 1].xoff <= a.pos) ++m;
  const uint32_t j = a.pos - s.mats[m].xoff;
  const bool is_v = m + 1 == s.n_mats;
  a.tensor = is_v ? 1 : 0;
  a.live = a.t < s.nt && j < s.mats[m].dims;
  a.dim = !a.live ? 0 : is_v ? j : s.slot[s.mats[m].first + j];
  return a;
}

// Phase 1: the tokens' values of the block's matrices (K in hp slot order), zero in the padding
// between groups and for the tile's missing tokens. Decode-step blocks (rows = true) also ask
// for their rotation rows to be brought into L1 while the norms run.
KVB_HD void enc_load(const AppendParams& p, EncodeShared& s, uint32_t tt, uint32_t h, bool rows, uint32_t tid,
                     uint32_t nthreads) {
  const size_t XW = enc_xw(p.head_dim);
  const uint32_t x0 = s.mats[s.m0].xoff;
  const uint32_t x1 = s.mats[s.m1 - 1].xoff + ((s.mats[s.m1 - 1].dims + 3) & ~3u);
  const uint32_t width = x1 - x0, total = tt * width;
  for (uint32_t base = tid; base < total; base += kLoadBatch * nthreads) {
    float x[kLoadBatch];
    KVB_UNROLL
    for (uint32_t k = 0; k < kLoadBatch; ++k) {
      const uint32_t idx = base + k * nthreads;
      const LoadAt a = locate_load(s, x0, width, idx < total ? idx : 0);
      x[k] = idx < total && a.live ? packed_raw(p, s.toks[a.t], h, a.tensor, a.dim) : 0.0f;
    }
    KVB_UNROLL
    for (uint32_t k = 0; k < kLoadBatch; ++k) {
      const uint32_t idx = base + k * nthreads;
      if (idx >= total) break;
      const LoadAt a = locate_load(s, x0, width, idx);
      s.xs[a.t * XW + a.pos] = a.live ? packed_finish(p, s.toks[a.t], h, a.tensor, a.dim, x[k]) : 0.0f;
    }
  }
  if (!rows) return;
  const AppendHead& hd = s.head();
  for (uint32_t o = s.o0 + tid; o < s.o1; o += nthreads) {
    const Matrix& m = s.mats[matrix_of(s, o)];
    const float4* R4 = reinterpret_cast<const float4*>(hd.rot + m.rot_offset) + (o - m.code_base);
    for (uint32_t jb = 0; jb < (m.dims + 3) / 4; ++jb) prefetch_l1(R4 + size_t(jb) * m.dims);
  }
}

// Phase 2: group norms (canonical sums) and the fast path's 1 / n, one thread per (token, matrix).
KVB_HD void enc_norms(const AppendParams& p, EncodeShared& s, uint32_t tid, uint32_t nthreads) {
  const size_t XW = enc_xw(p.head_dim);
  const uint32_t nm = s.m1 - s.m0;
  for (uint32_t idx = tid; idx < s.nt * nm; idx += nthreads) {
    const uint32_t t = idx / nm, m = s.m0 + idx % nm;
    const float* x = s.xs + t * XW + s.mats[m].xoff;
    const double nsq = canonical_sum(s.mats[m].dims, [&](uint32_t j) { return double(x[j]) * double(x[j]); });
    const double n = sqrt(nsq);
    s.nrm[t * kMaxMatrices + m] = n;
    // The fast path needs 2^-60 <= n <= 2^60 (append.cu); elsewhere every coordinate is exact.
    s.inv[t * kMaxMatrices + m] = n >= 0x1p-60 && n <= 0x1p60 ? float(1.0 / n) : 0.0f;
  }
}

// Phase 3, decode steps (TT = 1 or 4): thread o owns output o of the block for all TT tokens. A
// whole rotation row chunk is loaded before the FMAs (all loads in flight at once); with one
// token the dot runs as four independent chains (one per lane of the float4) to shorten it.
template <int TT>
KVB_HD void enc_codes_rows(const AppendParams& p, EncodeShared& s, uint32_t tid, uint32_t nthreads) {
  constexpr int NS = TT == 1 ? 4 : 1;
  constexpr uint32_t kChunk = TT == 1 ? 32 : 16;  // float4 of the row held at once
  const AppendHead& hd = s.head();
  const size_t XW = enc_xw(p.head_dim);
  for (uint32_t o = s.o0 + tid; o < s.o1; o += nthreads) {
    const uint32_t mi = matrix_of(s, o);
    const Matrix& m = s.mats[mi];
    const uint32_t r = o - m.code_base, n_jb = (m.dims + 3) / 4;
    const float4* R4 = reinterpret_cast<const float4*>(hd.rot + m.rot_offset) + r;
    float acc[TT][NS];
    for (int t = 0; t < TT; ++t)
      for (int c = 0; c < NS; ++c) acc[t][c] = 0.0f;
    for (uint32_t jb0 = 0; jb0 < n_jb; jb0 += kChunk) {
      float4 w[kChunk];
      KVB_UNROLL
      for (uint32_t c = 0; c < kChunk; ++c)
        w[c] = jb0 + c < n_jb ? load_rot4(R4 + size_t(jb0 + c) * m.dims) : make_float4(0.f, 0.f, 0.f, 0.f);
      KVB_UNROLL
      for (uint32_t c = 0; c < kChunk; ++c) {
        if (jb0 + c >= n_jb) break;
        KVB_UNROLL
        for (int t = 0; t < TT; ++t) {
          const float4 x = *reinterpret_cast<const float4*>(s.xs + t * XW + m.xoff + 4 * (jb0 + c));
          if constexpr (NS == 4) {
            acc[t][0] = fma32(w[c].x, x.x, acc[t][0]);
            acc[t][1] = fma32(w[c].y, x.y, acc[t][1]);
            acc[t][2] = fma32(w[c].z, x.z, acc[t][2]);
            acc[t][3] = fma32(w[c].w, x.w, acc[t][3]);
          } else {
            acc[t][0] = fma32(w[c].x, x.x, acc[t][0]);
            acc[t][0] = fma32(w[c].y, x.y, acc[t][0]);
            acc[t][0] = fma32(w[c].z, x.z, acc[t][0]);
            acc[t][0] = fma32(w[c].w, x.w, acc[t][0]);
          }
        }
      }
    }
    for (int t = 0; t < TT; ++t) {
      if (uint32_t(t) >= s.nt) break;
      float sum = acc[t][0];
      if constexpr (NS == 4) sum = (acc[t][0] + acc[t][1]) + (acc[t][2] + acc[t][3]);
      s.codes[t * 2 * p.head_dim + o] = uint8_t(decide(p, s, uint32_t(t), mi, r, sum));
    }
  }
}

// Phase 3, prefill (TT = 16 or 64, both parts): a task is a row pair (2q, 2q+1) of K and the same
// pair of V, for TB tokens: every rotation float4 read from L2 serves TB tokens and every x float4
// read from shared memory serves two rows. The K and V halves of a task cost about the same for
// every q (Σ d_g over the K slots of a warp vs D), so tasks stay balanced.
template <int TT, int TB>
KVB_HD void enc_codes_pairs(const AppendParams& p, EncodeShared& s, uint32_t tid, uint32_t nthreads) {
  constexpr uint32_t NTB = TT / TB;
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim, half = D / 2;
  const size_t XW = enc_xw(D);
  for (uint32_t task = tid; task < half * NTB; task += nthreads) {
    const uint32_t q = task % half, t0 = (task / half) * TB;
    if (t0 >= s.nt) continue;
    for (uint32_t side = 0; side < 2; ++side) {
      const uint32_t o = side * D + 2 * q, mi = matrix_of(s, o);
      const Matrix& m = s.mats[mi];
      const uint32_t r = o - m.code_base, n_jb = (m.dims + 3) / 4;
      const float4* R4 = reinterpret_cast<const float4*>(hd.rot + m.rot_offset) + r;
      const float* xs = s.xs + t0 * XW + m.xoff;
      float a0[TB], a1[TB];
      for (int t = 0; t < TB; ++t) a0[t] = a1[t] = 0.0f;
      // The next j-block's rotation values load while this one's FMAs run (one block of lookahead
      // covers the L2 latency: 8 TB FMAs per warp per block, four warps per scheduler).
      float4 n0 = load_rot4(R4), n1 = load_rot4(R4 + 1);
      for (uint32_t jb = 0; jb < n_jb; ++jb) {
        const float4 w0 = n0, w1 = n1;
        if (jb + 1 < n_jb) n0 = load_rot4(R4 + size_t(jb + 1) * m.dims), n1 = load_rot4(R4 + size_t(jb + 1) * m.dims + 1);
        KVB_UNROLL
        for (int t = 0; t < TB; ++t) {
          const float4 x = *reinterpret_cast<const float4*>(xs + t * XW + 4 * jb);
          a0[t] = fma32(w0.x, x.x, a0[t]);
          a1[t] = fma32(w1.x, x.x, a1[t]);
          a0[t] = fma32(w0.y, x.y, a0[t]);
          a1[t] = fma32(w1.y, x.y, a1[t]);
          a0[t] = fma32(w0.z, x.z, a0[t]);
          a1[t] = fma32(w1.z, x.z, a1[t]);
          a0[t] = fma32(w0.w, x.w, a0[t]);
          a1[t] = fma32(w1.w, x.w, a1[t]);
        }
      }
      for (int t = 0; t < TB; ++t) {
        const uint32_t tt = t0 + uint32_t(t);
        if (tt >= s.nt) break;
        s.codes[tt * 2 * D + o] = uint8_t(decide(p, s, tt, mi, r, a0[t]));
        s.codes[tt * 2 * D + o + 1] = uint8_t(decide(p, s, tt, mi, r + 1, a1[t]));
      }
    }
  }
}

// Phase 4: scales (canonical sums of the codes' squared centroids; fp16 infinity is an error),
// one thread per (token, matrix).
KVB_HD void enc_scales(const AppendParams& p, EncodeShared& s, uint32_t h, uint32_t tid, uint32_t nthreads) {
  const uint32_t D = p.head_dim, nm = s.m1 - s.m0;
  for (uint32_t idx = tid; idx < s.nt * nm; idx += nthreads) {
    const uint32_t t = idx / nm, m = s.m0 + idx % nm;
    const Matrix& mt = s.mats[m];
    const double n = s.nrm[t * kMaxMatrices + m];
    uint16_t scale = 0;
    if (n != 0.0) {
      const uint8_t* c = s.codes + t * 2 * D + mt.code_base;
      const float* gc = s.cent + mt.cb_offset;
      const double csq = canonical_sum(mt.dims, [&](uint32_t r) {
        const double cv = double(gc[c[r]]);
        return cv * cv;
      });
      if (csq > 0.0) scale = double_to_half_bits(n / sqrt(csq));
    }
    const size_t item = size_t(s.tok0 + t) * p.n_heads + h;
    p.stage_scales[item * p.scale_stride + m] = scale;
    if ((scale & 0x7C00u) == 0x7C00u)
      error_min(p.error, AppendError::kScaleBase + 2ull * item + (m + 1 == s.n_mats ? 0 : 1));
  }
}

// Phase 5: bit packing, one thread per output byte of the block's matrices, into the staging area.
KVB_HD void enc_pack(const AppendParams& p, const EncodeShared& s, uint32_t h, uint32_t tid, uint32_t nthreads) {
  const uint32_t D = p.head_dim, width = s.b1 - s.b0;
  for (uint32_t idx = tid; idx < s.nt * width; idx += nthreads) {
    const uint32_t t = idx / width, b = s.b0 + idx % width;
    uint32_t m = s.m0;
    while (m + 1 < s.m1 && s.mats[m + 1].byte_offset <= b) ++m;
    const Matrix& mt = s.mats[m];
    const uint32_t lb = b - mt.byte_offset, bits = mt.bits;
    const uint8_t* c = s.codes + t * 2 * D + mt.code_base;
    uint32_t value = 0;
    for (uint32_t j = lb * 8 / bits; j < mt.dims && j * bits < lb * 8 + 8; ++j) {
      const int shift = int(j * bits) - int(lb * 8);
      value |= shift >= 0 ? uint32_t(c[j]) << shift : uint32_t(c[j]) >> -shift;
    }
    p.stage_codes[(size_t(s.tok0 + t) * p.n_heads + h) * p.code_stride + b] = uint8_t(value);
  }
  // The row's padding up to the stride: the commit reads whole words.
  const uint32_t pad = s.b1 == s.head().k_code_bytes + s.head().v_code_bytes ? p.code_stride - s.b1 : 0;
  for (uint32_t idx = tid; idx < s.nt * pad; idx += nthreads)
    p.stage_codes[(size_t(s.tok0 + idx / pad) * p.n_heads + h) * p.code_stride + s.b1 + idx % pad] = 0;
}

// The grid of an encode launch: x = tiles * parts (parts 2: a K block and a V block per tile;
// 1: one block for both), then the check-only blocks; y = KV head.
struct EncodeGrid {
  uint32_t tt, parts, n_tiles, checks;
  KVB_HD uint32_t encode_blocks() const { return n_tiles * parts; }
  KVB_HD uint32_t blocks_x() const { return encode_blocks() + checks; }
};
KVB_HD EncodeGrid encode_grid(const AppendParams& p, uint32_t tt) {
  const uint32_t n_tiles = (p.n_tokens + tt - 1) / tt;
  return {tt, tt <= 4 ? 2u : 1u, n_tiles, (p.n_fp16_rows + kCheckRows - 1) / kCheckRows};
}

// One encode block (bx, h): every phase, each followed by the block barrier. TB: tokens per
// task of the prefill phase (TT >= 16), unused for TT <= 4.
template <int TT, int TB, class Threads>
KVB_HD void encode_block(const AppendParams& p, const EncodeGrid& g, EncodeShared& s, uint32_t bx, uint32_t h,
                         const Threads& threads) {
  if (bx >= g.encode_blocks()) {
    const uint32_t first = (bx - g.encode_blocks()) * kCheckRows;
    threads([&](uint32_t tid, uint32_t n) { check_rows(p, first, h, tid, n); });
    return;
  }
  const uint32_t tile = bx / g.parts, part = g.parts == 1 ? 2 : bx % g.parts;
  const uint32_t tok0 = tile * TT, nt = p.n_tokens - tok0 < uint32_t(TT) ? p.n_tokens - tok0 : uint32_t(TT);
  threads([&](uint32_t tid, uint32_t n) { enc_prologue(p, s, tok0, nt, h, part, tid, n); });
  if (p.fp16_layer) {
    threads([&](uint32_t tid, uint32_t n) { enc_fp16_rows(p, s, h, tid, n); });
    return;
  }
  threads([&](uint32_t tid, uint32_t n) { enc_load(p, s, TT, h, TT <= 4, tid, n); });
  threads([&](uint32_t tid, uint32_t n) { enc_norms(p, s, tid, n); });
  if constexpr (TT <= 4) threads([&](uint32_t tid, uint32_t n) { enc_codes_rows<TT>(p, s, tid, n); });
  else threads([&](uint32_t tid, uint32_t n) { enc_codes_pairs<TT, TB>(p, s, tid, n); });
  threads([&](uint32_t tid, uint32_t n) { enc_scales(p, s, h, tid, n); });
  threads([&](uint32_t tid, uint32_t n) { enc_pack(p, s, h, tid, n); });
}

// ---- the commit ----
//
// Copy-on-write copies run first, one block per (copy, layer, head) region, in a launch of their
// own: a copy reads rows of a shared page that another sequence of the same call may then write
// in place (the CPU backend also copies before it writes). Everything else is a flat list of
// small pieces, one per thread: 4-byte words of staged code rows, staged scales, fp16 values of
// sink and ring rows, bookkeeping words. Every piece is loads then byte stores (CommitPiece), so
// a thread can load several pieces before it stores any.

KVB_HD void copy_bytes(uint8_t* dst, const uint8_t* src, size_t n, uint32_t tid, uint32_t nthreads) {
  // Arrays start on 16 bytes: words first, then the tail.
  const size_t words = n / 4;
  for (size_t i = tid; i < words; i += nthreads)
    reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
  for (size_t i = words * 4 + tid; i < n; i += nthreads) dst[i] = src[i];
}

// Copy-on-write of one region (layer, head) of one page: the rows the sequence holds.
KVB_HD void copy_region(const AppendParams& p, uint64_t b, uint32_t tid, uint32_t nthreads) {
  const uint32_t regions = p.n_layers * p.n_heads;
  const AppendCopy& c = p.copies[b / regions];
  const uint32_t region = uint32_t(b % regions), layer = region / p.n_heads;
  const uint32_t rows = p.copy_rows[c.rows_first + layer];
  if (rows == 0) return;
  const AppendHead& hd = p.heads[region];
  const uint8_t* src = hd.pool + size_t(c.from) * hd.page_bytes;
  uint8_t* dst = hd.pool + size_t(c.to) * hd.page_bytes;
  copy_bytes(dst, src, size_t(rows) * hd.k_code_bytes, tid, nthreads);
  copy_bytes(dst + hd.k_scales, src + hd.k_scales, size_t(rows) * hd.n_k_groups * 2, tid, nthreads);
  copy_bytes(dst + hd.v_codes, src + hd.v_codes, size_t(rows) * hd.v_code_bytes, tid, nthreads);
  if (!hd.fp16) copy_bytes(dst + hd.v_scales, src + hd.v_scales, size_t(rows) * 2, tid, nthreads);
}

// The flat pieces of a commit, in this order.
struct CommitPieces {
  uint64_t code_words, scales, fp16_values, words;
  KVB_HD uint64_t total() const { return code_words + scales + fp16_values + words; }
};
KVB_HD CommitPieces commit_pieces(const AppendParams& p) {
  const uint64_t items = uint64_t(p.n_tokens) * p.n_heads;
  return {items * (p.code_stride / 4), items * p.scale_stride, uint64_t(p.n_fp16_rows) * p.n_heads * 2 * p.head_dim,
          p.n_words};
}

// What one piece stores: byte k of `value` at dst[k] (null: nothing).
struct CommitPiece {
  uint8_t* dst[4];
  uint32_t value;
};

// Loads piece i (nothing stored yet).
KVB_HD CommitPiece commit_load(const AppendParams& p, const CommitPieces& c, uint64_t i) {
  CommitPiece out{{nullptr, nullptr, nullptr, nullptr}, 0};
  const uint32_t H = p.n_heads, D = p.head_dim;
  if (i < c.code_words) {
    // Bytes 4w .. 4w+3 of a staged row: K codes, then V codes (fp16 layer: the fp16 K and V rows).
    const uint32_t cw = p.code_stride / 4;
    const size_t item = size_t(i / cw);
    const uint32_t b = uint32_t(i % cw) * 4, h = uint32_t(item % H);
    const AppendToken& tok = p.tokens[item / H];
    const AppendHead& hd = p.heads[size_t(p.layer) * H + h];
    const uint32_t kc = hd.k_code_bytes, vc = hd.v_code_bytes;
    if (b >= kc + vc) return out;
    uint8_t* page = hd.pool + size_t(tok.page) * hd.page_bytes;
    out.value = load_cg32(reinterpret_cast<const uint32_t*>(p.stage_codes + item * p.code_stride + b));
    for (uint32_t k = 0; k < 4; ++k) {
      const uint32_t bb = b + k;
      if (bb < kc) out.dst[k] = page + size_t(tok.row) * kc + bb;
      else if (bb < kc + vc) out.dst[k] = page + hd.v_codes + size_t(tok.row) * vc + (bb - kc);
    }
    return out;
  }
  i -= c.code_words;
  if (i < c.scales) {
    const size_t item = size_t(i / p.scale_stride);
    const uint32_t g = uint32_t(i % p.scale_stride), h = uint32_t(item % H);
    const AppendToken& tok = p.tokens[item / H];
    const AppendHead& hd = p.heads[size_t(p.layer) * H + h];
    const uint32_t G = hd.n_k_groups;
    if (g > G) return out;
    uint8_t* page = hd.pool + size_t(tok.page) * hd.page_bytes;
    uint8_t* at = g < G ? page + hd.k_scales + (size_t(tok.row) * G + g) * 2 : page + hd.v_scales + size_t(tok.row) * 2;
    out.value = load_cg16(p.stage_scales + item * p.scale_stride + g);
    out.dst[0] = at, out.dst[1] = at + 1;
    return out;
  }
  i -= c.scales;
  if (i < c.fp16_values) {
    // One value of a sink or ring row (K or V) of one (input row, head).
    const uint32_t row = p.fp16_rows[i / (2 * size_t(H) * D)], rest = uint32_t(i % (2 * size_t(H) * D));
    const uint32_t h = rest / (2 * D), tensor = rest % (2 * D) / D, d = rest % D;
    const AppendEntry& e = p.entries[entry_of_row(p.entries, p.n_entries, row)];
    const uint32_t t = e.len0 + (row - e.first_row);
    const float x = load_input(tensor ? p.v : p.k, (size_t(row) * H + h) * D + d, p.dtype);
    uint8_t* at = reinterpret_cast<uint8_t*>(e.fp16 + (t < p.sink ? sink_offset(p, tensor, h, t) : ring_offset(p, tensor, h, t)) + d);
    out.value = to_half_bits(x);
    out.dst[0] = at, out.dst[1] = at + 1;
    return out;
  }
  i -= c.fp16_values;
  if (i < c.words) {
    const WordWrite w = p.words[i];
    uint8_t* at = reinterpret_cast<uint8_t*>(w.dst);
    out.value = w.value;
    for (uint32_t k = 0; k < 4; ++k) out.dst[k] = at + k;
  }
  return out;
}

KVB_HD void commit_store(const CommitPiece& c) {
  for (uint32_t k = 0; k < 4; ++k)
    if (c.dst[k]) *c.dst[k] = uint8_t(c.value >> (8 * k));
}

// Pieces [first, end) of the flat commit by the threads of one block, four pieces a thread at a
// time: their loads go out together, then their stores.
KVB_HD void commit_range(const AppendParams& p, const CommitPieces& c, uint64_t first, uint64_t end, uint32_t tid,
                         uint32_t nthreads) {
  constexpr uint32_t kBatch = 4;
  for (uint64_t base = first + tid; base < end; base += uint64_t(kBatch) * nthreads) {
    CommitPiece pc[kBatch];
    KVB_UNROLL
    for (uint32_t k = 0; k < kBatch; ++k) {
      const uint64_t i = base + uint64_t(k) * nthreads;
      pc[k] = i < end ? commit_load(p, c, i) : CommitPiece{{nullptr, nullptr, nullptr, nullptr}, 0};
    }
    KVB_UNROLL
    for (uint32_t k = 0; k < kBatch; ++k) commit_store(pc[k]);
  }
}

// Every commit block asks first: a call whose check failed changes nothing on the device.
KVB_HD bool commit_allowed(const AppendParams& p) { return load_error(p.error) == AppendError::kNone; }

// The fused commit of a small call, by the block that finished encoding last (append_commit_fused:
// no copies). The host emulation calls it after the last block.
template <class Threads>
KVB_HD void commit_by_one_block(const AppendParams& p, const Threads& threads) {
  if (!commit_allowed(p)) return;
  const CommitPieces c = commit_pieces(p);
  threads([&](uint32_t tid, uint32_t n) { commit_range(p, c, 0, c.total(), tid, n); });
}

#undef KVB_HD
#undef KVB_HD_OUT_OF_LINE
#undef KVB_UNROLL

}  // namespace kvbits::cuda::append_body
