// llama2c — a llama2.c "v0" checkpoint: header, validated weights, RoPE tables.
//
// File layout (little-endian): seven int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
// vocab_size, seq_len), then float32 tensors in nn.Linear [out, in] layout: token embedding
// [vocab, dim], rms_att [L, dim], wq [L, dim, dim], wk [L, kv_dim, dim], wv [L, kv_dim, dim],
// wo [L, dim, dim], rms_ffn [L, dim], w1 [L, hidden, dim], w2 [L, dim, hidden],
// w3 [L, hidden, dim], rms_final [dim], freq_cis_real and freq_cis_imag [seq_len, head_dim/2],
// and, when vocab_size is negative, a separate classifier [|vocab|, dim].
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvbits/types.hpp"

namespace llama2c {

// v0 checkpoints do not store theta; llama2.c trains with this value.
inline constexpr double kRopeTheta = 10000.0;

struct Config {
  int dim = 0;
  int hidden_dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;  // always positive here; the sign in the file is shared_classifier
  int seq_len = 0;
  bool shared_classifier = true;

  int head_dim() const { return dim / n_heads; }
  int kv_dim() const { return n_kv_heads * head_dim(); }
  // kvbits' view of the attention: interleaved RoPE over the whole head, theta 10000.
  kvbits::ModelShape shape() const;
};

struct LayerWeights {
  const float* rms_att;  // [dim]
  const float* wq;       // [dim, dim]
  const float* wk;       // [kv_dim, dim]
  const float* wv;       // [kv_dim, dim]
  const float* wo;       // [dim, dim]
  const float* rms_ffn;  // [dim]
  const float* w1;       // [hidden, dim]
  const float* w2;       // [dim, hidden]
  const float* w3;       // [hidden, dim]
};

// Immutable after load; move-only because the weight pointers point into its own buffer.
class Model {
 public:
  // Reads and validates a checkpoint: sane header fields, file size exactly what the header
  // implies, finite weights. Error(io_error | corrupt_data | version_unsupported).
  static Model load(const std::string& path);

  Model(Model&&) = default;
  Model& operator=(Model&&) = default;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const Config& config() const { return config_; }
  const float* token_embedding() const { return token_embedding_; }  // [vocab, dim]
  const LayerWeights& layer(int l) const { return layers_[size_t(l)]; }
  const float* rms_final() const { return rms_final_; }    // [dim]
  const float* classifier() const { return classifier_; }  // [vocab, dim]

  // RoPE cos/sin of position pos, head_dim/2 values each, computed from theta in fp64.
  const float* rope_cos(int pos) const { return rope_cos_.data() + size_t(pos) * size_t(config_.head_dim() / 2); }
  const float* rope_sin(int pos) const { return rope_sin_.data() + size_t(pos) * size_t(config_.head_dim() / 2); }
  // The checkpoint's own tables [seq_len, head_dim/2]; unused by the forward pass, kept as a
  // reference the computed ones are tested against.
  const float* stored_freq_cis_real() const { return freq_cis_real_; }
  const float* stored_freq_cis_imag() const { return freq_cis_imag_; }

  // XXH3-128 of the checkpoint file's bytes, 32 lower-case hex digits, high half first.
  const std::string& fingerprint_hex() const { return fingerprint_hex_; }

 private:
  Model() = default;
  void bind_weights();
  void compute_rope_tables();

  Config config_;
  std::vector<float> weights_;  // every float after the header, in file order
  std::vector<LayerWeights> layers_;
  const float* token_embedding_ = nullptr;
  const float* rms_final_ = nullptr;
  const float* classifier_ = nullptr;
  const float* freq_cis_real_ = nullptr;
  const float* freq_cis_imag_ = nullptr;
  std::vector<float> rope_cos_, rope_sin_;  // [seq_len, head_dim/2]
  std::string fingerprint_hex_;
};

}  // namespace llama2c
