// llama2c — where the forward pass keeps keys and values, behind a two-call interface.
//
// The forward pass hands each layer's post-RoPE key and value of one position to append(),
// then asks attention() for the attended output of its post-RoPE queries. Any cache that
// can answer those two calls (fp32 here; a packed kvbits cache later) plugs in unchanged.
#pragma once

#include <vector>

#include "model.hpp"

namespace llama2c {

class KvStore {
 public:
  virtual ~KvStore() = default;
  // Stores position `pos` of `layer`: k[kv_dim], v[kv_dim], post-RoPE keys. Within a layer
  // positions arrive in order 0, 1, 2, ...
  virtual void append(int layer, int pos, const float* k, const float* v) = 0;
  // Causal attention of the queries q[n_heads * head_dim] (post-RoPE) at position `pos` over
  // positions [0, pos] of `layer`: out[n_heads * head_dim], per query head
  // softmax(q.k / sqrt(head_dim)) weighted sum of v, with query head h reading KV head
  // h / (n_heads / n_kv_heads).
  virtual void attention(int layer, int pos, const float* q, float* out) = 0;
};

// The exact fp32 reference: every key and value kept as given. One sequence, up to the
// model's seq_len positions. Error(invalid_argument) for out-of-order or out-of-range calls.
class FloatKvStore final : public KvStore {
 public:
  explicit FloatKvStore(const Config& config);
  void append(int layer, int pos, const float* k, const float* v) override;
  void attention(int layer, int pos, const float* q, float* out) override;

 private:
  int n_heads_, n_kv_heads_, head_dim_, capacity_;
  std::vector<float> keys_, values_;  // [layer][pos][kv_dim]
  std::vector<int> length_;           // positions stored per layer
  std::vector<float> scores_;         // [capacity]
};

}  // namespace llama2c
