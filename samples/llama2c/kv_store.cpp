#include "kv_store.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "kvbits/status.hpp"
#include "ops.hpp"

namespace llama2c {

using kvbits::StatusCode;

FloatKvStore::FloatKvStore(const Config& config)
    : n_heads_(config.n_heads),
      n_kv_heads_(config.n_kv_heads),
      head_dim_(config.head_dim()),
      capacity_(config.seq_len),
      keys_(size_t(config.n_layers) * size_t(config.seq_len) * size_t(config.kv_dim())),
      values_(keys_.size()),
      length_(size_t(config.n_layers), 0),
      scores_(size_t(config.seq_len)) {}

void FloatKvStore::append(int layer, int pos, const float* k, const float* v) {
  if (layer < 0 || size_t(layer) >= length_.size())
    kvbits::fail(StatusCode::invalid_argument, "kv store: layer " + std::to_string(layer) + " out of range");
  if (pos != length_[size_t(layer)] || pos >= capacity_)
    kvbits::fail(StatusCode::invalid_argument, "kv store: layer " + std::to_string(layer) + " expects position " +
                                                   std::to_string(length_[size_t(layer)]) + " (capacity " +
                                                   std::to_string(capacity_) + "), got " + std::to_string(pos));
  const size_t kv_dim = size_t(n_kv_heads_ * head_dim_);
  const size_t at = (size_t(layer) * size_t(capacity_) + size_t(pos)) * kv_dim;
  std::copy(k, k + kv_dim, keys_.begin() + std::ptrdiff_t(at));
  std::copy(v, v + kv_dim, values_.begin() + std::ptrdiff_t(at));
  ++length_[size_t(layer)];
}

void FloatKvStore::attention(int layer, int pos, const float* q, float* out) {
  if (layer < 0 || size_t(layer) >= length_.size() || pos < 0 || pos >= length_[size_t(layer)])
    kvbits::fail(StatusCode::invalid_argument, "kv store: attention at layer " + std::to_string(layer) +
                                                   " position " + std::to_string(pos) + " before it was appended");
  const size_t kv_dim = size_t(n_kv_heads_ * head_dim_);
  const float* keys = keys_.data() + size_t(layer) * size_t(capacity_) * kv_dim;
  const float* values = values_.data() + size_t(layer) * size_t(capacity_) * kv_dim;
  const int group = n_heads_ / n_kv_heads_;
  const float scale = 1.0f / std::sqrt(float(head_dim_));
  for (int h = 0; h < n_heads_; ++h) {
    const float* qh = q + h * head_dim_;
    const size_t kv_offset = size_t(h / group) * size_t(head_dim_);
    for (int t = 0; t <= pos; ++t) scores_[size_t(t)] = dot(qh, keys + size_t(t) * kv_dim + kv_offset, head_dim_) * scale;
    softmax(scores_.data(), pos + 1);
    float* oh = out + h * head_dim_;
    std::fill(oh, oh + head_dim_, 0.0f);
    for (int t = 0; t <= pos; ++t) {
      const float* vt = values + size_t(t) * kv_dim + kv_offset;
      const float p = scores_[size_t(t)];
      for (int d = 0; d < head_dim_; ++d) oh[d] += p * vt[d];
    }
  }
}

}  // namespace llama2c
