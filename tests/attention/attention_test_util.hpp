// Shared by the attention tests: calibrated plans, structured activations, the fp64
// reference attention and error bookkeeping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvbits/calibrator.hpp"
#include "kvbits/plan.hpp"

namespace kvbits::test_attn {

ModelShape make_shape(uint32_t layers, uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim,
                      uint32_t rotary_dim = 0, RopeLayout layout = RopeLayout::split_half);

// n_tokens x heads head vectors whose block b has standard deviation growing geometrically
// with b (energies spanning about three orders of magnitude, as in real models), rescaled so
// that every vector has RMS 1 per dim: logits q.k/sqrt(D) stay O(1).
std::vector<float> structured_vectors(const ModelShape& shape, size_t n_tokens, uint32_t heads, uint64_t seed);

// A plan calibrated on structured activations of every layer.
Plan calibrated_plan(const ModelShape& shape, const PlanOptions& options, uint64_t seed = 7);

// fp64 softmax attention of one query over rows [0, visible) of k and v ([rows][D]).
void reference_attention(const float* q, const float* k, const float* v, uint32_t visible, uint32_t D,
                         double scale, double* out, double* lse);

// Worst errors seen: max |got - ref| / max |ref| per output row, and |lse - ref|.
struct ErrorStats {
  double max_rel = 0.0;
  double max_lse = 0.0;
  size_t rows = 0;
  void add_row(const float* got, const double* ref, uint32_t D);
  void add_lse(float got, double ref);
  void merge(const ErrorStats& o);
};

}  // namespace kvbits::test_attn
