// kvbits CUDA — shared-memory plan of the tensor-core decode kernel (decode_mma.cu), used by the
// kernel and by the host launcher.
#pragma once

#include <cstdint>

#include "cuda/decode.cuh"
#include "cuda/decode_plain.cuh"

namespace kvbits::cuda::decode_detail {

constexpr uint32_t kMmaWarps = 4;        // 128 threads
constexpr uint32_t kMmaWarpStages = 2;   // sub-tile buffers per warp
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
//   [0, off_qb)   kMmaWarps x kMmaWarpStages sub-tile buffers of `buffer` bytes; reused at the
//                 end for the warps' accumulators red [warps][8 nt][D] fp32, and by fp16 splits
//                 (plain_split's layout)
//   qB            per virtual K chunk, 8-query tile, query and lane slot: q' as an fp16 hi/lo pair
//   P / staging   per warp P [64][8 nt] hi/lo pairs; before the main loop the hp-ordered raw
//                 queries [D][8 nt] and q' [8 nt][D] fp32
//   wm, wl, wt    per warp and query: running max, sum, merge weight
struct MmaSmemPlan {
  uint32_t buffer, off_qb, off_pbuf, off_qstage, off_qrot, off_wm, off_wl, off_wt, total;
};

// chunks: the most virtual K chunks of any head of the layer (mma_chunks).
__host__ __device__ inline MmaSmemPlan mma_smem_plan(uint32_t buffer, uint32_t D, uint32_t nt, uint32_t chunks) {
  const uint32_t gqp = 8 * nt;
  MmaSmemPlan p{};
  p.buffer = buffer;
  uint32_t region = kMmaWarps * kMmaWarpStages * buffer;
  region = region > kMmaWarps * gqp * D * 4 ? region : kMmaWarps * gqp * D * 4;
  region = region > plain_smem_bytes(D, gqp) ? region : plain_smem_bytes(D, gqp);
  p.off_qb = round16(region);
  p.off_pbuf = p.off_qb + chunks * nt * 8 * 8 * 4;
  const uint32_t pbuf = kMmaWarps * 64 * gqp * 4, staging = 2 * D * gqp * 4;
  p.off_qstage = p.off_pbuf;
  p.off_qrot = p.off_pbuf + D * gqp * 4;
  p.off_wm = p.off_pbuf + (pbuf > staging ? pbuf : staging);
  p.off_wl = p.off_wm + kMmaWarps * gqp * 4;
  p.off_wt = p.off_wl + kMmaWarps * gqp * 4;
  p.total = round16(p.off_wt + kMmaWarps * gqp * 4);
  return p;
}

}  // namespace kvbits::cuda::decode_detail
