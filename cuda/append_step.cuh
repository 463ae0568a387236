// kvbits CUDA — the phases of the single-launch append (append_step.cu), written as per-thread
// functions that compile for the device and for the host, like append_body.cuh:
// tests/cache/test_append_emulated.cpp runs them thread after thread on the CPU.
//
// One block per packed (token, head) item, kStepThreads threads. Thread o < 2D owns output o
// (K hp slot o, or V row o - D) and keeps its rotation row in registers; the last warp runs
// the canonical fp64 chains (norms, then Σ c²), one lane per rotation group, while the other
// warps compute the fast dots and the codes. Check blocks (input rows that are not packed)
// follow the item blocks. Codes and scales are exactly those of the two-launch path
// (append_body.cuh): same canonical chains, same fast-path bound. The fast fp32 dot here
// uses four partial sums; every product still goes through at most d roundings (ceil(d/4)
// in its partial sum, two to combine them; a zero padding product adds none), so the bound
// of append.cu holds unchanged.
#pragma once

#include "cuda/append_body.cuh"

namespace kvbits::cuda::step_body {

using namespace append_body;

#define KVB_HD __host__ __device__ inline

constexpr uint32_t kStepOutputs = 256;                // 2D for D <= 128
constexpr uint32_t kStepThreads = kStepOutputs + 32;  // + the warp of the canonical chains
constexpr uint32_t kMaxJb = kStepOutputs / 2 / 4;     // float4 blocks of the longest rotation row
constexpr uint32_t kHeadWords = (sizeof(AppendHead) + 3) / 4;
constexpr uint32_t kChainBlock = 8;  // chain terms loaded per step, while the previous 8 add
static_assert(kHeadWords <= kStepThreads, "the head is copied one word per thread");

struct StepShared {
  alignas(16) uint32_t head_words[kHeadWords];
  alignas(16) float xs[kStepOutputs + 4 * kMaxMatrices];  // hp order, groups at Matrix::xoff
  float xin[kStepOutputs];                                // K then V in input dim order
  // x², then c², each matrix's terms at StepRegs::poff (a multiple of kChainBlock) and
  // padded with +0.0 to a whole block: adding +0.0 to the chain is exact.
  alignas(16) double sq[kStepOutputs + kChainBlock * kMaxMatrices];
  double nrm[kMaxMatrices];
  uint8_t codes[kStepOutputs];
  uint32_t last;                // this block finished the call
  unsigned long long error;     // the call's error word, as the last block read it
  KVB_HD const AppendHead& head() const { return *reinterpret_cast<const AppendHead*>(head_words); }
};

// What one thread keeps across the barriers (registers on the device).
struct StepRegs {
  AppendToken tok;
  Matrix mt{};       // its matrix (an output's, or a chain lane's)
  uint32_t m = 0;    // that matrix's index, and the output's row in it
  uint32_t r = 0;
  uint32_t sd = 0;   // the xin index its hp-order value comes from
  uint32_t poff = 0; // its matrix's chain terms in StepShared::sq
  float s = 0.0f;    // the fast dot
  float4 w[kMaxJb];  // its rotation row
};

KVB_HD bool step_item_block(const AppendParams& p, uint32_t b) { return b < p.n_tokens * p.n_heads; }

// Matrix m of the head (K groups, then V), with its place in xs.
KVB_HD Matrix step_matrix(const AppendHead& hd, uint32_t D, uint32_t m) {
  uint32_t xoff = 0;  // independent loads, no loop-carried address
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (uint32_t i = 0; i < kAppendMaxGroups; ++i)
    if (i < m && i < hd.n_k_groups) xoff += (hd.k[i].dims + 3) & ~3u;
  if (m < hd.n_k_groups) {
    const AppendGroup& g = hd.k[m];
    return {g.bits, g.first, g.dims, g.byte_offset, g.rot_offset, g.cb_offset, xoff, g.first};
  }
  const AppendGroup& g = hd.v;
  return {g.bits, 0, g.dims, hd.k_code_bytes + g.byte_offset, g.rot_offset, g.cb_offset, xoff, D};
}

// Where matrix m's chain terms start in StepShared::sq.
KVB_HD uint32_t step_chain_offset(const AppendHead& hd, uint32_t m) {
  uint32_t off = 0;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (uint32_t i = 0; i < kAppendMaxGroups; ++i)
    if (i < m && i < hd.n_k_groups) off += (hd.k[i].dims + kChainBlock - 1) / kChainBlock * kChainBlock;
  return off;
}

// The matrix that output o < 2D belongs to (groups ascend, so it is the count of later starts).
KVB_HD uint32_t step_matrix_of(const AppendHead& hd, uint32_t D, uint32_t o) {
  if (o >= D) return hd.n_k_groups;
  uint32_t m = 0;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (uint32_t i = 1; i < kAppendMaxGroups; ++i) m += i < hd.n_k_groups && hd.k[i].first <= o;
  return m;
}

// Phase 0: every load of the block, issued together: the head's words for the later phases,
// the thread's input value (checked, and rounded through fp16 when there is a window), slot
// order, rotation row, and the codebooks. gh and tok are the item's head and token where the
// launch keeps them (the kernel parameter for small calls, else p.heads / p.tokens), read in
// place rather than after a copy to shared memory, so nothing waits for that copy.
KVB_HD void step_begin(const AppendParams& p, const AppendHead& gh, const AppendToken& tok, StepShared& s, float* cent,
                       float* bnd, uint32_t item, uint32_t tid, StepRegs& g) {
  const uint32_t H = p.n_heads, D = p.head_dim, h = item % H;
  if (tid < kHeadWords) s.head_words[tid] = reinterpret_cast<const uint32_t*>(&gh)[tid];
  g.tok = tok;
  if (tid >= kStepOutputs && tid - kStepOutputs <= gh.n_k_groups) {
    g.m = tid - kStepOutputs;
    g.mt = step_matrix(gh, D, g.m);
    g.poff = step_chain_offset(gh, g.m);
  }
  if (tid < 2 * D) {
    g.m = step_matrix_of(gh, D, tid);
    const Matrix mt = step_matrix(gh, D, g.m);
    g.mt = mt;
    g.r = tid - mt.code_base;
    g.poff = step_chain_offset(gh, g.m);
    g.sd = tid < D ? gh.slot_dim[tid] : tid;
    const float4* R4 = reinterpret_cast<const float4*>(gh.rot + mt.rot_offset) + g.r;
    const uint32_t n_jb = (mt.dims + 3) / 4;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (uint32_t jb = 0; jb < kMaxJb; ++jb)
      if (jb < n_jb) g.w[jb] = load_rot4(R4 + size_t(jb) * mt.dims);
    const uint32_t tensor = tid / D, dim = tid % D;
    float x;
    if (g.tok.src == AppendToken::kFromRing) {
      const AppendEntry& e = p.entries[g.tok.entry];
      x = half_bits_to_float(e.fp16[ring_offset(p, tensor, h, g.tok.t) + dim]);
    } else {
      x = load_input(tensor ? p.v : p.k, (size_t(g.tok.src) * H + h) * D + dim, p.dtype);
      check_value(p, x, p.window > 0, g.tok.src, h, tensor, dim);
      if (p.window > 0) x = half_bits_to_float(to_half_bits(x));
    }
    s.xin[tid] = x;
  }
  const uint32_t n_cb = gh.n_cb;
  const float* gc = gh.cent;
  const float* gb = gh.bnd;
  for (uint32_t i = tid; i < n_cb; i += kStepThreads) {
    cent[i] = gc[i];
    bnd[i] = gb[i];
  }
}

// Phase 1: values in hp order (and their squares); the chain lanes zero the group padding.
KVB_HD void step_place(const AppendParams& p, StepShared& s, uint32_t tid, const StepRegs& g) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim;
  if (tid < 2 * D) {
    const float v = s.xin[g.sd];
    s.xs[g.mt.xoff + g.r] = v;
    s.sq[g.poff + g.r] = double(v) * double(v);
  } else if (tid >= kStepOutputs && tid - kStepOutputs <= hd.n_k_groups) {
    for (uint32_t j = g.mt.dims; j < ((g.mt.dims + 3) & ~3u); ++j) s.xs[g.mt.xoff + j] = 0.0f;
    for (uint32_t j = g.mt.dims; j % kChainBlock != 0; ++j) s.sq[g.poff + j] = 0.0;
  }
}

