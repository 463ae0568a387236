// kvbits CUDA — the bodies of the append kernels (append.cu), written as per-thread phase
// functions that compile for the device and for the host. append.cu runs each phase on every
// thread of a block with a barrier in between; tests/cache/test_append_emulated.cpp runs the
// same phases thread after thread on the CPU, so the kernels' indexing, the fast path's bound
// and its exact fallback are checked against the CPU encoder on machines without a GPU.
// See append.cu for the method and the bound.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "cuda/append.hpp"
#include "cuda/half_bits.cuh"

#ifndef __CUDA_ARCH__
#include <algorithm>

#include "kvbits/half.hpp"
#endif

namespace kvbits::cuda::append_body {

#define KVB_HD __host__ __device__ inline

constexpr uint32_t kThreads = 256;
constexpr uint32_t kMaxMatrices = kAppendMaxGroups + 1;  // K groups and V
constexpr uint32_t kCheckRows = 4;                        // input rows per check-only block

// ---- arithmetic that must round the same on both sides ----

KVB_HD float fma32(float a, float b, float c) {
#ifdef __CUDA_ARCH__
  return __fmaf_rn(a, b, c);
#else
  return std::fmaf(a, b, c);
#endif
}

#ifndef __CUDA_ARCH__
// a + b rounded up or down on the host: the round-to-nearest sum moved by one ulp when its exact
// error (two-sum) says it was rounded the wrong way.
template <class T>
T host_add_directed(T a, T b, bool up) {
  const T s = a + b, bb = s - a, err = (a - (s - bb)) + (b - bb);
  if (up) return err > 0 ? std::nextafter(s, T(INFINITY)) : s;
  return err < 0 ? std::nextafter(s, T(-INFINITY)) : s;
}
#endif

// Directed rounding (fp64: a + b up, a - b down, a * b up, a / b up; fp32: a + b up / down,
// a * b up), the device's intrinsics and their exact host equivalents.
KVB_HD double add_ru(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_ru(a, b);
#else
  return host_add_directed(a, b, true);
#endif
}
KVB_HD double sub_rd(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rd(a, b);
#else
  return host_add_directed(a, -b, false);
#endif
}
KVB_HD double mul_ru(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dmul_ru(a, b);
#else
  const double p = a * b;
  return std::fma(a, b, -p) > 0 ? std::nextafter(p, INFINITY) : p;
#endif
}
KVB_HD double div_ru(double a, double b) {  // b > 0
#ifdef __CUDA_ARCH__
  return __ddiv_ru(a, b);
#else
  const double q = a / b;
  return std::fma(-q, b, a) > 0 ? std::nextafter(q, INFINITY) : q;  // the remainder is exact
#endif
}
KVB_HD float to_float_ru(double x) {
#ifdef __CUDA_ARCH__
  return __double2float_ru(x);
#else
  const float f = float(x);
  return double(f) < x ? std::nextafter(f, INFINITY) : f;
#endif
}
KVB_HD float fadd_ru(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_ru(a, b);
#else
  return host_add_directed(a, b, true);
#endif
}
KVB_HD float fadd_rd(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rd(a, b);
#else
  return host_add_directed(a, b, false);
#endif
}
KVB_HD float fmul_ru(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_ru(a, b);
#else
  const float p = a * b;
  return double(p) < double(a) * double(b) ? std::nextafter(p, INFINITY) : p;  // the double product is exact
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

// K (tensor 0) or V (1), head h, dim `dim` of packed token `tok` as it is to be encoded: from the
// ring (a token leaving the window) or from the input, checked, rounded through fp16 when there
// is a window.
KVB_HD float packed_value(const AppendParams& p, const AppendToken& tok, uint32_t h, uint32_t tensor, uint32_t dim) {
  const AppendEntry& e = p.entries[tok.entry];
  if (tok.t < e.len0) return half_bits_to_float(e.fp16[ring_offset(p, tensor, h, tok.t) + dim]);
  const uint32_t row = e.first_row + (tok.t - e.len0);
  const float x = load_input(tensor ? p.v : p.k, (size_t(row) * p.n_heads + h) * p.head_dim + dim, p.dtype);
  check_value(p, x, p.window > 0 || p.fp16_layer, row, h, tensor, dim);
  return p.window > 0 ? half_bits_to_float(to_half_bits(x)) : x;
}

// ---- the encode block ----

// A rotation group as the encode block uses it.
struct Matrix {
  uint32_t bits, first, dims, byte_offset, rot_offset, cb_offset;
  uint32_t xoff;       // its values in a token's row of xs (a multiple of 4)
  uint32_t code_base;  // its codes in a token's row of codes (K: first slot, V: D)
};

// An encode block's shared scalars and descriptors (a struct with member initialisers cannot be
// __shared__, hence the head as raw words: one cooperative copy instead of dependent global
// loads in every phase).
struct EncodeBlock {
  alignas(16) uint32_t head_words[(sizeof(AppendHead) + 3) / 4];
  Matrix mats[kMaxMatrices];
  uint32_t n_mats;
  uint32_t n_fallbacks;  // entries of EncodeShared::fallbacks
};

// Each thread's view of the block's shared memory: the EncodeBlock and the dynamic arrays
// (enc_layout). Built by every thread from the shared base addresses, so that the compiler
// knows every access is to shared memory.
struct EncodeShared {
  EncodeBlock* blk;
  AppendToken* toks;       // [TT]
  float* xs;               // [TT][xw]: K in hp slot order (groups at Matrix::xoff), then V
  double* nrm;             // [TT][kMaxMatrices]
  float* rn;               // [TT][kMaxMatrices]: fp32 1 / n, or NaN where the fp32 test is not used
  float* d0;               // [TT][kMaxMatrices]: the fp32 test's margin for y = 0 (enc_norms)
  const uint16_t** ring;   // [TT][2]: the fp16 ring rows (K, V) of a token leaving the window, else null
  uint8_t* codes;          // [TT][2D]
  uint16_t* pos_k;         // [D]: where K dim d sits in a token's row of xs
  uint8_t* byte_mat;       // [2D]: the matrix of each byte of a packed row
  uint16_t* fallbacks;     // [TT * 2D]: coordinates (t * 2D + o) the fast path left undecided
  float* cent;             // [max_cb]
  float* bnd;              // [max_cb]
  KVB_HD const AppendHead& head() const { return *reinterpret_cast<const AppendHead*>(blk->head_words); }
};

KVB_HD size_t enc_xw(uint32_t D) { return size_t(2) * D + 4 * kMaxMatrices; }  // floats per token

// Byte offsets of the dynamic arrays, each 16-byte aligned.
struct EncLayout {
  size_t xs, nrm, rn, d0, ring, codes, pos_k, byte_mat, fallbacks, cent, bnd, total;
};
KVB_HD EncLayout enc_layout(uint32_t tt, uint32_t D, uint32_t max_cb) {
  EncLayout l{};
  size_t at = 0;
  const size_t sizes[] = {tt * enc_xw(D) * 4,         size_t(tt) * kMaxMatrices * 8, size_t(tt) * kMaxMatrices * 4,
                          size_t(tt) * kMaxMatrices * 4, size_t(tt) * 2 * sizeof(void*), size_t(tt) * 2 * D,
                          size_t(D) * 2,               size_t(2) * D,                size_t(tt) * 2 * D * 2,
                          size_t(max_cb) * 4,          size_t(max_cb) * 4};
  size_t* offs[] = {&l.xs, &l.nrm, &l.rn, &l.d0, &l.ring, &l.codes, &l.pos_k, &l.byte_mat, &l.fallbacks, &l.cent, &l.bnd};
  for (size_t i = 0; i < sizeof offs / sizeof offs[0]; ++i) {
    *offs[i] = at;
    at = (at + sizes[i] + 15) / 16 * 16;
  }
  l.total = at;
  return l;
}
KVB_HD size_t enc_smem_bytes(uint32_t tt, uint32_t D, uint32_t max_cb) { return enc_layout(tt, D, max_cb).total; }

KVB_HD void enc_bind(EncodeShared& s, EncodeBlock* blk, AppendToken* toks, unsigned char* dyn, uint32_t tt, uint32_t D,
                     uint32_t max_cb) {
  const EncLayout l = enc_layout(tt, D, max_cb);
  s.blk = blk;
  s.toks = toks;
  s.xs = reinterpret_cast<float*>(dyn + l.xs);
  s.nrm = reinterpret_cast<double*>(dyn + l.nrm);
  s.rn = reinterpret_cast<float*>(dyn + l.rn);
  s.d0 = reinterpret_cast<float*>(dyn + l.d0);
  s.ring = reinterpret_cast<const uint16_t**>(dyn + l.ring);
  s.codes = dyn + l.codes;
  s.pos_k = reinterpret_cast<uint16_t*>(dyn + l.pos_k);
  s.byte_mat = dyn + l.byte_mat;
  s.fallbacks = reinterpret_cast<uint16_t*>(dyn + l.fallbacks);
  s.cent = reinterpret_cast<float*>(dyn + l.cent);
  s.bnd = reinterpret_cast<float*>(dyn + l.bnd);
}

// Number of boundaries strictly below y (boundaries ascending).
KVB_HD uint32_t code_of(const float* bnd, uint32_t nb, double y) {
  uint32_t lo = 0, hi = nb;
  while (lo < hi) {
    const uint32_t mid = (lo + hi) / 2;
    if (double(bnd[mid]) < y) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// The canonical coordinate: fp64 chain over ascending j (the fp32 products are exact in fp64,
// so fma and multiply-then-add give the same sum).
KVB_HD double exact_dot(const float* rot, const Matrix& m, uint32_t r, const float* x) {
  double acc = 0.0;
  for (uint32_t j = 0; j < m.dims; ++j)
    acc = fma(double(rot[m.rot_offset + ((j >> 2) * m.dims + r) * 4 + (j & 3)]), double(x[j]), acc);
  return acc;
}

constexpr uint32_t kUndecided = ~0u;

// The code of coordinate r of a group with norm n when the fast fp32 sum s decides it (see
// append.cu), else kUndecided.
KVB_HD uint32_t fast_code(float s, double n, const Matrix& m, const float* bnd) {
  const uint32_t nb = (1u << m.bits) - 1;
  if (n == 0.0) return code_of(bnd, nb, 0.0);
  if (!finite32(s)) return kUndecided;
  const double d = double(m.dims);
  const double B = add_ru(mul_ru(n, d * 0x1.01p-24), d * 0x1p-125);
  const double y_lo = sub_rd(double(s), B) / n;
  const double y_hi = add_ru(double(s), B) / n;
  const uint32_t c = code_of(bnd, nb, y_lo);
  return c == nb || !(double(bnd[c]) < y_hi) ? c : kUndecided;
}

// The fp32 version of fast_code's test, for the encode block's many coordinates. With
// rn = fl32(fl64(1 / n)) and y = fl32(s * rn), the canonical y* = fl64(s* / n) satisfies
// |y* - y| <= B / n * (1 + 2^-53) + |y| * 2^-22 + 2^-148 (the roundings of 1 / n, rn and the
// product are 2^-53, 2^-24 and 2^-24 relative, or 2^-150 absolute below the normal range), and
// d0 = fl32_up(B / n * (1 + 2^-50)) + 2^-126 covers the terms that do not scale with y. So y* lies
// in [lo, hi] = [y - δ, y + δ] rounded outwards, δ = d0 + |y| * 2^-22 rounded up, and the code
// is decided when no boundary lies in [lo, hi). enc_norms sets rn = NaN where 1 / n or d0 is not
// a finite fp32 number; fast_code (fp64) decides those.
KVB_HD void fast_margin(double n, uint32_t dims, float* rn, float* d0) {
  const double d = double(dims);
  const double B = add_ru(mul_ru(n, d * 0x1.01p-24), d * 0x1p-125);
  *d0 = fadd_ru(to_float_ru(mul_ru(div_ru(B, n), 1.0 + 0x1p-50)), 0x1p-126f);
  *rn = float(1.0 / n);
  if (!finite32(*rn) || !finite32(*d0)) *rn = bits_to_float(0x7FC00000u);
}
KVB_HD uint32_t fast_code32(float s, float rn, float d0, const Matrix& m, const float* bnd) {
  const float y = s * rn;
  if (!finite32(y)) return kUndecided;
  const float delta = fadd_ru(d0, fmul_ru(fabsf(y), 0x1p-22f));
  const float lo = fadd_rd(y, -delta), hi = fadd_ru(y, delta);
  const uint32_t nb = (1u << m.bits) - 1;
  uint32_t c = 0, len = nb;  // c = #{boundaries < lo}
  while (len > 0) {
    const uint32_t half = len / 2;
    if (bnd[c + half] < lo) c += half + 1, len -= half + 1; else len = half;
  }
  return c == nb || !(bnd[c] < hi) ? c : kUndecided;
}

// The canonical code of coordinate r (n != 0): the fp64 chain.
KVB_HD uint32_t exact_code(double n, const Matrix& m, uint32_t r, const float* rot, const float* x, const float* bnd) {
  return code_of(bnd, (1u << m.bits) - 1, exact_dot(rot, m, r, x) / n);
}

KVB_HD uint32_t exact_or_fast(float s, double n, const Matrix& m, uint32_t r, const float* rot, const float* x,
                              const float* bnd, bool force_exact) {
  if (n == 0.0) return fast_code(s, n, m, bnd);
  const uint32_t c = force_exact ? kUndecided : fast_code(s, n, m, bnd);
  return c != kUndecided ? c : exact_code(n, m, r, rot, x, bnd);
}

// Encode blocks are launched only when some input row is not packed: without sink and window
// every row is a packed token, and its encode block checks it.
KVB_HD uint32_t check_blocks(const AppendParams& p) {
  return p.sink + p.window > 0 ? (p.rows + kCheckRows - 1) / kCheckRows : 0;
}

// Check-only block bx (>= n_tiles): input rows that are not packed (sink and ring tokens).
KVB_HD void check_rows(const AppendParams& p, uint32_t n_tiles, uint32_t bx, uint32_t h, uint32_t tid,
                       uint32_t nthreads) {
  const uint32_t D = p.head_dim, row0 = (bx - n_tiles) * kCheckRows;
  for (uint32_t idx = tid; idx < kCheckRows * 2 * D; idx += nthreads) {
    const uint32_t row = row0 + idx / (2 * D), tensor = idx % (2 * D) / D, dim = idx % D;
    if (row >= p.rows) break;
    const AppendEntry& e = p.entries[entry_of_row(p.entries, p.n_entries, row)];
    const uint32_t t = e.len0 + (row - e.first_row);
    if (t >= p.sink && t < e.qend1) continue;  // packed: checked by its encode block
    const float x = load_input(tensor ? p.v : p.k, (size_t(row) * p.n_heads + h) * D + dim, p.dtype);
    check_value(p, x, t < p.sink || p.window > 0 || p.fp16_layer, row, h, tensor, dim);
  }
}

// Phase 0a: the block's tokens and its head descriptor.
KVB_HD void enc_prologue(const AppendParams& p, EncodeShared& s, uint32_t tok0, uint32_t nt, uint32_t h, uint32_t tid,
                         uint32_t nthreads) {
  static_assert(sizeof(AppendHead) % 4 == 0, "AppendHead is copied as words");
  if (tid < nt) s.toks[tid] = p.tokens[tok0 + tid];
  if (tid == 0) s.blk->n_fallbacks = 0;
  const uint32_t* src = reinterpret_cast<const uint32_t*>(p.heads + size_t(p.layer) * p.n_heads + h);
  for (uint32_t i = tid; i < sizeof(AppendHead) / 4; i += nthreads) s.blk->head_words[i] = src[i];
}

// Phase 0b (quantized layer): the head's matrices and codebooks; where each K dim goes in xs;
// the matrix of each packed byte; the ring rows of tokens leaving the window.
KVB_HD void enc_tables(const AppendParams& p, EncodeShared& s, uint32_t nt, uint32_t h, uint32_t tid,
                       uint32_t nthreads) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim, G = hd.n_k_groups;
  if (tid == 0) {
    uint32_t xoff = 0, m = 0;
    for (; m < G; ++m) {
      const AppendGroup& g = hd.k[m];
      s.blk->mats[m] = {g.bits, g.first, g.dims, g.byte_offset, g.rot_offset, g.cb_offset, xoff, g.first};
      xoff += (g.dims + 3) & ~3u;
    }
    const AppendGroup& g = hd.v;
    s.blk->mats[m] = {g.bits, 0, g.dims, hd.k_code_bytes + g.byte_offset, g.rot_offset, g.cb_offset, xoff, D};
    s.blk->n_mats = m + 1;
  }
  for (uint32_t i = tid; i < hd.n_cb; i += nthreads) {
    s.cent[i] = hd.cent[i];
    s.bnd[i] = hd.bnd[i];
  }
  for (uint32_t slot = tid; slot < D; slot += nthreads) {
    uint32_t xoff = 0, m = 0;
    while (m + 1 < G && hd.k[m + 1].first <= slot) xoff += (hd.k[m++].dims + 3) & ~3u;
    s.pos_k[hd.slot_dim[slot]] = uint16_t(xoff + slot - hd.k[m].first);
  }
  const uint32_t row_bytes = hd.k_code_bytes + hd.v_code_bytes;
  for (uint32_t b = tid; b < row_bytes; b += nthreads) {
    uint32_t m = G;
    if (b < hd.k_code_bytes) {
      m = 0;
      while (m + 1 < G && hd.k[m + 1].byte_offset <= b) ++m;
    }
    s.byte_mat[b] = uint8_t(m);
  }
  for (uint32_t i = tid; i < 2 * nt; i += nthreads) {
    const AppendToken& tok = s.toks[i / 2];
    s.ring[i] = tok.src == AppendToken::kFromRing
                    ? p.entries[tok.entry].fp16 + ring_offset(p, i % 2, h, tok.t)
                    : nullptr;
  }
}

// fp16 layer, after phase 0: the staged row is the fp16 K row then the fp16 V row.
KVB_HD void enc_fp16_rows(const AppendParams& p, const EncodeShared& s, uint32_t tok0, uint32_t nt, uint32_t h,
                          uint32_t tid, uint32_t nthreads) {
  const uint32_t D = p.head_dim;
  for (uint32_t idx = tid; idx < nt * 2 * D; idx += nthreads) {
    const uint32_t t = idx / (2 * D), o = idx % (2 * D);
    const float x = packed_value(p, s.toks[t], h, o / D, o % D);
    const size_t item = size_t(tok0 + t) * p.n_heads + h;
    reinterpret_cast<uint16_t*>(p.stage_codes + item * p.code_stride)[o] = to_half_bits(x);
  }
}

// Phase 1: the tokens' values, read in input order (a thread per K or V dim, consecutive dims in
// a warp) and placed at their slot in xs; zero in the padding between groups. A thread's TT
// loads are in flight before their checks (which may take an atomic).
template <int TT>
KVB_HD void enc_load(const AppendParams& p, EncodeShared& s, uint32_t nt, uint32_t h, uint32_t tid, uint32_t nthreads) {
  const uint32_t D = p.head_dim, H = p.n_heads, n_mats = s.blk->n_mats, vxoff = s.blk->mats[n_mats - 1].xoff;
  const size_t XW = enc_xw(D);
  for (uint32_t i = tid; i < n_mats * 4; i += nthreads) {
    const Matrix& mt = s.blk->mats[i / 4];
    if (mt.dims + i % 4 < ((mt.dims + 3) & ~3u))
      for (uint32_t t = 0; t < nt; ++t) s.xs[t * XW + mt.xoff + mt.dims + i % 4] = 0.0f;
  }
  for (uint32_t o = tid; o < 2 * D; o += nthreads) {
    const uint32_t tensor = o >= D ? 1 : 0, dim = o - tensor * D, pos = tensor ? vxoff + dim : s.pos_k[dim];
    const void* in = tensor ? p.v : p.k;
    float x[TT];
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int t = 0; t < TT; ++t) {
      if (t >= int(nt)) break;
      const uint16_t* ring = s.ring[2 * t + tensor];
      x[t] = ring ? half_bits_to_float(ring[dim]) : load_input(in, (size_t(s.toks[t].src) * H + h) * D + dim, p.dtype);
    }
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int t = 0; t < TT; ++t) {
      if (t >= int(nt)) break;
      float v = x[t];
      if (!s.ring[2 * t + tensor]) {
        check_value(p, v, p.window > 0, s.toks[t].src, h, tensor, dim);
        if (p.window > 0) v = half_bits_to_float(to_half_bits(v));
      }
      s.xs[t * XW + pos] = v;
    }
  }
}

// Phase 2: group norms, canonical fp64 chains (one thread per (token, group)).
KVB_HD void enc_norms(const AppendParams& p, EncodeShared& s, uint32_t nt, uint32_t tid, uint32_t nthreads) {
  const size_t XW = enc_xw(p.head_dim);
  for (uint32_t idx = tid; idx < nt * s.blk->n_mats; idx += nthreads) {
    const uint32_t t = idx / s.blk->n_mats, m = idx % s.blk->n_mats;
    const float* x = s.xs + t * XW + s.blk->mats[m].xoff;
    double nsq = 0.0;
    const uint32_t dims = s.blk->mats[m].dims;
#ifdef __CUDA_ARCH__
#pragma unroll 8
#endif
    for (uint32_t j = 0; j < dims; ++j) nsq = fma(double(x[j]), double(x[j]), nsq);
    const double n = sqrt(nsq);
    s.nrm[t * kMaxMatrices + m] = n;
    if (n != 0.0) fast_margin(n, dims, s.rn + t * kMaxMatrices + m, s.d0 + t * kMaxMatrices + m);
  }
}

// The matrix of output o (K slot o < D, else V row o - D).
KVB_HD uint32_t matrix_of_output(const EncodeShared& s, uint32_t o, uint32_t D) {
  const uint32_t n_mats = s.blk->n_mats;
  if (o >= D) return n_mats - 1;
  uint32_t m = 0;
  while (m + 2 < n_mats && s.blk->mats[m + 1].first <= o) ++m;
  return m;
}

// Phase 3: codes; thread o owns output o for all TT tokens. Coordinates the fast path leaves
// undecided go to the fallback list (phase 3b), so that no warp waits on one lane's fp64 chain.
template <int TT>
KVB_HD void enc_codes(const AppendParams& p, EncodeShared& s, uint32_t nt, uint32_t tid, uint32_t nthreads) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim;
  const size_t XW = enc_xw(D);
  for (uint32_t o = tid; o < 2 * D; o += nthreads) {
    const uint32_t m = matrix_of_output(s, o, D);
    const Matrix mt = s.blk->mats[m];
    const uint32_t r = o - mt.code_base;
    float acc[TT];
    for (int t = 0; t < TT; ++t) acc[t] = 0.0f;
    const float4* R4 = reinterpret_cast<const float4*>(hd.rot + mt.rot_offset) + r;
    const uint32_t n_jb = (mt.dims + 3) / 4;
    // Unrolled so that several rotation loads are in flight before the FMAs need them.
#ifdef __CUDA_ARCH__
#pragma unroll 8
#endif
    for (uint32_t jb = 0; jb < n_jb; ++jb) {
      const float4 w = load_rot4(R4 + size_t(jb) * mt.dims);
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
      for (int t = 0; t < TT; ++t) {
        const float4 x = *reinterpret_cast<const float4*>(s.xs + t * XW + mt.xoff + 4 * jb);
        acc[t] = fma32(w.x, x.x, acc[t]);
        acc[t] = fma32(w.y, x.y, acc[t]);
        acc[t] = fma32(w.z, x.z, acc[t]);
        acc[t] = fma32(w.w, x.w, acc[t]);
      }
    }
    const float* gb = s.bnd + mt.cb_offset;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int t = 0; t < TT; ++t) {
      if (t >= int(nt)) break;
      const double n = s.nrm[t * kMaxMatrices + m];
      uint32_t c = kUndecided;
      if (n == 0.0) {
        c = code_of(gb, (1u << mt.bits) - 1, 0.0);
      } else if (!p.force_exact) {
        const float rn = s.rn[t * kMaxMatrices + m];
        c = rn == rn ? fast_code32(acc[t], rn, s.d0[t * kMaxMatrices + m], mt, gb) : fast_code(acc[t], n, mt, gb);
      }
      if (c != kUndecided) {
        s.codes[t * 2 * D + o] = uint8_t(c);
      } else {
#ifdef __CUDA_ARCH__
        const uint32_t at = atomicAdd(&s.blk->n_fallbacks, 1u);
#else
        const uint32_t at = s.blk->n_fallbacks++;
#endif
        s.fallbacks[at] = uint16_t(t * 2 * D + o);
      }
    }
  }
}

