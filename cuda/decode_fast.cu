// The fp16-operand tensor-core decode kernel (kDecodeVariantFast; docs/gpu-decode.md, "Fast
// kernel"). Same CTA structure as decode_mma.cu (grid (split, KV head, sequence), four warps,
// each with its own sub-tile pipeline, online softmax and accumulators), but every MMA operand
// is one fp16 value — the precision of an fp16 attention kernel (2^-11 relative per operand,
// fp32 accumulation) — which halves the MMAs and, above all, the unpacking work per value:
//   K phase  C[token][query] += centroid(code) * q' on m16n8k16 with k = 16 slots. A thread
//            takes four adjacent codes of each of its rows per chunk; each pair of adjacent codes
//            is ONE look-up in a pair table (entry c0 | c1 << b holds (half(C[c0]), half(C[c1])))
//            that yields a whole A register. Codes wider than kFastPairMaxBits use one-value
//            tables and a byte permute per register. Groups are padded to 16-slot chunks (zero
//            q' on the padding) and scaled by the token's fp16 group scale after each group.
//   softmax  as decode_mma.cu; p'' = p * v_scale * 2^z stored as fp16 straight into the V
//            phase's B fragments (rows r and r + 8 of a k-step in one word).
//   V phase  acc[dim][query] += V[token][dim] * p'' with A = 16 dims x 16 tokens: a thread's dims
//            are contiguous, so a pair look-up gives (v[t][d], v[t][d + 1]) of one token and two
//            byte permutes of two tokens' pairs give (v[t][d], v[t'][d]), (v[t][d+1], v[t'][d+1]).
// Scales, the softmax scale and the powers of two stay in fp32 outside the MMAs.
#include <string>
#include <type_traits>

#include "cuda/decode_mma_util.cuh"
#include "cuda/decode_plain.cuh"

