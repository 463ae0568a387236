// Validation of an attention call and the per-sequence facts the work items need. Every
// check runs before any output is written.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "attention/cache_sources.hpp"
#include "kvbits/attention.hpp"

namespace kvbits::attn {

struct SeqWork {
  uint32_t len = 0;        // tokens the sequence holds in the layer
  uint32_t q_len = 0;      // its queries: positions len - q_len .. len - 1
  size_t first_row = 0;    // its first query row in q / out / lse
  SeqLayerSources sources;
};

struct Request {
  const char* op = "";     // "attention_decode" / "attention_extend", for messages
  uint32_t layer = 0;
  float scale = 0.0f;      // resolved (never 0)
  size_t total_rows = 0;   // sum of q_len
  std::vector<SeqWork> seqs;
};

// decode: one query per sequence (q_len is ignored). Throws Error(invalid_argument |
// null_pointer | not_found | unsupported); out is only checked for null here. On a CUDA cache
// the query values are not read and `sources` stay empty (the device backend takes over).
Request validate_request(const char* op, bool decode, const Cache& cache, uint32_t layer, const uint64_t* seqs,
                         const uint32_t* q_len, size_t n_seqs, const void* q, DType q_dtype, const float* out,
                         const AttentionParams& params);

}  // namespace kvbits::attn