// Phase 3b: the undecided coordinates, one per thread, on the canonical fp64 chain.
KVB_HD void enc_fallbacks(const AppendParams& p, EncodeShared& s, uint32_t tid, uint32_t nthreads) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim;
  const size_t XW = enc_xw(D);
  for (uint32_t i = tid; i < s.blk->n_fallbacks; i += nthreads) {
    const uint32_t f = s.fallbacks[i], t = f / (2 * D), o = f % (2 * D), m = matrix_of_output(s, o, D);
    const Matrix& mt = s.blk->mats[m];
    s.codes[f] = uint8_t(exact_code(s.nrm[t * kMaxMatrices + m], mt, o - mt.code_base, hd.rot,
                                    s.xs + t * XW + mt.xoff, s.bnd + mt.cb_offset));
  }
}

// Phase 4: scales (canonical fp64 chains; fp16 infinity is an error) and bit packing (one
// thread per output byte of the K and V code rows) into the staging area.
KVB_HD void enc_finish(const AppendParams& p, EncodeShared& s, uint32_t tok0, uint32_t nt, uint32_t h, uint32_t tid,
                       uint32_t nthreads) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim, H = p.n_heads, n_mats = s.blk->n_mats;
  for (uint32_t idx = tid; idx < nt * n_mats; idx += nthreads) {
    const uint32_t t = idx / n_mats, m = idx % n_mats;
    const Matrix& mt = s.blk->mats[m];
    const double n = s.nrm[t * kMaxMatrices + m];
    uint16_t scale = 0;
    if (n != 0.0) {
      const uint8_t* c = s.codes + t * 2 * D + mt.code_base;
      const float* gc = s.cent + mt.cb_offset;
      double csq = 0.0;
      // The code and centroid loads do not depend on the sum: unrolled, they run ahead of it.
#ifdef __CUDA_ARCH__
#pragma unroll 8
#endif
      for (uint32_t j = 0; j < mt.dims; ++j) {
        const double cv = double(gc[c[j]]);
        csq = fma(cv, cv, csq);
      }
      if (csq > 0.0) scale = double_to_half_bits(n / sqrt(csq));
    }
    const size_t item = size_t(tok0 + t) * H + h;
    p.stage_scales[item * p.scale_stride + m] = scale;
    if ((scale & 0x7C00u) == 0x7C00u)
      error_min(p.error, AppendError::kScaleBase + 2ull * item + (m + 1 == n_mats ? 0 : 1));
  }
  // Byte b of every token's row: its codes [j0, j1) are found once.
  const uint32_t row_bytes = hd.k_code_bytes + hd.v_code_bytes;
  for (uint32_t b = tid; b < row_bytes; b += nthreads) {
    const Matrix& mt = s.blk->mats[s.byte_mat[b]];
    const uint32_t lb = b - mt.byte_offset, bits = mt.bits, j0 = lb * 8 / bits;
    const uint32_t j_end = (lb * 8 + 8 + bits - 1) / bits, j1 = j_end < mt.dims ? j_end : mt.dims;
    for (uint32_t t = 0; t < nt; ++t) {
      const uint8_t* c = s.codes + t * 2 * D + mt.code_base;
      uint32_t value = 0;
      for (uint32_t j = j0; j < j1; ++j) {
        const int shift = int(j * bits) - int(lb * 8);
        value |= shift >= 0 ? uint32_t(c[j]) << shift : uint32_t(c[j]) >> -shift;
      }
      p.stage_codes[(size_t(tok0 + t) * H + h) * p.code_stride + b] = uint8_t(value);
    }
  }
}