namespace kvbits::cuda::decode_detail {

namespace {

// One K group as the kernel reads it (a 16-byte multiple: the prepared block is copied as such).
struct FastGroup {
  uint32_t bits, mask, lut_off;  // width; index mask << 2 (2b bits for pair tables, b for single
                                 // ones); byte offset of its table
  uint32_t n_chunks, v0;         // 16-slot chunks (fast_full_chunks), first virtual chunk
  uint32_t bit_off;              // byte_offset * 8 + front pad bits - 2 (the pre-shift)
  uint32_t pw;                   // chunks per 32-bit window (pair tables): floor(30 / 4b)
  uint32_t first, dims;
  float qf;                      // 2^(query exponent): q' * qf lies below 2^15
  float f;                       // softmax scale * log2(e) * 2^-(table exponent + query exponent):
                                 // logits in log2 units (the softmax uses exp2)
  uint32_t n8;                   // 1: an 8-slot tail chunk after the 16-slot ones (fast_tail_chunk)
};
static_assert(sizeof(FastGroup) * kDecodeMaxGroups + 16 <= kFastPrepHeader, "prepared block header");
static_assert(kFastPrepKev >= sizeof(FastGroup) * kDecodeMaxGroups, "prepared block header");

__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
  return uint32_t(__half_as_ushort(__float2half_rn(lo))) | (uint32_t(__half_as_ushort(__float2half_rn(hi))) << 16);
}

// Low halves of x and y as (x.lo, y.lo), high halves as (x.hi, y.hi).
__device__ __forceinline__ uint32_t lows(uint32_t x, uint32_t y) { return __byte_perm(x, y, 0x5410); }
__device__ __forceinline__ uint32_t highs(uint32_t x, uint32_t y) { return __byte_perm(x, y, 0x7632); }

// The per-call preparation of the fast kernel, grid (2 x KV heads, sequences): what every split
// of a (sequence, KV head) would otherwise compute again in its prologue — q' (the query
// rotation), the group descriptors, the K B operands — into its prepared block, and the heads'
// centroid tables (blocks x >= n_kv of row 0). Layout of a block (prep_words words): FastGroup[kDecodeMaxGroups] at 0, the V
// table exponent at kFastPrepKev, the B operands at kFastPrepHeader:
// qb[((v * NT + nt) * 8 + i) * 8 + 2 t + w] = query 8 nt + i, lane t, register w of virtual chunk
// v: elements e, e + 1 of the chunk's group with e = (4 n16 + 2 n8) t + 4 (v - v0) + 2 w (the
// thread's run: four slots per 16-slot chunk, two in the 8-slot tail, whose w = 1 is zero), zero
// past the group's dims (dims are even).
constexpr uint32_t kPrepThreads = 512;  // 2..8 threads per slot: short dependent chains

template <int NT, int MD>
__global__ void __launch_bounds__(kPrepThreads) decode_fast_prep_kernel(KernelArgs a) {
  constexpr uint32_t GQP = 8 * NT, TPS = kPrepThreads / (16 * MD), QPT = GQP / TPS;  // threads per slot, queries per thread
  static_assert(TPS >= 1 && QPT >= 1 && GQP % TPS == 0, "prep thread layout");
  extern __shared__ __align__(16) uint8_t smem[];  // q staging [D][GQP], q' [GQP][D]
  __shared__ __align__(16) uint32_t hd_words[kHeadWords];
  __shared__ FastGroup groups[kDecodeMaxGroups];
  __shared__ float table_max[kDecodeMaxGroups + 1];
  __shared__ float cent[kDecodeMaxCentroids];
  __shared__ uint16_t slot_dim[kDecodeMaxHeadDim];
  __shared__ uint32_t gmax_bits[kDecodeMaxGroups];  // per K group: max |q'| as float bits
  const DecodeHead& hd = *reinterpret_cast<const DecodeHead*>(hd_words);
  // Blocks x >= n_kv (in row y = 0) build the tables of head x - n_kv, beside the blocks that
  // rotate the queries: the two latency chains run side by side. Each is kept to three global
  // round trips: the head; then its centroids, the queries and the rotation rows all at once.
  const bool tables = blockIdx.x >= a.n_kv;
  if (tables && blockIdx.y != 0) return;
  const uint32_t h = tables ? blockIdx.x - a.n_kv : blockIdx.x, seq = blockIdx.y;
  const uint32_t tid = threadIdx.x, lane = tid & 31u, warp = tid >> 5;
  pdl_trigger();  // the decode launch may start (it waits for this launch before reading its output)
  load_head(hd_words, a.heads + h);
  __syncthreads();
  const uint32_t D = a.D, G = hd.n_k_groups, dshift = uint32_t(__ffs(int(D))) - 1u;  // D: 64, 128 or 256
  const uint32_t sl0 = tid & (D - 1u), part = tid >> dshift;  // slot, and which of its TPS threads
  for (uint32_t k = tid; k < hd.n_centroids; k += kPrepThreads) cent[k] = a.centroids[hd.centroid_base + k];
  if (tid < kDecodeMaxGroups) gmax_bits[tid] = 0u;
  float* stage = reinterpret_cast<float*>(smem);  // [D][GQP]: hp-ordered raw queries
  float* qrot = stage + D * GQP;                   // [GQP][D]; first the raw queries [GQP][D]
  // This thread's slot sl0: its group and the first kPre elements of its R_g row, requested
  // before the barrier (Block-GTQ groups are short; longer rows continue below).
  constexpr uint32_t kPre = 48;
  const bool rotate = !tables && a.q != nullptr;
  uint32_t g0 = 0, first0 = 0, d0 = 0;  // the slot's group, its first slot and dims
  const float2* rrow = nullptr;         // the slot's row of R_g (float pairs)
  float2 r0[kPre / 2];
  if (rotate) {
    // The raw queries in their own order (no wait on the slot map), permuted after the barrier.
    const size_t row0 = size_t(seq) * a.n_q + size_t(h) * a.gqa;
    for (uint32_t idx = tid; idx < D * GQP; idx += kPrepThreads)
      qrot[idx] = (idx >> dshift) < a.gqa ? load_q(a.q, a.q_dtype, row0 * D + idx) : 0.0f;
    for (uint32_t k = tid; k < D; k += kPrepThreads) slot_dim[k] = hd.k_slot_dim[k];
    uint32_t roff = 0;
    while (g0 + 1 < G && sl0 >= hd.k_groups[g0 + 1].first_slot) roff += hd.k_groups[g0].dims * hd.k_groups[g0].dims, ++g0;
    first0 = hd.k_groups[g0].first_slot, d0 = hd.k_groups[g0].dims;
    rrow = reinterpret_cast<const float2*>(hd.k_rotation + roff + size_t(sl0 - first0) * d0);
#pragma unroll
    for (uint32_t u = 0; u < kPre / 2; ++u) r0[u] = 2 * u < d0 ? rrow[u] : make_float2(0.0f, 0.0f);
  } else if (!tables) {  // pre-rotated queries (q_rot)
    for (uint32_t idx = tid; idx < D * GQP; idx += kPrepThreads) {
      const uint32_t i = idx >> dshift, sl = idx & (D - 1u);
      qrot[i * D + sl] = i < a.gqa ? a.q_rot[(size_t(seq) * a.n_q + size_t(h) * a.gqa + i) * D + sl] : 0.0f;
    }
  }
  __syncthreads();
  if (rotate) {
    for (uint32_t idx = tid; idx < D * GQP; idx += kPrepThreads) {
      const uint32_t i = idx >> dshift, sl = idx & (D - 1u);
      stage[sl * GQP + i] = qrot[i * D + slot_dim[sl]];
    }
  }
  if (!tables && tid >= kPrepThreads - 32 && tid - (kPrepThreads - 32) < G) {
    // The descriptors' query-independent fields, by the last warp (the others permute and scan
    // the tables); qf and f follow once the group maxima are known.
    const uint32_t g = tid - (kPrepThreads - 32);
    const DecodeGroup& gr = hd.k_groups[g];
    const bool pair = gr.bits <= kFastPairMaxBits;
    FastGroup m;
    m.bits = gr.bits;
    m.mask = ((1u << (pair ? 2 * gr.bits : gr.bits)) - 1u) << 2;
    m.lut_off = fast_lut_offset(hd, g) * 4;
    m.n_chunks = fast_full_chunks(gr.dims);
    m.n8 = fast_tail_chunk(gr.dims);
    m.v0 = 0;
    for (uint32_t q = 0; q < g; ++q) m.v0 += fast_group_chunks(hd.k_groups[q].dims);
    m.bit_off = gr.byte_offset * 8 + kMmaSubPad * 8 - 2;
    m.pw = !pair ? 0u : gr.bits == 1 ? 7u : gr.bits == 2 ? 3u : gr.bits == 3 ? 2u : 1u;  // floor(30 / 4b)
    m.first = gr.first_slot;
    m.dims = gr.dims;
    m.qf = m.f = 0.0f;
    groups[g] = m;
  }
  // The largest |centroid| of every table (K group tb, or V for tb == G): warp w takes tables
  // w, w + 16, ...; each table is scaled by its own power of two.
  for (uint32_t tb = warp; tb <= G; tb += kPrepThreads / 32) {
    const uint32_t nc = 1u << fast_table_bits(hd, tb);
    const float* c = cent + (tb < G ? hd.k_groups[tb].centroid_offset : hd.v_centroid_offset);
    float mc = 0.0f;
    for (uint32_t k = lane; k < nc; k += 32) mc = fmaxf(mc, fabsf(c[k]));
    mc = warp_max(mc);
    if (lane == 0) table_max[tb] = mc;
  }
  if (tables) {
    // Every word of every table in one flat loop (tables sorted by size, largest first: see
    // fast_lut_offset), so that no thread walks the tables one after another.
    __shared__ uint32_t t_off[kDecodeMaxGroups + 1], t_end[kDecodeMaxGroups + 1];
    __shared__ float t_scale[kDecodeMaxGroups + 1];
    __syncthreads();  // table_max
    if (tid <= G) {
      t_off[tid] = fast_lut_offset(hd, tid);
      t_end[tid] = t_off[tid] + fast_table_words(fast_table_bits(hd, tid));
      t_scale[tid] = exp2i(prescale(table_max[tid]));
    }
    __syncthreads();
    const uint32_t total = fast_lut_words(hd);
    for (uint32_t k = tid; k < total; k += kPrepThreads) {
      uint32_t tb = 0;  // the table holding word k (none: the zero padding to 4 words)
      bool found = false;
      for (uint32_t u = 0; u <= G; ++u)
        if (k >= t_off[u] && k < t_end[u]) tb = u, found = true;
      uint32_t w = 0u;
      if (found) {
        const uint32_t bits = fast_table_bits(hd, tb), nc = 1u << bits, e = k - t_off[tb];
        const float* c = cent + (tb < G ? hd.k_groups[tb].centroid_offset : hd.v_centroid_offset);
        const float f = t_scale[tb];
        w = bits <= kFastPairMaxBits ? pack_half2(c[e & (nc - 1)] * f, c[e >> bits] * f) : pack_half2(c[e] * f, 0.0f);
      }
      a.ws_lut[size_t(h) * a.lut_words + k] = w;
    }
    return;
  }
  __syncthreads();  // stage complete; the raw queries are no longer read
  if (rotate) {
    // q'_i[sl] = R_g[sl - first] . q_i[first ..] over the slot's group: the slot's threads take
    // queries i = part, part + TPS, ...; per query the same order of fp32 FMAs as
    // rotated_queries (the fp32-grade kernel's prologue).
    {  // one slot per thread: kPrepThreads >= D
      float acc[QPT];
#pragma unroll
      for (uint32_t qi = 0; qi < QPT; ++qi) acc[qi] = 0.0f;
      // One pair of terms per element pair, in order: the prefetched part of the row from
      // registers, the rest of a long row from global memory.
      auto step = [&](float2 r, uint32_t j) {
        const float* q0 = stage + (first0 + j) * GQP;
#pragma unroll
        for (uint32_t qi = 0; qi < QPT; ++qi) {
          const uint32_t i = part + qi * TPS;
          acc[qi] = __fmaf_rn(r.y, q0[GQP + i], __fmaf_rn(r.x, q0[i], acc[qi]));
        }
      };
#pragma unroll
      for (uint32_t u = 0; u < kPre / 2; ++u)
        if (2 * u < d0) step(r0[u], 2 * u);
      for (uint32_t j = kPre; j < d0; j += 2) step(rrow[j / 2], j);
      float m = 0.0f;
#pragma unroll
      for (uint32_t qi = 0; qi < QPT; ++qi) qrot[(part + qi * TPS) * D + sl0] = acc[qi], m = fmaxf(m, fabsf(acc[qi]));
      atomicMax(&gmax_bits[g0], __float_as_uint(m));  // non-negative floats order as their bits
    }
  }
  if (!rotate) {  // pre-rotated queries: the group maxima from q' itself
    for (uint32_t g = warp; g < G; g += kPrepThreads / 32) {
      const DecodeGroup& gr = hd.k_groups[g];
      float mq = 0.0f;
      for (uint32_t i = 0; i < GQP; ++i)
        for (uint32_t j = lane; j < gr.dims; j += 32) mq = fmaxf(mq, fabsf(qrot[i * D + gr.first_slot + j]));
      mq = warp_max(mq);
      if (lane == 0) gmax_bits[g] = __float_as_uint(mq);
    }
  }
  __syncthreads();  // q', the group maxima and table_max published
  uint32_t* out = a.ws_prep + (size_t(seq) * a.n_kv + h) * a.prep_words;
  if (tid < G) {  // the query-dependent fields of each group descriptor
    const uint32_t g = tid;
    const float mq = __uint_as_float(gmax_bits[g]);
    groups[g].qf = exp2i(prescale(mq));
    // Logits in log2 units (the kernel's softmax uses exp2): softmax scale * log2(e).
    groups[g].f = a.scale * 1.44269504088896341f * exp2i(-(prescale(table_max[g]) + prescale(mq)));
  }
  __syncthreads();
  for (uint32_t k = tid; k < G * sizeof(FastGroup) / 4; k += kPrepThreads) out[k] = reinterpret_cast<const uint32_t*>(groups)[k];
  if (tid == 0) out[kFastPrepKev / 4] = uint32_t(prescale(table_max[G]));
  uint32_t* qb = out + kFastPrepHeader / 4;
  const uint32_t n_v = fast_chunks(hd);
  for (uint32_t idx = tid; idx < n_v * NT * 64; idx += kPrepThreads) {
    const uint32_t v = idx / (NT * 64), q = (idx >> 3) & (GQP - 1), w = idx & 7u;
    uint32_t g = 0;
    while (g + 1 < G && v >= groups[g + 1].v0) ++g;
    const FastGroup& gi = groups[g];
    // The thread's run holds 4 n16 + 2 n8 elements; a tail chunk has one register (w & 1 == 0).
    const uint32_t c = v - gi.v0, e = (4 * gi.n_chunks + 2 * gi.n8) * (w >> 1) + 4 * c + 2 * (w & 1u);
    // The loads stay inside the group even where their value is not used (the compiler may
    // issue them ahead of the select).
    const float* qs = qrot + q * D + gi.first + min(e, gi.dims - 2);
    const uint32_t word = pack_half2(qs[0] * gi.qf, qs[1] * gi.qf);
    qb[idx] = e < gi.dims && (c < gi.n_chunks || (w & 1u) == 0) ? word : 0u;
  }
}

// Two adjacent wide codes (one-value tables) at stream bit `bit` as one A register.
__device__ __forceinline__ uint32_t wide_pair(const uint32_t* lut, const uint32_t* words, uint32_t bit,
                                              const FastGroup& gi) {
  const uint32_t w = bits32(words, bit);
  return lows(lut_word(lut, (w & gi.mask) | gi.lut_off), lut_word(lut, ((w >> gi.bits) & gi.mask) | gi.lut_off));
}

// This thread's K B operands of virtual chunk v for each 8-query tile (the prep block's layout).
template <int NT>
__device__ __forceinline__ void load_k_operands(const uint32_t* qb, uint32_t v, uint2 (&b)[NT]) {
  const uint32_t lane = threadIdx.x & 31u, g8 = lane >> 2, t4 = lane & 3u;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) b[nt] = *reinterpret_cast<const uint2*>(qb + ((v * NT + nt) * 8 + g8) * 8 + 2 * t4);
}

