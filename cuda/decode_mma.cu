// The tensor-core decode kernel (kDecodeVariantMma; docs/gpu-decode.md, "Tensor-core kernel").
//
// Grid (split, KV head, sequence), 4 warps. A packed split owns whole quads of 64-token sub-tiles;
// warp w takes sub-tiles w, w + 4, ... of them and runs its own pipeline (two cp.async buffers),
// its own online softmax and its own accumulators, so warps never wait for each other inside
// the loop. The CTA merges its four warps at the end (fixed order) and writes one partial.
//
// Both dots run on mma.sync.m16n8k16 (fp16 in, fp32 accumulate). An operand x that must keep
// fp32-grade precision is split into x_hi = half(x), x_lo = half(x - x_hi) after scaling it by a
// power of two into [2^14, 2^15) (no fp16 overflow, no underflow of the low part), and the
// k dimension pairs (hi, lo) of one element: an A register holds (a_hi, a_lo) of one element, B
// holds (b_hi, b_hi) for one MMA and (b_lo, 0) for a second, so two MMAs give
// a_hi b_hi + a_lo b_hi + a_hi b_lo (error ~2^-22 relative per product).
//   K phase  C[token][query] = sum over slots of centroid(code) * q'. A is looked up in a
//            per-head table of (hi, lo) centroid pairs, scaled per group; each group is padded
//            to 8-slot chunks (zero q' on the padding) and accumulated on its own, then scaled
//            by the token's fp16 group scale. A thread takes two adjacent slots of its rows per
//            chunk from one 32-bit window of the bit stream.
//   softmax  per warp and query: max over the warp's 64 rows, p = exp(s - m), running sum.
//   V phase  acc[dim][query] += centroid(code) * p'' with p'' = p * v_scale * 2^z (z per step so
//            that p'' < 2^15): A = V codes looked up in the V table, B = p'' hi/lo from a small
//            per-warp transpose buffer. acc stays in V's rotated basis; the merge un-rotates.
// The group and V scales, the softmax scale and the power-of-two factors are applied in fp32
// outside the MMAs.
#include <string>

#include "cuda/decode_mma_util.cuh"
#include "cuda/decode_plain.cuh"

