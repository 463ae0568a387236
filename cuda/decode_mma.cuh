// kvbits CUDA — shared-memory plan of the tensor-core decode kernel (decode_mma.cu), used by the
// kernel and by the host launcher.
#pragma once

#include <cstdint>

#include "cuda/decode.cuh"
#include "cuda/decode_plain.cuh"

namespace kvbits::cuda::decode_detail {

constexpr uint32_t kMmaWarps = 4;        // 128 threads
constexpr uint32_t kMmaWarpStages = 2;   // sub-tile buffers per warp (the fp32-grade kernel)
constexpr uint32_t kFastWarpStages = 1;  // the fast kernel: one buffer, K and V halves refilled apart
constexpr uint32_t kMmaLutWords = kDecodeMaxCentroids;  // every table of a head, hi/lo fp16 pairs
constexpr uint32_t kMmaSubPad = 16;      // bytes before each sub-tile (the 2-bit pre-shift reads them)

// Bytes of one warp's sub-tile buffer: the front pad and the largest sub-tile of the layer's heads.
__host__ __device__ inline uint32_t mma_buffer_bytes(uint32_t sub_tile_bytes) {
  return round16(kMmaSubPad + sub_tile_bytes);
}

// Virtual K chunks of 8 slots of one head (each group padded to a multiple of 8 dims).
__host__ __device__ inline uint32_t mma_chunks(const DecodeHead& hd) {
  uint32_t n = 0;
  for (uint32_t g = 0; g < hd.n_k_groups && g < kDecodeMaxGroups; ++g) n += (hd.k_groups[g].dims + 7) / 8;
  return n;
}

// Dynamic shared memory of one CTA, in bytes from the base:
//   [0, off_buf)  the fp16-operand kernel's centroid tables (see below; empty otherwise)
//   [off_buf, off_qb)  kMmaWarps x stages sub-tile buffers of `buffer` bytes; reused at the
//                 end for the warps' accumulators red [warps][8 nt][D] fp32, and by fp16 splits
//                 (plain_split's layout)
//   qB            per virtual K chunk, 8-query tile, query and lane slot: q' as an fp16 hi/lo pair
//                 (the fast kernel: its prepared block, kFastPrepHeader bytes of descriptors first)
//   P / staging   per warp P [64][8 nt] hi/lo pairs; before the main loop the hp-ordered raw
//                 queries [D][8 nt] and q' [8 nt][D] fp32
//   wm, wl, wt    per warp and query: running max, sum, merge weight
// The fp16-operand kernel's centroid tables (lut_words; the hi/lo kernel keeps its smaller
// tables in static shared memory) come first, at offset 0, and everything above moves up by
// off_buf: a table look-up then addresses shared memory with a compile-time base (one LDS with
// an immediate offset, no add per look-up).
constexpr uint32_t kFastPrepHeader = 512;  // fast kernel: group descriptors + V exponent before q'
constexpr uint32_t kFastPrepKev = 480;     // byte offset of the V table exponent in the header

struct MmaSmemPlan {
  uint32_t buffer, stages, off_buf, off_qb, off_pbuf, off_qstage, off_qrot, off_wm, off_wl, off_wt, total;
};

// chunks: the most virtual K chunks of any head of the layer (mma_chunks, or fast_chunks for
// the fp16-operand kernel); lut_words: its most table words (fast_lut_words), else 0.
// stages: sub-tile buffers per warp (the fast kernel keeps one, refilled in two halves: see
// WarpTiles).
__host__ __device__ inline MmaSmemPlan mma_smem_plan(uint32_t buffer, uint32_t D, uint32_t nt, uint32_t chunks,
                                                     uint32_t lut_words = 0, uint32_t stages = kMmaWarpStages) {
  const uint32_t gqp = 8 * nt;
  MmaSmemPlan p{};
  p.buffer = buffer;
  p.stages = stages;
  p.off_buf = round16(lut_words * 4);
  uint32_t region = kMmaWarps * stages * buffer;
  region = region > kMmaWarps * gqp * D * 4 ? region : kMmaWarps * gqp * D * 4;
  region = region > plain_smem_bytes(D, gqp) ? region : plain_smem_bytes(D, gqp);
  p.off_qb = p.off_buf + round16(region);
  p.off_pbuf = p.off_qb + (lut_words ? kFastPrepHeader : 0) + chunks * nt * 8 * 8 * 4;
  const uint32_t pbuf = kMmaWarps * 64 * gqp * 4, staging = 2 * D * gqp * 4;
  p.off_qstage = p.off_pbuf;
  p.off_qrot = p.off_pbuf + D * gqp * 4;
  p.off_wm = p.off_pbuf + (pbuf > staging ? pbuf : staging);
  p.off_wl = p.off_wm + kMmaWarps * gqp * 4;
  p.off_wt = p.off_wl + kMmaWarps * gqp * 4;
  p.total = round16(p.off_wt + kMmaWarps * gqp * 4);
  return p;
}

// ---- The fp16-operand kernel (decode_fast.cu): K chunks of 16 slots, and centroid tables that
// give a whole A register (two fp16 values) per look-up.
constexpr uint32_t kFastPairMaxBits = 5;  // wider codes use single-value tables (4^b would not fit)

// A K group of `dims` slots in the fp16-operand kernel: 16-slot chunks (m16n8k16), then at most
// one 8-slot chunk (m16n8k8) where the rest is 1..8 slots: dims padded to 16 n16 + 8 n8 with the
// least padding (a group of 18 dims takes 24 slots, not 32).
__host__ __device__ inline uint32_t fast_full_chunks(uint32_t dims) { return dims / 16 + (dims % 16 > 8 ? 1u : 0u); }
__host__ __device__ inline uint32_t fast_tail_chunk(uint32_t dims) { return dims % 16 != 0 && dims % 16 <= 8 ? 1u : 0u; }
// Virtual chunks of a group: its full and tail chunks, each one slot of the B-operand array.
__host__ __device__ inline uint32_t fast_group_chunks(uint32_t dims) { return fast_full_chunks(dims) + fast_tail_chunk(dims); }

// Virtual K chunks of one head.
__host__ __device__ inline uint32_t fast_chunks(const DecodeHead& hd) {
  uint32_t n = 0;
  for (uint32_t g = 0; g < hd.n_k_groups && g < kDecodeMaxGroups; ++g) n += fast_group_chunks(hd.k_groups[g].dims);
  return n;
}

// Words of the table of a `bits`-wide code: a pair table (entry c0 | c1 << b holds
// (half(C[c0]), half(C[c1]))) up to kFastPairMaxBits, else one fp16 value per word (low half).
__host__ __device__ inline uint32_t fast_table_words(uint32_t bits) {
  return bits <= kFastPairMaxBits ? 1u << (2 * bits) : 1u << bits;
}

// Bits of table tb of a head: K group tb, or V for tb == n_k_groups.
__host__ __device__ inline uint32_t fast_table_bits(const DecodeHead& hd, uint32_t tb) {
  return tb < hd.n_k_groups ? hd.k_groups[tb].bits : hd.v_bits;
}

// Word offset of table tb: tables sorted by size, largest first (lower index first on a tie), so
// every table starts on a multiple of its own size and (index << 2) | (offset << 2) addresses it.
__host__ __device__ inline uint32_t fast_lut_offset(const DecodeHead& hd, uint32_t tb) {
  const uint32_t n = fast_table_words(fast_table_bits(hd, tb));
  uint32_t off = 0;
  for (uint32_t u = 0; u <= hd.n_k_groups && u <= kDecodeMaxGroups; ++u) {
    const uint32_t m = fast_table_words(fast_table_bits(hd, u));
    if (m > n || (m == n && u < tb)) off += m;
  }
  return off;
}

__host__ __device__ inline uint32_t fast_lut_words(const DecodeHead& hd) {
  uint32_t n = 0;
  for (uint32_t u = 0; u <= hd.n_k_groups && u <= kDecodeMaxGroups; ++u) n += fast_table_words(fast_table_bits(hd, u));
  return (n + 3) & ~3u;  // copied in 16-byte pieces
}

// Words of one prepared block (decode_fast.cu): the header and the K B operands of `chunks`
// virtual chunks, a multiple of four.
__host__ __device__ inline uint32_t fast_prep_words(uint32_t chunks, uint32_t nt) {
  return kFastPrepHeader / 4 + chunks * nt * 64;
}

}  // namespace kvbits::cuda::decode_detail
