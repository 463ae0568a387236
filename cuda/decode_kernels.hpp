// kvbits CUDA — what the decode launcher (decode.cu) hands to its kernels; internal to cuda/.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/decode.hpp"

namespace kvbits::cuda::decode_detail {

constexpr uint32_t kMaxPackedSplits = 1024;
constexpr uint32_t kMaxFp16Splits = 1024;
constexpr uint32_t kFp16SplitRows = 128;  // sink/ring rows per fp16 split: one 128-row tile (fewer when capped)

// Everything a decode or merge kernel reads, by value. Splits [0, packed_splits) of a
// (sequence, KV head) read its pages; splits [packed_splits, splits) read its fp16 sink and ring
// rows, fp16_chunk rows each (row u < S: sink row u, else ring row u - S).
struct KernelArgs {
  const DecodeHead* heads;
  const float* centroids;
  const uint32_t* page_table;
  const uint32_t* table_offset;
  const uint32_t* seq_len;
  const uint32_t* seq_qend;  // null: qend = len
  const uint16_t* const* fp16_blocks;
  const float* q_rot;  // read when q is null
  const void* q;
  float* ws_acc;  // [n_seqs * n_q][splits][D]
  float* ws_ml;   // [n_seqs * n_q][splits][2]: running max, sum of exp
  uint32_t* ws_lut;   // fast kernel: [n_kv][lut_words] centroid tables (decode_fast_prep)
  uint32_t* ws_prep;  // fast kernel: [n_seqs][n_kv][prep_words] prepared blocks (decode_fast_prep)
  float* out;
  float* lse;
  float scale;
  uint32_t q_dtype;
  uint32_t n_q, n_kv, gqa, D, page_size;
  uint32_t sink, window;
  uint32_t packed_splits, splits, fp16_chunk;
  uint32_t fp16_layer;
  uint32_t stage_stride, stages;  // scalar kernel: bytes per stage and stage count; mma kernel: bytes per warp buffer
  uint32_t mma_chunks;            // tensor-core kernels: most K chunks of any head (sizes the q' operands)
  uint32_t lut_words;             // fast kernel: most centroid-table words of any head
  uint32_t prep_words;            // fast kernel: words of one prepared block
};

// Launchers (no synchronisation; check the launch error). gq: query heads per KV head rounded up
// to 1/2/4/8/16; nt: 8-query tiles (1 or 2); md: D / 16 (4, 8 or 16).
void launch_decode_scalar(const KernelArgs& a, uint32_t gq, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                          cudaStream_t stream);
void launch_decode_mma(const KernelArgs& a, uint32_t nt, uint32_t md, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                       cudaStream_t stream);
void launch_decode_fast_prep(const KernelArgs& a, uint32_t nt, uint32_t n_kv, uint32_t n_seqs, cudaStream_t stream);
void launch_decode_fast(const KernelArgs& a, uint32_t nt, uint32_t md, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                        cudaStream_t stream);
void launch_decode_fp16_layer(const KernelArgs& a, uint32_t gq, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                              cudaStream_t stream);
void launch_merge(const KernelArgs& a, uint32_t n_seqs, cudaStream_t stream);

// Resident CTAs per SM of the tensor-core kernel with `smem` dynamic bytes (occupancy query).
int mma_ctas_per_sm(uint32_t nt, uint32_t md, uint32_t smem);
int fast_ctas_per_sm(uint32_t nt, uint32_t md, uint32_t smem);

void check(cudaError_t e, const char* what);

}  // namespace kvbits::cuda::decode_detail