// ---- V phase with a compile-time V width VB (the launcher picks it when every head of the layer
// has the same V width, 2..4 bits, at D = 64 or 128; VB = 0 reads it at run time). A thread's
// codes of one V row are 2 MD consecutive codes (2 MD VB bits, dims 2 MD g8 ...); rows start on
// 8 bytes (v_code_bytes = 2 MD VB), so where they start inside a 32-bit word depends on g8 alone.
template <int MD, int VB>
struct VRun {
  static constexpr uint32_t kBits = 2u * MD * VB;
  __host__ __device__ static constexpr uint32_t max_shift() {
    uint32_t m = 0;
    for (uint32_t g = 0; g < 8; ++g) m = ((kBits * g) & 31u) > m ? ((kBits * g) & 31u) : m;
    return m;
  }
  static constexpr uint32_t kShift = max_shift();                  // largest start inside a word
  static constexpr uint32_t kWords = (kShift + kBits + 31) / 32;  // aligned words read
  static constexpr uint32_t kU = (kBits + 31) / 32;                    // words of the run
};

// The run of codes starting at stream bit `bit`, as kU words (bit 0 = the first code's bit 0).
template <int MD, int VB>
__device__ __forceinline__ void load_v_run(const uint32_t* words, uint32_t bit, uint32_t (&u)[VRun<MD, VB>::kU]) {
  using R = VRun<MD, VB>;
  uint32_t w[R::kWords + 1];
  const uint32_t* p = words + (bit >> 5);
#pragma unroll
  for (uint32_t j = 0; j < R::kWords; ++j) w[j] = p[j];
  w[R::kWords] = 0u;
#pragma unroll
  for (uint32_t i = 0; i < R::kU; ++i) u[i] = R::kShift == 0 ? w[i] : __funnelshift_r(w[i], w[i + 1], bit);
}