// The canonical fp64 chain over the precomputed exact terms of one matrix (a fma of two equal
// fp32 values into the sum adds the same exact square, so this is tq_mse.hpp's chain). Terms
// come in padded blocks of kChainBlock (16-byte loads); the next block loads while the
// current one adds, so the chain runs at the add latency (8.5 cycles on an H100) rather than
// at a shared-memory load per term.
KVB_HD double step_chain(const double* terms, uint32_t n) {
  const double2* t2 = reinterpret_cast<const double2*>(terms);
  constexpr uint32_t kPairs = kChainBlock / 2;
  const uint32_t blocks = (n + kChainBlock - 1) / kChainBlock;
  double acc = 0.0;
  double2 cur[kPairs], next[kPairs];
  for (uint32_t k = 0; k < kPairs; ++k) next[k] = blocks > 0 ? t2[k] : double2{0.0, 0.0};
  for (uint32_t blk = 0; blk < blocks; ++blk) {
    for (uint32_t k = 0; k < kPairs; ++k) cur[k] = next[k];
    if (blk + 1 < blocks)
      for (uint32_t k = 0; k < kPairs; ++k) next[k] = t2[(blk + 1) * kPairs + k];
    for (uint32_t k = 0; k < kPairs; ++k) {
      acc += cur[k].x;
      acc += cur[k].y;
    }
  }
  return acc;
}