namespace kvbits::cuda::decode_detail {

namespace {

// One K group as the kernel reads it.
struct MmaGroup {
  uint32_t bits, m4, lut_off;  // width, (2^b - 1) << 2, byte offset of its table in the LUT
  uint32_t n_chunks, v0;       // 8-slot chunks, first virtual chunk
  uint32_t bit_off;            // byte_offset * 8 + front pad bits - 2 (the pre-shift)
  uint32_t pw;                 // chunks per 32-bit window: floor(floor(30 / b) / 2)
  uint32_t first, dims;
  float qf;                    // 2^(query exponent): q' * qf lies below 2^15
  float f;                     // softmax scale * 2^-(table exponent + query exponent)
};

// Byte offset of a table in the LUT: tables sorted by size, largest first (K before V on a tie),
// so every table starts on a multiple of its own size and (code << 2) | offset addresses it.
__device__ __forceinline__ uint32_t lut_offset(const DecodeHead& hd, uint32_t bits, bool is_v) {
  uint32_t off = 0;
  for (uint32_t g = 0; g < hd.n_k_groups; ++g) {
    const uint32_t b = hd.k_groups[g].bits;
    if (b > bits || (is_v && b == bits)) off += 1u << b;
  }
  if (!is_v && hd.v_bits > bits) off += 1u << hd.v_bits;
  return off * 4;
}


template <int NT, int MD>
__global__ void __launch_bounds__(kCtaThreads, (NT == 1 && MD <= 8) ? 3 : 2) decode_mma_kernel(KernelArgs a) {
  constexpr uint32_t GQP = 8 * NT;
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ __align__(16) uint32_t hd_words[kHeadWords];
  __shared__ __align__(16) uint32_t lut[kMmaLutWords];
  __shared__ MmaGroup groups[kDecodeMaxGroups];
  __shared__ float table_max[kDecodeMaxGroups + 1];
  const DecodeHead& hd = *reinterpret_cast<const DecodeHead*>(hd_words);
  const uint32_t split = blockIdx.x, h = blockIdx.y, seq = blockIdx.z, tid = threadIdx.x;
  const uint32_t lane = tid & 31u, warp = tid >> 5, g8 = lane >> 2, t4 = lane & 3u;
  const uint32_t D = a.D;  // 16 * MD
  load_head(hd_words, a.heads + h);
  const SeqInfo si = seq_info(a, seq);
  __syncthreads();
  if (split >= a.packed_splits) {
    const uint32_t u0 = (split - a.packed_splits) * a.fp16_chunk;
    plain_split<GQP>(a, hd, si, seq, h, split, false, u0, min(u0 + a.fp16_chunk, a.sink + a.window), smem);
    return;
  }
  const MmaSmemPlan sp = mma_smem_plan(a.stage_stride, D, NT, a.mma_chunks);
  uint32_t* qb = reinterpret_cast<uint32_t*>(smem + sp.off_qb);
  float* qrot = reinterpret_cast<float*>(smem + sp.off_qrot);  // [GQP][D]

  // ---- This warp's share of the split's sub-tiles; start its pipeline.
  const WarpTiles wt = start_warp_tiles(a, hd, sp, smem, si.n_packed, seq, split);
  const SubTileLayout& st = wt.st;

  // ---- Prologue, while the first sub-tiles load. Warp w owns tables w, w + 4, ...: the LUT of
  // (hi, lo) centroid pairs, each table scaled by its own power of two. Then q' [GQP][D] (its
  // barriers publish the LUT), the group descriptors and the per-chunk B operands.
  const uint32_t G = hd.n_k_groups;
  for (uint32_t tb = warp; tb <= G; tb += kMmaWarps) {  // table tb: K group tb, or V (tb == G)
    const uint32_t bits = tb < G ? hd.k_groups[tb].bits : hd.v_bits;
    const float* cent =
        a.centroids + hd.centroid_base + (tb < G ? hd.k_groups[tb].centroid_offset : hd.v_centroid_offset);
    float mc = 0.0f;
    for (uint32_t k = lane; k < (1u << bits); k += 32) mc = fmaxf(mc, fabsf(cent[k]));
    mc = warp_max(mc);
    const uint32_t off = lut_offset(hd, bits, tb == G) / 4;
    const float f = exp2i(prescale(mc));
    for (uint32_t k = lane; k < (1u << bits); k += 32) lut[off + k] = split_hl(cent[k] * f);
    if (lane == 0) table_max[tb] = mc;
  }
  rotated_queries<GQP>(a, hd, seq, h, reinterpret_cast<float*>(smem + sp.off_qstage), qrot, 1, D);
  for (uint32_t g = warp; g < G; g += kMmaWarps) {
    const DecodeGroup& gr = hd.k_groups[g];
    float mq = 0.0f;
    for (uint32_t k = lane; k < GQP * gr.dims; k += 32)
      mq = fmaxf(mq, fabsf(qrot[(k / gr.dims) * D + gr.first_slot + k % gr.dims]));
    mq = warp_max(mq);
    if (lane == 0) {
      MmaGroup m;
      m.bits = gr.bits;
      m.m4 = ((1u << gr.bits) - 1u) << 2;
      m.lut_off = lut_offset(hd, gr.bits, false);
      m.n_chunks = (gr.dims + 7) / 8;
      m.v0 = 0;
      for (uint32_t q = 0; q < g; ++q) m.v0 += (hd.k_groups[q].dims + 7) / 8;
      m.bit_off = gr.byte_offset * 8 + kMmaSubPad * 8 - 2;
      m.pw = (30 / gr.bits) / 2;
      m.first = gr.first_slot;
      m.dims = gr.dims;
      m.qf = exp2i(prescale(mq));
      m.f = a.scale * exp2i(-(prescale(table_max[g]) + prescale(mq)));
      groups[g] = m;
    }
  }
  __syncthreads();
  // qb[((v * NT + nt) * 8 + i) * 8 + 2 t + hh]: lane slot t + 4 hh of virtual chunk v for query
  // 8 nt + i, i.e. element 2 * n_chunks * t + 2 c + hh of the chunk's group (c = v - v0), zero
  // past the group's dims.
  const uint32_t n_v = mma_chunks(hd);
  for (uint32_t idx = tid; idx < n_v * NT * 64; idx += kCtaThreads) {
    const uint32_t v = idx / (NT * 64), q = (idx / 8) % GQP, w = idx % 8;
    uint32_t g = 0;
    while (g + 1 < G && v >= groups[g + 1].v0) ++g;
    const uint32_t e = 2 * groups[g].n_chunks * (w >> 1) + 2 * (v - groups[g].v0) + (w & 1u);
    qb[idx] = e < groups[g].dims ? split_hl(qrot[q * D + groups[g].first + e] * groups[g].qf) : 0u;
  }
  const uint32_t vb = hd.v_bits, vm4 = ((1u << vb) - 1u) << 2, vlut = lut_offset(hd, vb, true);
  const bool v_wide = vb > 7;  // four codes no longer fit one pre-shifted 32-bit window
  const int kev = prescale(table_max[G]);
  __syncthreads();

  // ---- Main loop: one 64-row sub-tile per warp step.
  float acc[MD][NT][4], mrun[NT][2], lrun[NT][2];
  zero_frags(acc);
  softmax_init(mrun, lrun);
  int zcur = 0;
  uint32_t* pb = reinterpret_cast<uint32_t*>(smem + sp.off_pbuf) + warp * kSubRows * GQP;  // [64][GQP]
  const uint32_t kc = hd.k_code_bytes, ks2 = 2 * G, vc = hd.v_code_bytes;

#pragma unroll 1
  for (uint32_t it = 0; it < wt.n_my; ++it) {
    cp_async_wait<kMmaWarpStages - 1>();
    __syncwarp();  // the other lanes' copies of this sub-tile are visible
    uint8_t* buf = wt.wbuf + (it % kMmaWarpStages) * sp.buffer;
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
      const MmaGroup gi = groups[g];
      float c[kMt][NT][4];
      zero_frags(c);
      // This thread's run of the group: elements [2 n t4, 2 n (t4 + 1)), two per chunk.
      const uint32_t run = gi.bit_off + 2 * gi.n_chunks * t4 * gi.bits;
      uint32_t win[kMt][2];
      uint32_t cw = gi.pw;
#pragma unroll 1
      for (uint32_t cc = 0; cc < gi.n_chunks; ++cc) {
        if (cw == gi.pw) {  // warp-uniform
#pragma unroll
          for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) win[mt][hh] = bits32(words, kbit[mt][hh] + run + 2 * cc * gi.bits);
          cw = 0;
        }
        const uint32_t sh0 = cw * 2 * gi.bits, sh1 = sh0 + gi.bits;
        ++cw;
        uint32_t b1[NT][2], b2[NT][2];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const uint2 x = *reinterpret_cast<const uint2*>(qb + (((gi.v0 + cc) * NT + nt) * 8 + g8) * 8 + 2 * t4);
          b1[nt][0] = dup_lo(x.x), b1[nt][1] = dup_lo(x.y);
          b2[nt][0] = x.x >> 16, b2[nt][1] = x.y >> 16;
        }
#pragma unroll
        for (int mt = 0; mt < kMt; ++mt) {
          const uint32_t a0 = lut_word(lut, ((win[mt][0] >> sh0) & gi.m4) | gi.lut_off);
          const uint32_t a1 = lut_word(lut, ((win[mt][1] >> sh0) & gi.m4) | gi.lut_off);
          const uint32_t a2 = lut_word(lut, ((win[mt][0] >> sh1) & gi.m4) | gi.lut_off);
          const uint32_t a3 = lut_word(lut, ((win[mt][1] >> sh1) & gi.m4) | gi.lut_off);
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            mma16816(c[mt][nt], a0, a1, a2, a3, b1[nt][0], b1[nt][1]);
            mma16816(c[mt][nt], a0, a1, a2, a3, b2[nt][0], b2[nt][1]);
          }
        }
      }
      add_group_scores(s, c, sub, st, ks2, g, gi.f);
    }

    // ---- softmax over the warp's rows; this thread's queries are 8 nt + 2 t4 + j.
    float corr[NT][2], sv[kMt][2];
    softmax_rescale<NT>(s, valid, mrun, lrun, corr);
    const int z = v_scales_exponent(sub, st, valid, sv);
    const float pz = exp2i(z);