// Pair m of a run (codes 2 m, 2 m + 1) as a pair-table byte offset (index * 4), compile-time
// shifts only.
template <int VB, int M, int NU>
__device__ __forceinline__ uint32_t v_pair_index4(const uint32_t (&u)[NU]) {
  constexpr int lo = 2 * VB * M - 2;  // two bits below the field: index * 4
  constexpr uint32_t mask = ((1u << (2 * VB)) - 1u) << 2;
  if constexpr (lo < 0) {
    return (u[0] << 2) & mask;
  } else if constexpr ((lo >> 5) == ((lo + 2 * VB + 1) >> 5)) {
    return (u[lo >> 5] >> (lo & 31)) & mask;
  } else {
    return __funnelshift_r(u[lo >> 5], u[(lo >> 5) + 1], lo & 31) & mask;
  }
}

// m-tiles M .. MD - 1 of one V k-step with a compile-time V width (u: the four rows' runs).
template <int NT, int MD, int VB, int M>
__device__ __forceinline__ void v_mtiles_fixed(const uint32_t* lut, const uint32_t (&u)[4][VRun<MD, VB>::kU],
                                               uint32_t vlut, const uint32_t (&b0)[NT], const uint32_t (&b1)[NT],
                                               float (&acc)[MD][NT][4]) {
  uint32_t x[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) x[k] = lut_word(lut, v_pair_index4<VB, M>(u[k]) | vlut);
  const uint32_t a0 = lows(x[0], x[1]), a1 = highs(x[0], x[1]);
  const uint32_t a2 = lows(x[2], x[3]), a3 = highs(x[2], x[3]);
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) mma16816(acc[M][nt], a0, a1, a2, a3, b0[nt], b1[nt]);
  if constexpr (M + 1 < MD) v_mtiles_fixed<NT, MD, VB, M + 1>(lut, u, vlut, b0, b1, acc);
}

