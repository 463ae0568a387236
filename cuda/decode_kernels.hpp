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
  uint32_t pdl_decode;            // host only: the fast kernel starts while its prep launch runs (small grids)
  uint32_t merge_wide;            // host only: the merge launch's shape for few rows (decode_merge.cu)
  uint32_t pdl;                   // host only: programmatic dependent launch allowed (sm_90+): the merge
                                  // starts before the decode launch ends (prefetching R_v) and waits
                                  // (griddepcontrol.wait) before reading the partials
};

// Launchers (no synchronisation; check the launch error). gq: query heads per KV head rounded up
// to 1/2/4/8/16; nt: 8-query tiles (1 or 2); md: D / 16 (4, 8 or 16).
void launch_decode_scalar(const KernelArgs& a, uint32_t gq, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                          cudaStream_t stream);
void launch_decode_mma(const KernelArgs& a, uint32_t nt, uint32_t md, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                       cudaStream_t stream);
void launch_decode_fast_prep(const KernelArgs& a, uint32_t nt, uint32_t n_kv, uint32_t n_seqs, cudaStream_t stream);
// vb: the layer's V width when every head has the same one (2..4 bits), for the kernel compiled
// for it at D = 64 / 128 (fewer instructions per V code); 0: read per head at run time.
void launch_decode_fast(const KernelArgs& a, uint32_t nt, uint32_t md, uint32_t vb, uint32_t n_kv, uint32_t n_seqs,
                        uint32_t smem, cudaStream_t stream);
void launch_decode_fp16_layer(const KernelArgs& a, uint32_t gq, uint32_t n_kv, uint32_t n_seqs, uint32_t smem,
                              cudaStream_t stream);
void launch_merge(const KernelArgs& a, uint32_t n_seqs, cudaStream_t stream);

// Resident CTAs per SM of the tensor-core kernel with `smem` dynamic bytes (occupancy query).
int mma_ctas_per_sm(uint32_t nt, uint32_t md, uint32_t smem);
int fast_ctas_per_sm(uint32_t nt, uint32_t md, uint32_t vb, uint32_t smem);

void check(cudaError_t e, const char* what);

// Programmatic dependent launch (sm_90+; no-ops elsewhere and for launches without the attribute):
// pdl_trigger lets the next launch of the stream start its blocks; pdl_wait blocks until the
// previous launch has finished and its memory is visible.
#ifdef __CUDACC__
__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Launches kernel<<<grid, block, smem, stream>>>(a), with programmatic stream serialization when
// a.pdl is set.
template <typename Kernel>
cudaError_t launch_pdl(Kernel kernel, dim3 grid, dim3 block, uint32_t smem, cudaStream_t stream, const KernelArgs& a) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = a.pdl ? 1 : 0;
  return cudaLaunchKernelEx(&cfg, kernel, a);
}
#endif

}  // namespace kvbits::cuda::decode_detail
