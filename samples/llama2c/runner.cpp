#include "runner.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "kvbits/status.hpp"
#include "ops.hpp"

namespace llama2c {

Runner::Runner(const Model& model)
    : model_(model),
      x_(size_t(model.config().dim)),
      xb_(x_.size()),
      q_(x_.size()),
      k_(size_t(model.config().kv_dim())),
      v_(k_.size()),
      attn_(x_.size()),
      ffn_gate_(size_t(model.config().hidden_dim)),
      ffn_up_(ffn_gate_.size()),
      logits_(size_t(model.config().vocab_size)) {}

const float* Runner::forward(int token, int pos, KvStore& kv, const QkObserver& observer) {
  const Config& c = model_.config();
  if (token < 0 || token >= c.vocab_size)
    kvbits::fail(kvbits::StatusCode::invalid_argument, "token id " + std::to_string(token) + " is outside [0, " +
                                                           std::to_string(c.vocab_size) + ")");
  if (pos < 0 || pos >= c.seq_len)
    kvbits::fail(kvbits::StatusCode::invalid_argument, "position " + std::to_string(pos) + " is outside [0, " +
                                                           std::to_string(c.seq_len) + ")");
  const int dim = c.dim, kv_dim = c.kv_dim(), hidden = c.hidden_dim, hd = c.head_dim();
  const float* embedding = model_.token_embedding() + size_t(token) * size_t(dim);
  std::copy(embedding, embedding + dim, x_.begin());

  for (int l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model_.layer(l);
    // Attention block: x += Wo attention(rope(Wq n), rope(Wk n), Wv n), n = rmsnorm(x).
    rmsnorm(xb_.data(), x_.data(), w.rms_att, dim);
    matvec(q_.data(), w.wq, xb_.data(), dim, dim);
    matvec(k_.data(), w.wk, xb_.data(), kv_dim, dim);
    matvec(v_.data(), w.wv, xb_.data(), kv_dim, dim);
    if (observer) observer(l, pos, RopeStage::pre, q_.data(), k_.data());
    rope_interleaved(q_.data(), c.n_heads, hd, model_.rope_cos(pos), model_.rope_sin(pos));
    rope_interleaved(k_.data(), c.n_kv_heads, hd, model_.rope_cos(pos), model_.rope_sin(pos));
    if (observer) observer(l, pos, RopeStage::post, q_.data(), k_.data());
    kv.append(l, pos, k_.data(), v_.data());
    kv.attention(l, pos, q_.data(), attn_.data());
    matvec(xb_.data(), w.wo, attn_.data(), dim, dim);
    for (int i = 0; i < dim; ++i) x_[size_t(i)] += xb_[size_t(i)];

    // SwiGLU block: x += W2 (silu(W1 n) * W3 n), n = rmsnorm(x).
    rmsnorm(xb_.data(), x_.data(), w.rms_ffn, dim);
    matvec(ffn_gate_.data(), w.w1, xb_.data(), hidden, dim);
    matvec(ffn_up_.data(), w.w3, xb_.data(), hidden, dim);
    for (int i = 0; i < hidden; ++i) {
      const float g = ffn_gate_[size_t(i)];
      ffn_gate_[size_t(i)] = g / (1.0f + std::exp(-g)) * ffn_up_[size_t(i)];
    }
    matvec(xb_.data(), w.w2, ffn_gate_.data(), dim, hidden);
    for (int i = 0; i < dim; ++i) x_[size_t(i)] += xb_[size_t(i)];
  }

  rmsnorm(x_.data(), x_.data(), model_.rms_final(), dim);
  matvec(logits_.data(), model_.classifier(), x_.data(), c.vocab_size, dim);
  return logits_.data();
}

}  // namespace llama2c