template <int NT, int MD, int VB>
__global__ void __launch_bounds__(kCtaThreads, (NT == 1 && MD <= 8) ? 4 : 2) decode_fast_kernel(KernelArgs a) {
  constexpr uint32_t GQP = 8 * NT;
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ __align__(16) uint32_t hd_words[kHeadWords];
  const DecodeHead& hd = *reinterpret_cast<const DecodeHead*>(hd_words);
  const uint32_t split = blockIdx.x, h = blockIdx.y, seq = blockIdx.z, tid = threadIdx.x;
  const uint32_t lane = tid & 31u, warp = tid >> 5, g8 = lane >> 2, t4 = lane & 3u;
  const uint32_t D = a.D;  // 16 * MD
  load_head(hd_words, a.heads + h);
  const SeqInfo si = seq_info(a, seq);
  __syncthreads();
  if (split >= a.packed_splits) {  // fp16 rows: q itself, nothing of the prep launch
    const uint32_t u0 = (split - a.packed_splits) * a.fp16_chunk;
    plain_split<GQP>(a, hd, si, seq, h, split, false, u0, min(u0 + a.fp16_chunk, a.sink + a.window), smem);
    return;
  }
  const MmaSmemPlan sp = mma_smem_plan(a.stage_stride, D, NT, a.mma_chunks, a.lut_words, kFastWarpStages);
  // The prepared block of this (sequence, KV head) and the head's tables (decode_fast_prep),
  // copied in as the first cp.async group, ahead of the warps' first sub-tiles.
  uint8_t* prep = smem + sp.off_qb;
  uint32_t* lut = reinterpret_cast<uint32_t*>(smem);  // at offset 0: look-ups need no base add
  // The first sub-tiles do not depend on the prep launch: they are requested first, then the CTA
  // waits for the prep launch (it starts early only at small grids: KernelArgs::pdl_decode).
  const WarpTiles wt = start_warp_tiles(a, hd, sp, smem, si.n_packed, seq, split);
  const SubTileLayout& st = wt.st;
  pdl_trigger();  // the merge launch may start its blocks (it waits for this launch to end)
  pdl_wait();  // the prep launch's blocks (a no-op unless launched early: pdl_decode)
  {
    const uint8_t* src = reinterpret_cast<const uint8_t*>(a.ws_prep + (size_t(seq) * a.n_kv + h) * a.prep_words);
    for (uint32_t c = tid * 16; c < a.prep_words * 4; c += kCtaThreads * 16) cp_async16(prep + c, src + c);
    const uint8_t* lsrc = reinterpret_cast<const uint8_t*>(a.ws_lut + size_t(h) * a.lut_words);
    for (uint32_t c = tid * 16; c < a.lut_words * 4; c += kCtaThreads * 16) cp_async16(lut + c / 4, lsrc + c);
    cp_async_commit();
  }
  // Stream bit of each V code row in a buffer (the same for every sub-tile): one shared-memory
  // load per row and k-step instead of the segment arithmetic.
  __shared__ uint32_t vrow_bit[kSubRows];
  if (tid < kSubRows) vrow_bit[tid] = (kMmaSubPad + st.off_vc + row_off(st, tid, st.vc_seg, hd.v_code_bytes)) * 8;
  cp_async_wait<0>();  // the prepared block (and the first sub-tiles, requested long before)
  __syncthreads();
  const FastGroup* groups = reinterpret_cast<const FastGroup*>(prep);
  const uint32_t* qb = reinterpret_cast<const uint32_t*>(prep + kFastPrepHeader);
  const uint32_t G = hd.n_k_groups;
  const uint32_t vb = VB > 0 ? uint32_t(VB) : hd.v_bits, vmask = ((1u << (2 * vb)) - 1u) << 2, vlut = fast_lut_offset(hd, G) * 4;
  const uint32_t vpw = 30 / (2 * vb);  // dim pairs per 32-bit window (the launcher keeps vb <= 5)
  const int kev = *reinterpret_cast<const int*>(prep + kFastPrepKev);

  // ---- Main loop: one 64-row sub-tile per warp step.
  float acc[MD][NT][4], mrun[NT][2], lrun[NT][2];
  zero_frags(acc);
  softmax_init(mrun, lrun);
  int zcur = 0;
  // P of this warp: word ((ks * 8 + r) * GQP + q) = (p''[16 ks + r][q], p''[16 ks + r + 8][q]).
  uint32_t* pb = reinterpret_cast<uint32_t*>(smem + sp.off_pbuf) + warp * kSubRows * GQP;
  const uint32_t kc = hd.k_code_bytes, ks2 = 2 * G;

#pragma unroll 1
  for (uint32_t it = 0; it < wt.n_my; ++it) {
    cp_async_wait<1>();  // the K half of this step (its V half may still be in flight)
    __syncwarp();        // the other lanes' copies are visible
    uint8_t* buf = wt.wbuf;
    const uint32_t* words = reinterpret_cast<const uint32_t*>(buf);  // bit 0 = front pad
    const uint8_t* sub = buf + kMmaSubPad;
    const uint32_t valid = wt.valid_rows(it);

    // ---- K phase: rows 16 mt + 8 hh + g8 of this thread, logits per group.
    float s[kMt][NT][4];
    uint32_t kbit[kMt][2];
    zero_frags(s);
    k_row_bits(st, kc, kbit);
#pragma unroll 1
    for (uint32_t g = 0; g < G; ++g) {
      const FastGroup gi = groups[g];
      float c[kMt][NT][4];
      zero_frags(c);
      // This thread's run of the group: elements [R t4, R (t4 + 1)) with R = 4 n16 + 2 n8, four
      // per 16-slot chunk, two in the 8-slot tail chunk (m16n8k8).
      const uint32_t run = gi.bit_off + (4 * gi.n_chunks + 2 * gi.n8) * t4 * gi.bits;
      if (gi.pw > 0) {  // pair tables (warp-uniform branch)
        uint32_t win[kMt][2];
        uint32_t cw = gi.pw;
#pragma unroll 1
        for (uint32_t cc = 0; cc < gi.n_chunks + gi.n8; ++cc) {
          if (cw == gi.pw) {
#pragma unroll
            for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
              for (int hh = 0; hh < 2; ++hh) win[mt][hh] = bits32(words, kbit[mt][hh] + run + 4 * cc * gi.bits);
            cw = 0;
          }
          const uint32_t sh0 = cw * 4 * gi.bits, sh1 = sh0 + 2 * gi.bits;
          ++cw;
          uint2 b[NT];
          load_k_operands<NT>(qb, gi.v0 + cc, b);
          if (cc < gi.n_chunks) {
#pragma unroll
            for (int mt = 0; mt < kMt; ++mt) {
              const uint32_t a0 = lut_word(lut, ((win[mt][0] >> sh0) & gi.mask) | gi.lut_off);
              const uint32_t a1 = lut_word(lut, ((win[mt][1] >> sh0) & gi.mask) | gi.lut_off);
              const uint32_t a2 = lut_word(lut, ((win[mt][0] >> sh1) & gi.mask) | gi.lut_off);
              const uint32_t a3 = lut_word(lut, ((win[mt][1] >> sh1) & gi.mask) | gi.lut_off);
#pragma unroll
              for (int nt = 0; nt < NT; ++nt) mma16816(c[mt][nt], a0, a1, a2, a3, b[nt].x, b[nt].y);
            }
          } else {  // the 8-slot tail chunk: two codes per row
#pragma unroll
            for (int mt = 0; mt < kMt; ++mt) {
              const uint32_t a0 = lut_word(lut, ((win[mt][0] >> sh0) & gi.mask) | gi.lut_off);
              const uint32_t a1 = lut_word(lut, ((win[mt][1] >> sh0) & gi.mask) | gi.lut_off);
#pragma unroll
              for (int nt = 0; nt < NT; ++nt) mma1688(c[mt][nt], a0, a1, b[nt].x);
            }
          }
        }
      } else {  // wide codes: one value per look-up, two look-ups per register
#pragma unroll 1
        for (uint32_t cc = 0; cc < gi.n_chunks; ++cc) {
          uint2 b[NT];
          load_k_operands<NT>(qb, gi.v0 + cc, b);
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
            uint32_t r[2][2];
#pragma unroll
            for (int hh = 0; hh < 2; ++hh)
#pragma unroll
              for (int j = 0; j < 2; ++j) r[hh][j] = wide_pair(lut, words, kbit[mt][hh] + run + (4 * cc + 2 * j) * gi.bits, gi);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) mma16816(c[mt][nt], r[0][0], r[1][0], r[0][1], r[1][1], b[nt].x, b[nt].y);
          }
        }
        if (gi.n8) {  // the 8-slot tail chunk
          uint2 b[NT];
          load_k_operands<NT>(qb, gi.v0 + gi.n_chunks, b);
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt) {
            const uint32_t r0 = wide_pair(lut, words, kbit[mt][0] + run + 4 * gi.n_chunks * gi.bits, gi);
            const uint32_t r1 = wide_pair(lut, words, kbit[mt][1] + run + 4 * gi.n_chunks * gi.bits, gi);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) mma1688(c[mt][nt], r0, r1, b[nt].x);
          }
        }
      }
      add_group_scores(s, c, sub, st, ks2, g, gi.f);
    }

    __syncwarp();  // every lane is done with the K half: refill it with the next step's
    wt.issue_next_half(a, hd, buf, it, true);
    cp_async_wait<1>();  // this step's V half (the next K half may still be in flight)
    __syncwarp();

    // ---- softmax over the warp's rows; this thread's queries are 8 nt + 2 t4 + j.
    float corr[NT][2], sv[kMt][2];
    softmax_rescale<NT, true>(s, valid, mrun, lrun, corr);
    const int z = v_scales_exponent(sub, st, valid, sv);
    const float pz = exp2i(z);
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt) {
      const float svz0 = sv[mt][0] * pz, svz1 = sv[mt][1] * pz;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        float p[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) p[k] = ex2_approx(s[mt][nt][k] - mrun[nt][k & 1]);
        lrun[nt][0] += p[0] + p[2];
        lrun[nt][1] += p[1] + p[3];
        *reinterpret_cast<uint2*>(pb + (mt * 8 + g8) * GQP + 8 * nt + 2 * t4) =
            make_uint2(pack_half2(p[0] * svz0, p[2] * svz1), pack_half2(p[1] * svz0, p[3] * svz1));
      }
    }
    __syncwarp();  // P visible to the whole warp
    rescale_acc(acc, corr, exp2i(z - zcur));
    zcur = z;

    // ---- V phase: 4 k-steps of 16 rows; k slots (2 t4, 2 t4 + 1, 2 t4 + 8, 2 t4 + 9) are rows
    // 16 ks + t4 + (0, 8, 4, 12); this thread's dims are 2 MD g8 + 2 m (row g8 of m-tile m) and
    // + 1 (row g8 + 8).