// ---- the commit launch: one block per piece of work, no barriers ----

KVB_HD void copy_bytes(uint8_t* dst, const uint8_t* src, size_t n, uint32_t tid, uint32_t nthreads) {
  // Arrays start on 16 bytes: words first, then the tail.
  const size_t words = n / 4;
  for (size_t i = tid; i < words; i += nthreads)
    reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
  for (size_t i = words * 4 + tid; i < n; i += nthreads) dst[i] = src[i];
}

// Blocks of the commit, in this order: copy-on-write (copy, region), staged rows (kStagedRows
// (packed token, head) items per block, one warp each), fp16 rows (input row, head), bookkeeping
// words. The copies run as a launch of their own, before the rest: a copy reads rows of a shared
// page that another sequence of the same call may then write in place (the CPU backend also
// copies before it writes). A warp per staged row keeps each thread to a few loads and stores,
// and a prefill chunk's thousands of rows to a few hundred blocks.
constexpr uint32_t kStagedRows = kThreads / 32;
struct CommitGrid {
  uint64_t copy_blocks, row_blocks, fp16_blocks, word_blocks;
  KVB_HD uint64_t blocks() const { return copy_blocks + row_blocks + fp16_blocks + word_blocks; }
};
KVB_HD CommitGrid commit_grid(const AppendParams& p) {
  return {uint64_t(p.n_copies) * p.n_layers * p.n_heads, (uint64_t(p.n_tokens) * p.n_heads + kStagedRows - 1) / kStagedRows,
          p.sink + p.window > 0 ? uint64_t(p.rows) * p.n_heads : 0u, (uint64_t(p.n_words) + kThreads - 1) / kThreads};
}

