// llama2c — the forward pass, one token at a time.
#pragma once

#include <functional>
#include <vector>

#include "kv_store.hpp"
#include "model.hpp"

namespace llama2c {

enum class RopeStage { pre, post };

// Sees one layer's q[n_heads * head_dim] and k[kv_dim] of one position, once before and once
// after RoPE (e.g. to capture activations). The pointers are valid during the call only.
using QkObserver = std::function<void(int layer, int pos, RopeStage stage, const float* q, const float* k)>;

// Scratch state for running a Model; one per thread. The model must outlive it.
class Runner {
 public:
  explicit Runner(const Model& model);

  // Runs `token` at position `pos` (0 <= pos < seq_len, in order for this kv store) and
  // returns the logits [vocab_size], valid until the next call.
  // Error(invalid_argument) for a token or position out of range.
  const float* forward(int token, int pos, KvStore& kv, const QkObserver& observer = {});

 private:
  const Model& model_;
  std::vector<float> x_, xb_, q_, k_, v_, attn_, ffn_gate_, ffn_up_, logits_;
};

}  // namespace llama2c