#pragma unroll 1
    for (uint32_t ks = 0; ks < 4; ++ks) {
      uint32_t b0[NT], b1[NT];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        b0[nt] = pb[(ks * 8 + t4) * GQP + 8 * nt + g8];
        b1[nt] = pb[(ks * 8 + t4 + 4) * GQP + 8 * nt + g8];
      }
      uint32_t base[4];
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const uint32_t r = 16 * ks + t4 + (k == 1 ? 8 : k == 2 ? 4 : k == 3 ? 12 : 0);
        base[k] = vrow_bit[r] + 2 * MD * g8 * vb;
      }
      if constexpr (VB > 0) {
        uint32_t u[4][VRun<MD, VB>::kU];
#pragma unroll
        for (int k = 0; k < 4; ++k) load_v_run<MD, VB>(words, base[k], u[k]);
        v_mtiles_fixed<NT, MD, VB, 0>(lut, u, vlut, b0, b1, acc);
      } else {
#pragma unroll
        for (int k = 0; k < 4; ++k) base[k] -= 2;  // the pre-shift: a code lands at bit 2 (index * 4)
        uint32_t w[4];
        uint32_t cw = vpw;
#pragma unroll
        for (int m = 0; m < MD; ++m) {
          if (cw == vpw) {  // warp-uniform
#pragma unroll
            for (int k = 0; k < 4; ++k) w[k] = bits32(words, base[k] + 2 * m * vb);
            cw = 0;
          }
          const uint32_t sh = cw * 2 * vb;
          ++cw;
          uint32_t x[4];
#pragma unroll
          for (int k = 0; k < 4; ++k) x[k] = lut_word(lut, ((w[k] >> sh) & vmask) | vlut);
          const uint32_t a0 = lows(x[0], x[1]), a1 = highs(x[0], x[1]);
          const uint32_t a2 = lows(x[2], x[3]), a3 = highs(x[2], x[3]);
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) mma16816(acc[m][nt], a0, a1, a2, a3, b0[nt], b1[nt]);
        }
      }
    }
    __syncwarp();  // every lane is done with the V half and with P
    wt.issue_next_half(a, hd, buf, it, false);
  }

  // Running maxima back to natural-log units for the partial (the merge's and the other kernels'
  // convention); -inf stays -inf.
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) mrun[nt][0] *= 0.693147180559945309f, mrun[nt][1] *= 0.693147180559945309f;
  mma_write_partial<NT, MD>(a, sp, smem, acc, mrun, lrun, exp2i(-(zcur + kev)), seq, h, split);
}