KVB_HD void commit_block(const AppendParams& p, const CommitGrid& g, uint64_t b, uint32_t tid, uint32_t nthreads) {
  const uint32_t H = p.n_heads, D = p.head_dim;
  if (b < g.copy_blocks) {
    // Copy-on-write of one region (layer, head) of one page: the rows the sequence holds.
    const uint32_t regions = p.n_layers * H;
    const AppendCopy& c = p.copies[b / regions];
    const uint32_t region = uint32_t(b % regions), layer = region / H;
    const uint32_t rows = p.copy_rows[c.rows_first + layer];
    if (rows == 0) return;
    const AppendHead& hd = p.heads[region];
    const uint8_t* src = hd.pool + size_t(c.from) * hd.page_bytes;
    uint8_t* dst = hd.pool + size_t(c.to) * hd.page_bytes;
    copy_bytes(dst, src, size_t(rows) * hd.k_code_bytes, tid, nthreads);
    copy_bytes(dst + hd.k_scales, src + hd.k_scales, size_t(rows) * hd.n_k_groups * 2, tid, nthreads);
    copy_bytes(dst + hd.v_codes, src + hd.v_codes, size_t(rows) * hd.v_code_bytes, tid, nthreads);
    if (!hd.fp16) copy_bytes(dst + hd.v_scales, src + hd.v_scales, size_t(rows) * 2, tid, nthreads);
    return;
  }
  b -= g.copy_blocks;
  if (b < g.row_blocks) {
    // Warp w: the staged row of one (packed token, head) into its page row (the launch has
    // kThreads threads).
    const size_t item = size_t(b) * kStagedRows + tid / 32;
    if (item >= size_t(p.n_tokens) * H) return;
    tid %= 32, nthreads = 32;
    const uint32_t h = uint32_t(item % H);
    const AppendToken tok = p.tokens[item / H];
    const AppendHead& hd = p.heads[size_t(p.layer) * H + h];
    const uint8_t* codes = p.stage_codes + item * p.code_stride;
    uint8_t* page = hd.pool + size_t(tok.page) * hd.page_bytes;
    const uint32_t kc = hd.k_code_bytes, vc = hd.v_code_bytes, G = hd.n_k_groups;
    for (uint32_t i = tid; i < kc; i += nthreads) page[size_t(tok.row) * kc + i] = codes[i];
    for (uint32_t i = tid; i < vc; i += nthreads) page[hd.v_codes + size_t(tok.row) * vc + i] = codes[kc + i];
    if (!hd.fp16) {
      const uint16_t* scales = p.stage_scales + item * p.scale_stride;
      uint16_t* ks = reinterpret_cast<uint16_t*>(page + hd.k_scales) + size_t(tok.row) * G;
      for (uint32_t i = tid; i < G; i += nthreads) ks[i] = scales[i];
      if (tid == 0) reinterpret_cast<uint16_t*>(page + hd.v_scales)[tok.row] = scales[G];
    }
    return;
  }
  b -= g.row_blocks;
  if (b < g.fp16_blocks) {
    // fp16 sink / ring rows (K and V) of one (input row, head).
    const uint32_t row = uint32_t(b / H), h = uint32_t(b % H);
    const AppendEntry& e = p.entries[entry_of_row(p.entries, p.n_entries, row)];
    const uint32_t t = e.len0 + (row - e.first_row);
    if (t >= p.sink && t < e.qend1) return;  // packed
    for (uint32_t idx = tid; idx < 2 * D; idx += nthreads) {
      const uint32_t tensor = idx / D, d = idx % D;
      const float x = load_input(tensor ? p.v : p.k, (size_t(row) * H + h) * D + d, p.dtype);
      const size_t at = t < p.sink ? sink_offset(p, tensor, h, t) : ring_offset(p, tensor, h, t);
      e.fp16[at + d] = to_half_bits(x);
    }
    return;
  }
  b -= g.fp16_blocks;
  const uint64_t i = b * kThreads + tid;
  if (i < p.n_words) *p.words[i].dst = p.words[i].value;
}

#undef KVB_HD

}  // namespace kvbits::cuda::append_body
