// kvbits CUDA — causal extend (chunked prefill) attention on the packed paged cache, one layer
// per launch sequence (docs/gpu-extend.md).
//
// Sequence s brings q_len[s] queries, the last q_len[s] tokens the cache holds for it (appended
// first): query i sits at position len - q_len + i and sees tokens [0, that position]. This is
// what kvbits::attention_extend computes on the CPU (docs/attention.md), with the dot products
// on tensor cores: q and the dequantized K/V rows are rounded to fp16, products are accumulated
// in fp32 (see "Accuracy" in docs/gpu-extend.md for the bound the tests hold it to).
//
// The launches (a query pre-pass, the attention kernel, and a merge when the context is split)
// never allocate and never synchronise: the caller passes a workspace of
// extend_workspace_bytes(p) bytes, and the whole sequence can be captured in a CUDA graph.
#pragma once

#include <cstddef>
#include <cstdint>

#include "cuda/decode.hpp"

namespace kvbits::cuda {

struct ExtendParams {
  // Everything decode reads, with these differences:
  //  - base.q (unrotated, [total_q][n_q_heads][D] in base.q_dtype) is required and base.q_rot
  //    must be null: the pre-pass rotates the queries itself with the K tables below;
  //  - base.out is [total_q][n_q_heads][D] fp32, base.lse [total_q][n_q_heads] or null;
  //  - base.splits forces the number of context splits per query block (tests), 0 = automatic;
  //  - base.max_len (host) bounds seq_len and fixes the split count, as for decode.
  // fp16 sink / window tokens and fp16 layers are served (base.seq_qend, base.fp16_blocks,
  // base.fp16_layer); fp16 rows (blocks and fp16-layer pages) must be 16-byte aligned, out
  // 8-byte aligned, the workspace 256-byte aligned.
  DecodeParams base;
  const uint32_t* q_len = nullptr;     // device [n_seqs]: queries of sequence s (0 allowed)
  const uint32_t* q_offset = nullptr;  // device [n_seqs]: first query row of s = sum of q_len[< s]
  uint32_t total_q = 0;                // host: sum of q_len (rows of q, out, lse)
  uint32_t max_q_len = 0;              // host: an upper bound of q_len[s]
  // K rotations of a packed layer (ExtendQueryTables fills them; null for an fp16 layer):
  // head h's group rotations R_g (dims_g x dims_g row-major fp32, groups in order) start at
  // k_rotations + k_rotation_offset[h]; k_slot_dim[h * D + s] is the original dim of hp slot s.
  const float* k_rotations = nullptr;          // device
  const uint32_t* k_rotation_offset = nullptr;  // device [n_kv_heads]
  const uint32_t* k_slot_dim = nullptr;         // device [n_kv_heads][D]
  // Warps per attention CTA: 4 (64 query rows) or 8 (128 rows, each dequantized tile shared by
  // twice the rows); 0 = automatic (8 when max_q_len * GQA >= 512). Tests and benchmarks force it.
  uint32_t warps = 0;
};

// Context splits per (query block, KV head) for the packed/page tokens: enough CTAs to fill the
// GPU, at least 512 tokens of max_len per split. Depends only on host fields of p.
uint32_t extend_splits(const ExtendParams& p);
// Workspace: fp16 copies of the queries (original and rotated basis), the block list and, when
// more than one split exists (context splits + one split for fp16 sink/window tokens), the
// partial outputs: 2 * total_q * n_q * D * 2 + 4 * (n_seqs + 1) + splits * total_q * n_q * (D + 1)
// * 4 bytes, each part rounded up to 256 bytes. Depends only on host fields of p.
size_t extend_workspace_bytes(const ExtendParams& p);

// Enqueues the extend launches on `stream` (a cudaStream_t; null = default stream). Errors, all
// raised before anything is enqueued: null_pointer (a required pointer), invalid_argument (shape
// fields, head descriptors, q_dtype, q_rot set, max_q_len outside [1, total_q], warps not 0/4/8,
// misaligned out / workspace / pool), unsupported (D > 256, GQA
// > 16, page size neither dividing nor a multiple of 64, shared memory too small), device_error.
// n_seqs == 0 or total_q == 0 does nothing. Every row of out (and lse) is written; a query that
// sees no token (q_len[s] > seq_len[s]) gets out = 0, lse = -inf.
void extend_attention(const ExtendParams& p, void* stream);

}  // namespace kvbits::cuda