template <int NT, int MD, int VB>
void launch(const KernelArgs& a, uint32_t n_kv, uint32_t n_seqs, uint32_t smem, cudaStream_t stream) {
  launch_mma_kernel<decode_fast_kernel<NT, MD, VB>>(a, n_kv, n_seqs, smem, stream,
                                                    "decode_fast_kernel<" + std::to_string(NT) + "," +
                                                        std::to_string(MD) + "," + std::to_string(VB) + ">",
                                                    a.pdl_decode != 0);
}

template <int NT, int MD, int VB>
int occupancy(uint32_t smem) {
  return mma_kernel_occupancy<decode_fast_kernel<NT, MD, VB>>(smem, "decode_fast_kernel");
}

// Calls f.template operator()<NT, MD, VB>() for the instantiated kernel of (nt, md, vb): a fixed
// V width for D = 64 / 128 and 2..4 bits (fixed_v_bits in decode.cu), else VB = 0.
template <typename F>
auto dispatch(uint32_t nt, uint32_t md, uint32_t vb, F&& f) {
  if (md == 16) return f.template operator()<1, 16, 0>();  // D = 256 serves GQA <= 8 only (mma_serves)
  auto by_vb = [&](auto ntc, auto mdc) {
    constexpr int NT = decltype(ntc)::value, MD = decltype(mdc)::value;
    if (vb == 2) return f.template operator()<NT, MD, 2>();
    if (vb == 3) return f.template operator()<NT, MD, 3>();
    if (vb == 4) return f.template operator()<NT, MD, 4>();
    return f.template operator()<NT, MD, 0>();
  };
  using I1 = std::integral_constant<int, 1>;
  using I2 = std::integral_constant<int, 2>;
  using M4 = std::integral_constant<int, 4>;
  using M8 = std::integral_constant<int, 8>;
  if (nt == 1) return md == 4 ? by_vb(I1{}, M4{}) : by_vb(I1{}, M8{});
  return md == 4 ? by_vb(I2{}, M4{}) : by_vb(I2{}, M8{});
}

