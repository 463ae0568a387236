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

// a + b rounded up, a - b rounded down, a * b rounded up (host: the round-to-nearest result
// moved by one ulp when its exact error says it was rounded the wrong way).
KVB_HD double add_ru(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dadd_ru(a, b);
#else
  const double s = a + b, bb = s - a, err = (a - (s - bb)) + (b - bb);
  return err > 0 ? std::nextafter(s, INFINITY) : s;
#endif
}
KVB_HD double sub_rd(double a, double b) {
#ifdef __CUDA_ARCH__
  return __dsub_rd(a, b);
#else
  const double s = a - b, bb = s - a, err = (a - (s - bb)) + (-b - bb);
  return err < 0 ? std::nextafter(s, -INFINITY) : s;
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

// Shared memory of one encode block: the fixed part and the dynamic part (layout below).
struct EncodeShared {
  // The head's AppendHead as raw words (a struct with member initialisers cannot be __shared__):
  // one cooperative copy instead of dependent global loads in every phase.
  alignas(16) uint32_t head_words[(sizeof(AppendHead) + 3) / 4];
  Matrix mats[kMaxMatrices];
  AppendToken* toks;  // [TT]
  uint32_t n_mats;
  KVB_HD const AppendHead& head() const { return *reinterpret_cast<const AppendHead*>(head_words); }
  float* xs;          // [TT][xw]
  double* nrm;        // [TT][kMaxMatrices]
  uint8_t* codes;     // [TT][2D]
  float* cent;        // [max_cb]
  float* bnd;         // [max_cb]
};

KVB_HD size_t enc_xw(uint32_t D) { return size_t(2) * D + 4 * kMaxMatrices; }  // floats per token
KVB_HD size_t enc_off_norm(uint32_t tt, uint32_t D) { return (tt * enc_xw(D) * 4 + 15) / 16 * 16; }
KVB_HD size_t enc_off_codes(uint32_t tt, uint32_t D) { return enc_off_norm(tt, D) + size_t(tt) * kMaxMatrices * 8; }
KVB_HD size_t enc_off_cent(uint32_t tt, uint32_t D) { return (enc_off_codes(tt, D) + size_t(tt) * 2 * D + 15) / 16 * 16; }
KVB_HD size_t enc_smem_bytes(uint32_t tt, uint32_t D, uint32_t max_cb) { return enc_off_cent(tt, D) + size_t(max_cb) * 8; }

KVB_HD void enc_bind(EncodeShared& s, unsigned char* dyn, uint32_t tt, uint32_t D, uint32_t max_cb) {
  s.xs = reinterpret_cast<float*>(dyn);
  s.nrm = reinterpret_cast<double*>(dyn + enc_off_norm(tt, D));
  s.codes = dyn + enc_off_codes(tt, D);
  s.cent = reinterpret_cast<float*>(dyn + enc_off_cent(tt, D));
  s.bnd = s.cent + max_cb;
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

// The code of coordinate r of a group with norm n, given the fast fp32 sum s (see append.cu).
KVB_HD uint32_t exact_or_fast(float s, double n, const Matrix& m, uint32_t r, const float* rot, const float* x,
                              const float* bnd, bool force_exact) {
  const uint32_t nb = (1u << m.bits) - 1;
  if (n == 0.0) return code_of(bnd, nb, 0.0);
  if (!force_exact && finite32(s)) {
    const double d = double(m.dims);
    const double B = add_ru(mul_ru(n, d * 0x1.01p-24), d * 0x1p-125);
    const double y_lo = sub_rd(double(s), B) / n;
    const double y_hi = add_ru(double(s), B) / n;
    const uint32_t c = code_of(bnd, nb, y_lo);
    if (c == nb || !(double(bnd[c]) < y_hi)) return c;
  }
  return code_of(bnd, nb, exact_dot(rot, m, r, x) / n);
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
  const uint32_t* src = reinterpret_cast<const uint32_t*>(p.heads + size_t(p.layer) * p.n_heads + h);
  for (uint32_t i = tid; i < sizeof(AppendHead) / 4; i += nthreads) s.head_words[i] = src[i];
}

// Phase 0b (quantized layer): the head's matrices and codebooks.
KVB_HD void enc_tables(const AppendParams& p, EncodeShared& s, uint32_t tid, uint32_t nthreads) {
  const AppendHead& hd = s.head();
  if (tid == 0) {
    uint32_t xoff = 0, m = 0;
    for (; m < hd.n_k_groups; ++m) {
      const AppendGroup& g = hd.k[m];
      s.mats[m] = {g.bits, g.first, g.dims, g.byte_offset, g.rot_offset, g.cb_offset, xoff, g.first};
      xoff += (g.dims + 3) & ~3u;
    }
    const AppendGroup& g = hd.v;
    s.mats[m] = {g.bits, 0, g.dims, hd.k_code_bytes + g.byte_offset, g.rot_offset, g.cb_offset, xoff, p.head_dim};
    s.n_mats = m + 1;
  }
  for (uint32_t i = tid; i < hd.n_cb; i += nthreads) {
    s.cent[i] = hd.cent[i];
    s.bnd[i] = hd.bnd[i];
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

// Phase 1: the tokens' values (K in hp slot order), zero in the padding between groups.
KVB_HD void enc_load(const AppendParams& p, EncodeShared& s, uint32_t nt, uint32_t h, uint32_t tid, uint32_t nthreads) {
  const AppendHead& hd = s.head();
  const size_t XW = enc_xw(p.head_dim);
  const uint32_t n_mats = s.n_mats;
  const uint32_t row_floats = s.mats[n_mats - 1].xoff + ((p.head_dim + 3) & ~3u);
  for (uint32_t idx = tid; idx < nt * row_floats; idx += nthreads) {
    const uint32_t t = idx / row_floats, pos = idx % row_floats;
    uint32_t m = 0;
    while (m + 1 < n_mats && s.mats[m + 1].xoff <= pos) ++m;
    const uint32_t j = pos - s.mats[m].xoff;
    float x = 0.0f;
    if (j < s.mats[m].dims) {
      const bool is_v = m + 1 == n_mats;
      x = packed_value(p, s.toks[t], h, is_v ? 1 : 0, is_v ? j : hd.slot_dim[s.mats[m].first + j]);
    }
    s.xs[t * XW + pos] = x;
  }
}

// Phase 2: group norms, canonical fp64 chains (one thread per (token, group)).
KVB_HD void enc_norms(const AppendParams& p, EncodeShared& s, uint32_t nt, uint32_t tid, uint32_t nthreads) {
  const size_t XW = enc_xw(p.head_dim);
  for (uint32_t idx = tid; idx < nt * s.n_mats; idx += nthreads) {
    const uint32_t t = idx / s.n_mats, m = idx % s.n_mats;
    const float* x = s.xs + t * XW + s.mats[m].xoff;
    double nsq = 0.0;
    const uint32_t dims = s.mats[m].dims;
#ifdef __CUDA_ARCH__
#pragma unroll 8
#endif
    for (uint32_t j = 0; j < dims; ++j) nsq = fma(double(x[j]), double(x[j]), nsq);
    s.nrm[t * kMaxMatrices + m] = sqrt(nsq);
  }
}

// Phase 3: codes; thread o owns output o (K slot o < D, else V row o - D) for all TT tokens.
template <int TT>
KVB_HD void enc_codes(const AppendParams& p, EncodeShared& s, uint32_t nt, uint32_t tid, uint32_t nthreads) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim, n_mats = s.n_mats;
  const size_t XW = enc_xw(D);
  for (uint32_t o = tid; o < 2 * D; o += nthreads) {
    uint32_t m = 0;
    if (o >= D) {
      m = n_mats - 1;
    } else {
      while (m + 2 < n_mats && s.mats[m + 1].first <= o) ++m;
    }
    const Matrix mt = s.mats[m];
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
    for (int t = 0; t < TT; ++t)
      if (t < int(nt))
        s.codes[t * 2 * D + o] = uint8_t(exact_or_fast(acc[t], s.nrm[t * kMaxMatrices + m], mt, r, hd.rot,
                                                       s.xs + t * XW + mt.xoff, gb, p.force_exact));
  }
}

// Phase 4: scales (canonical fp64 chains; fp16 infinity is an error) and bit packing (one
// thread per output byte of the K and V code rows) into the staging area.
KVB_HD void enc_finish(const AppendParams& p, EncodeShared& s, uint32_t tok0, uint32_t nt, uint32_t h, uint32_t tid,
                       uint32_t nthreads) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim, H = p.n_heads, n_mats = s.n_mats;
  for (uint32_t idx = tid; idx < nt * n_mats; idx += nthreads) {
    const uint32_t t = idx / n_mats, m = idx % n_mats;
    const Matrix& mt = s.mats[m];
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
  const uint32_t row_bytes = hd.k_code_bytes + hd.v_code_bytes;
  for (uint32_t idx = tid; idx < nt * row_bytes; idx += nthreads) {
    const uint32_t t = idx / row_bytes, b = idx % row_bytes;
    uint32_t m = 0;
    while (m + 1 < n_mats && s.mats[m + 1].byte_offset <= b) ++m;
    const Matrix& mt = s.mats[m];
    const uint32_t lb = b - mt.byte_offset, bits = mt.bits;
    const uint8_t* c = s.codes + t * 2 * D + mt.code_base;
    uint32_t value = 0;
    for (uint32_t j = lb * 8 / bits; j < mt.dims && j * bits < lb * 8 + 8; ++j) {
      const int shift = int(j * bits) - int(lb * 8);
      value |= shift >= 0 ? uint32_t(c[j]) << shift : uint32_t(c[j]) >> -shift;
    }
    p.stage_codes[(size_t(tok0 + t) * H + h) * p.code_stride + b] = uint8_t(value);
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

// Blocks of the commit, in this order: copy-on-write (copy, region), staged rows (packed
// token, head), fp16 rows (input row, head), bookkeeping words. The copies run as a launch of
// their own, before the rest: a copy reads rows of a shared page that another sequence of the
// same call may then write in place (the CPU backend also copies before it writes). One
// (token, head) or (row, head) per block keeps every thread to about one load and one store:
// a decode step's commit is latency-bound.
struct CommitGrid {
  uint64_t copy_blocks, row_blocks, fp16_blocks, word_blocks;
  KVB_HD uint64_t blocks() const { return copy_blocks + row_blocks + fp16_blocks + word_blocks; }
};
KVB_HD CommitGrid commit_grid(const AppendParams& p) {
  return {uint64_t(p.n_copies) * p.n_layers * p.n_heads, uint64_t(p.n_tokens) * p.n_heads,
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
    // The staged row of one (packed token, head) into its page row.
    const size_t item = size_t(b);
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