#pragma unroll
    for (int mt = 0; mt < kMt; ++mt)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const uint32_t r = 16 * mt + 8 * hh + g8;
        const float svz = sv[mt][hh] * pz;
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          const float p0 = expf(s[mt][nt][2 * hh] - mrun[nt][0]);
          const float p1 = expf(s[mt][nt][2 * hh + 1] - mrun[nt][1]);
          lrun[nt][0] += p0;
          lrun[nt][1] += p1;
          *reinterpret_cast<uint2*>(pb + r * GQP + 8 * nt + 2 * t4) = make_uint2(split_hl(p0 * svz), split_hl(p1 * svz));
        }
      }
    __syncwarp();  // P visible to the whole warp
    rescale_acc(acc, corr, exp2i(z - zcur));
    zcur = z;

    // ---- V phase: 8 k-steps of 8 rows; this thread's rows 8 ks + t4 (+ 4), dims 2 MD g8 ...
#pragma unroll 1
    for (uint32_t ks = 0; ks < 8; ++ks) {
      const uint32_t r0 = 8 * ks + t4, r1 = r0 + 4;
      uint32_t b1[NT][2], b2[NT][2];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const uint32_t y0 = pb[r0 * GQP + 8 * nt + g8], y1 = pb[r1 * GQP + 8 * nt + g8];
        b1[nt][0] = dup_lo(y0), b1[nt][1] = dup_lo(y1);
        b2[nt][0] = y0 >> 16, b2[nt][1] = y1 >> 16;
      }
      const uint32_t run = 2 * MD * g8 * vb;
      const uint32_t vb0 = (kMmaSubPad + st.off_vc + row_off(st, r0, st.vc_seg, vc)) * 8 - 2 + run;
      const uint32_t vb1 = (kMmaSubPad + st.off_vc + row_off(st, r1, st.vc_seg, vc)) * 8 - 2 + run;