// Phase 2: the fast dots; the chain lanes compute the group norms meanwhile.
KVB_HD void step_dots(const AppendParams& p, StepShared& s, uint32_t tid, StepRegs& g) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim;
  if (tid < 2 * D) {
    const Matrix& mt = g.mt;
    const uint32_t n_jb = (mt.dims + 3) / 4;
    const float4* x4 = reinterpret_cast<const float4*>(s.xs + mt.xoff);
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (uint32_t jb = 0; jb < kMaxJb; ++jb)
      if (jb < n_jb) {
        const float4 x = x4[jb], w = g.w[jb];
        a0 = fma32(w.x, x.x, a0);
        a1 = fma32(w.y, x.y, a1);
        a2 = fma32(w.z, x.z, a2);
        a3 = fma32(w.w, x.w, a3);
      }
    g.s = (a0 + a1) + (a2 + a3);
  } else if (tid >= kStepOutputs && tid - kStepOutputs <= hd.n_k_groups) {
    s.nrm[g.m] = sqrt(step_chain(s.sq + g.poff, g.mt.dims));
  }
}

// Phase 3: codes (append_body's exact_or_fast) and their squared centroids.
KVB_HD void step_codes(const AppendParams& p, StepShared& s, const float* cent, const float* bnd, uint32_t tid,
                       const StepRegs& g) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim;
  if (tid >= 2 * D) return;
  const Matrix& mt = g.mt;
  const uint32_t code =
      exact_or_fast(g.s, s.nrm[g.m], mt, g.r, hd.rot, s.xs + mt.xoff, bnd + mt.cb_offset, p.force_exact);
  s.codes[tid] = uint8_t(code);
  const double c = double(cent[mt.cb_offset + code]);
  s.sq[g.poff + g.r] = c * c;
}

