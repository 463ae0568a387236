// Argument checks shared by the cache and attention entry points. They run before the core is
// called so each bad input gets the status the header documents.
#pragma once

#include <algorithm>
#include <string>
#include <vector>

#include "capi_util.hpp"
#include "kvbits/cache.hpp"

namespace kvbits::capi {

inline void require_layer(const Cache& c, uint32_t layer) {
  const uint32_t n = c.plan().shape.n_layers;
  if (layer >= n) bad_arg("layer " + std::to_string(layer) + " out of range (" + std::to_string(n) + " layers)");
}

inline void require_sequence(const Cache& c, uint64_t seq) {
  if (!c.has_sequence(seq))
    fail(StatusCode::not_found, "sequence " + std::to_string(seq) + " is not in the cache (never added or removed)");
}

// A batch of sequence ids: 1..max_sequences entries, each live, optionally all distinct.
inline void require_batch(const Cache& c, const uint64_t* seqs, size_t n_seqs, bool distinct) {
  if (n_seqs == 0) bad_arg("n_seqs must be >= 1");
  const uint32_t most = c.config().max_sequences;
  if (n_seqs > most)
    bad_arg("n_seqs " + std::to_string(n_seqs) + " > max_sequences " + std::to_string(most) + " of this cache");
  for (size_t i = 0; i < n_seqs; ++i) require_sequence(c, seqs[i]);
  if (!distinct) return;
  std::vector<uint64_t> sorted(seqs, seqs + n_seqs);
  std::sort(sorted.begin(), sorted.end());
  const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  if (dup != sorted.end()) bad_arg("sequence " + std::to_string(*dup) + " is listed twice");
}

// The most tokens one sequence can ever hold: fp16 sink and window plus every page of the pool.
inline uint64_t max_tokens_per_sequence(const Cache& c) {
  const uint64_t paged = c.config().max_pages * c.config().page_size;  // both bounded at creation
  return std::min<uint64_t>(UINT32_MAX, paged + c.sink_tokens() + c.window_tokens());
}

// Bytes of one token's row of `heads` heads in `t`.
inline size_t token_row_bytes(const Cache& c, uint32_t heads, DType t) {
  return size_t(heads) * c.plan().shape.head_dim * dtype_size(t);
}

}  // namespace kvbits::capi
