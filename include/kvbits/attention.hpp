// kvbits — attention on the packed cache (CPU reference backend; decode also on CUDA caches).
//
// The query is rotated once into each key group's basis (q' = R q, tq_mse.hpp), so keys are
// never un-rotated; V is accumulated in its rotated basis and un-rotated once per output.
// fp16 sink/window tokens join the same online softmax. Accumulation is fp32 per token, with
// the softmax in fp32 (max-subtracted, natural exp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvbits/cache.hpp"

namespace kvbits {

// How the CUDA backend forms its products; the CPU backend computes in fp32 either way.
enum class Precision : uint32_t {
  fp16 = 0,  // default: fp16 tensor-core operands (q, centroids, P), fp32 accumulation — the
             // precision of an fp16 attention kernel (about 1e-3 relative)
  fp32 = 1,  // fp32-grade products (decode: hi/lo split operands, about 1e-6; extend: unsupported)
};

struct AttentionParams {
  float scale = 0.0f;      // softmax scale; 0 = 1/sqrt(head_dim)
  Precision precision = Precision::fp16;
  void* stream = nullptr;  // CUDA caches: the cudaStream_t to run on (null = default stream)
};

// Decode: one query token per sequence over everything the cache holds for it (the query's
// own token is expected to have been appended first).
//   q   [n_seqs, n_q_heads, D] in q_dtype (post-RoPE; f32, f16 or bf16)
//   out [n_seqs, n_q_heads, D] fp32
//   lse [n_seqs, n_q_heads] fp32 natural-log sum-exp of the scaled logits, may be null
// Query head qh reads KV head qh / (n_q_heads / n_kv_heads). n_seqs == 0 does nothing.
// Errors (nothing is written on error; docs/attention.md):
//   null_pointer      seqs, q or out null (n_seqs > 0)
//   not_found         a sequence the cache does not hold
//   invalid_argument  layer out of range, unknown dtype, scale not finite or < 0, a sequence
//                     with no tokens in the layer, a non-finite query value
//   unsupported       (CUDA caches) what the GPU decode kernel does not serve yet
//                     (docs/gpu-decode.md), or host tensors while `stream` is capturing
//   out_of_memory     scratch could not be allocated
//   device_error      (CUDA caches) the CUDA runtime failed, with its message
// Thread safety: reads the cache only (like its const members); never concurrent with append.
// Results are identical for any thread count and equal attention_extend with q_len = 1.
// CUDA caches: q, out and lse may be device or host memory (host tensors are staged through
// the context and the call then waits for the result); seqs is host memory. With device
// tensors the call only enqueues work on params.stream, allocates nothing and never waits, so
// it can be captured in a CUDA graph; q's values are then not checked on the host (a
// non-finite query gives non-finite outputs). Results match the CPU backend to ~1e-6 relative
// (different summation order), not bit for bit.
void attention_decode(const Cache& cache, uint32_t layer, const uint64_t* seqs, size_t n_seqs, const void* q,
                      DType q_dtype, float* out, float* lse, const AttentionParams& params);

// Extend: q_len[i] query tokens for sequence i, the last q_len[i] tokens the cache holds for
// it (appended already), causal: the query at position p sees tokens [0, p].
//   q [sum q_len, n_q_heads, D], out likewise fp32, lse [sum q_len, n_q_heads] or null.
// Errors as attention_decode, plus null_pointer for a null q_len and invalid_argument for
// q_len[i] == 0 or q_len[i] > the sequence's length in the layer. CUDA caches: unsupported
// until the GPU extend kernel lands.
void attention_extend(const Cache& cache, uint32_t layer, const uint64_t* seqs, const uint32_t* q_len,
                      size_t n_seqs, const void* q, DType q_dtype, float* out, float* lse,
                      const AttentionParams& params);

}  // namespace kvbits