// Phase 4: scales (chain lanes) and packed bytes (output threads), straight into the page row.
KVB_HD void step_store(const AppendParams& p, StepShared& s, uint32_t item, uint32_t tid, const StepRegs& g) {
  const AppendHead& hd = s.head();
  const uint32_t D = p.head_dim, n_mats = hd.n_k_groups + 1;
  uint8_t* page = hd.pool + size_t(g.tok.page) * hd.page_bytes;
  const uint32_t kc = hd.k_code_bytes, row = g.tok.row;
  if (tid >= kStepOutputs && tid - kStepOutputs < n_mats) {
    const uint32_t m = g.m;
    const Matrix& mt = g.mt;
    const double n = s.nrm[m];
    uint16_t scale = 0;
    if (n != 0.0) {
      const double csq = step_chain(s.sq + g.poff, mt.dims);
      if (csq > 0.0) scale = double_to_half_bits(n / sqrt(csq));
    }
    if ((scale & 0x7C00u) == 0x7C00u)
      error_min(p.error, AppendError::kScaleBase + 2ull * item + (m + 1 == n_mats ? 0 : 1));
    if (!p.commit) return;
    if (m + 1 == n_mats) reinterpret_cast<uint16_t*>(page + hd.v_scales)[row] = scale;
    else reinterpret_cast<uint16_t*>(page + hd.k_scales)[size_t(row) * hd.n_k_groups + m] = scale;
    return;
  }
  const uint32_t row_bytes = kc + hd.v_code_bytes;
  if (!p.commit || tid >= row_bytes) return;
  // The group of byte b: V past the K bytes, else the count of later K groups starting at or
  // before it (independent loads).
  const uint32_t b = tid;
  uint32_t bits = hd.v.bits, dims = hd.v.dims, lb = b - kc, code_base = D;
  if (b < kc) {
    uint32_t m = 0;
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (uint32_t i = 1; i < kAppendMaxGroups; ++i) m += i < hd.n_k_groups && hd.k[i].byte_offset <= b;
    const AppendGroup& kg = hd.k[m];
    bits = kg.bits, dims = kg.dims, lb = b - kg.byte_offset, code_base = kg.first;
  }
  const uint8_t* c = s.codes + code_base;
  uint32_t value = 0;
  for (uint32_t j = lb * 8 / bits; j < dims && j * bits < lb * 8 + 8; ++j) {
    const int shift = int(j * bits) - int(lb * 8);
    value |= shift >= 0 ? uint32_t(c[j]) << shift : uint32_t(c[j]) >> -shift;
  }
  if (b < kc) page[size_t(row) * kc + b] = uint8_t(value);
  else page[hd.v_codes + size_t(row) * hd.v_code_bytes + (b - kc)] = uint8_t(value);
}

// The block that finishes last, once every other block's writes are visible: with no error,
// the fp16 sink and ring rows and the bookkeeping words; with one, every page row the items
// wrote back to zero (unwritten rows of a page owned alone are zero). Then the outcome.
KVB_HD void step_finish_call(const AppendParams& p, unsigned long long error, uint32_t tid, uint32_t nthreads) {
  const uint32_t H = p.n_heads;
  if (p.commit && error == AppendError::kNone) {
    const CommitGrid g = commit_grid(p);
    for (uint64_t b = 0; b < g.fp16_blocks; ++b) commit_block(p, g, g.copy_blocks + g.row_blocks + b, tid, nthreads);
    for (uint32_t i = tid; i < p.n_words; i += nthreads) *p.words[i].dst = p.words[i].value;
  } else if (p.commit) {
    for (uint32_t item = 0; item < p.n_tokens * H; ++item) {
      const AppendToken tok = p.tokens[item / H];
      const AppendHead& hd = p.heads[size_t(p.layer) * H + item % H];
      uint8_t* page = hd.pool + size_t(tok.page) * hd.page_bytes;
      const uint32_t kc = hd.k_code_bytes, vc = hd.v_code_bytes, G = hd.n_k_groups;
      for (uint32_t i = tid; i < kc; i += nthreads) page[size_t(tok.row) * kc + i] = 0;
      for (uint32_t i = tid; i < vc; i += nthreads) page[hd.v_codes + size_t(tok.row) * vc + i] = 0;
      for (uint32_t i = tid; i <= G; i += nthreads) {
        if (i < G) reinterpret_cast<uint16_t*>(page + hd.k_scales)[size_t(tok.row) * G + i] = 0;
        else reinterpret_cast<uint16_t*>(page + hd.v_scales)[tok.row] = 0;
      }
    }
  }
  if (tid == 0) {
    p.step->error = AppendError::kNone;
    p.step->arrived = 0;
    *reinterpret_cast<volatile unsigned long long*>(p.outcome) = error;
#ifdef __CUDA_ARCH__
    __threadfence_system();  // the word before the flag, as the host sees them
#endif
    *reinterpret_cast<volatile uint32_t*>(p.outcome_ready) = 1;
  }
}

#undef KVB_HD

}  // namespace kvbits::cuda::step_body