#pragma unroll
      for (int mp = 0; mp < MD / 2; ++mp) {
        const uint32_t w0 = bits32(words, vb0 + 4 * mp * vb), w1 = bits32(words, vb1 + 4 * mp * vb);
        const uint32_t w0b = v_wide ? bits32(words, vb0 + (4 * mp + 2) * vb) : w0 >> (2 * vb);
        const uint32_t w1b = v_wide ? bits32(words, vb1 + (4 * mp + 2) * vb) : w1 >> (2 * vb);
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          const uint32_t x0 = hf ? w0b : w0, x1 = hf ? w1b : w1;
          const uint32_t a0 = lut_word(lut, (x0 & vm4) | vlut);
          const uint32_t a1 = lut_word(lut, ((x0 >> vb) & vm4) | vlut);
          const uint32_t a2 = lut_word(lut, (x1 & vm4) | vlut);
          const uint32_t a3 = lut_word(lut, ((x1 >> vb) & vm4) | vlut);
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            mma16816(acc[2 * mp + hf][nt], a0, a1, a2, a3, b1[nt][0], b1[nt][1]);
            mma16816(acc[2 * mp + hf][nt], a0, a1, a2, a3, b2[nt][0], b2[nt][1]);
          }
        }
      }
    }
    __syncwarp();  // every lane is done with this buffer and with P
    wt.issue_next(a, hd, buf, it);
  }

  mma_write_partial<NT, MD>(a, sp, smem, acc, mrun, lrun, exp2i(-(zcur + kev)), seq, h, split);
}

template <int NT, int MD>
void launch(const KernelArgs& a, uint32_t n_kv, uint32_t n_seqs, uint32_t smem, cudaStream_t stream) {
  launch_mma_kernel<decode_mma_kernel<NT, MD>>(a, n_kv, n_seqs, smem, stream,
                                               "decode_mma_kernel<" + std::to_string(NT) + "," + std::to_string(MD) + ">");
}

template <int NT, int MD>
int occupancy(uint32_t smem) {
  return mma_kernel_occupancy<decode_mma_kernel<NT, MD>>(smem, "decode_mma_kernel");
}

}  // namespace

void launch_decode_mma(const KernelArgs& a, uint32_t nt, uint32_t md, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                       cudaStream_t stream) {
  if (nt == 1 && md == 4) launch<1, 4>(a, n_kv, n_seqs, smem, stream);
  else if (nt == 1 && md == 8) launch<1, 8>(a, n_kv, n_seqs, smem, stream);
  else if (nt == 1) launch<1, 16>(a, n_kv, n_seqs, smem, stream);
  else if (md == 4) launch<2, 4>(a, n_kv, n_seqs, smem, stream);
  else launch<2, 8>(a, n_kv, n_seqs, smem, stream);
}

int mma_ctas_per_sm(uint32_t nt, uint32_t md, uint32_t smem) {
  if (nt == 1 && md == 4) return occupancy<1, 4>(smem);
  if (nt == 1 && md == 8) return occupancy<1, 8>(smem);
  if (nt == 1) return occupancy<1, 16>(smem);
  if (md == 4) return occupancy<2, 4>(smem);
  return occupancy<2, 8>(smem);
}

}  // namespace kvbits::cuda::decode_detail