struct LaunchFast {
  const KernelArgs& a;
  uint32_t n_kv, n_seqs, smem;
  cudaStream_t stream;
  template <int NT, int MD, int VB>
  int operator()() const {
    launch<NT, MD, VB>(a, n_kv, n_seqs, smem, stream);
    return 0;
  }
};

struct FastOccupancy {
  uint32_t smem;
  template <int NT, int MD, int VB>
  int operator()() const {
    return occupancy<NT, MD, VB>(smem);
  }
};

}  // namespace

void launch_decode_fast_prep(const KernelArgs& a, uint32_t nt, uint32_t n_kv, uint32_t n_seqs, cudaStream_t stream) {
  const uint32_t smem = 2 * a.D * 8 * nt * 4;  // q staging and q' (<= 32 KiB: no attribute needed)
  const dim3 grid(2 * n_kv, n_seqs);
  if (nt == 1 && a.D == 64) decode_fast_prep_kernel<1, 4><<<grid, kPrepThreads, smem, stream>>>(a);
  else if (nt == 1 && a.D == 128) decode_fast_prep_kernel<1, 8><<<grid, kPrepThreads, smem, stream>>>(a);
  else if (nt == 1) decode_fast_prep_kernel<1, 16><<<grid, kPrepThreads, smem, stream>>>(a);
  else if (a.D == 64) decode_fast_prep_kernel<2, 4><<<grid, kPrepThreads, smem, stream>>>(a);
  else decode_fast_prep_kernel<2, 8><<<grid, kPrepThreads, smem, stream>>>(a);  // D = 256 serves GQA <= 8 only
  check(cudaGetLastError(), "decode_fast_prep_kernel launch");
}

void launch_decode_fast(const KernelArgs& a, uint32_t nt, uint32_t md, uint32_t vb, uint32_t n_kv, uint32_t n_seqs,
                        uint32_t smem, cudaStream_t stream) {
  dispatch(nt, md, vb, LaunchFast{a, n_kv, n_seqs, smem, stream});
}

int fast_ctas_per_sm(uint32_t nt, uint32_t md, uint32_t vb, uint32_t smem) {
  return dispatch(nt, md, vb, FastOccupancy{smem});
}

}  // namespace kvbits::cuda::decode_detail
