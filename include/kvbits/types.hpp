// kvbits — model shape and small shared enums.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace kvbits {

// How RoPE pairs the dimensions of a head.
//   split_half:  block i = dims (i, i + R/2)  (Hugging Face rotate_half; Llama, Qwen, Mistral)
//   interleaved: block i = dims (2i, 2i + 1)  (llama2.c, GPT-J, GLM)
// R is the rotary dim. Block i rotates with frequency theta^(-2i/R) in both layouts.
enum class RopeLayout : uint8_t { split_half = 0, interleaved = 1 };

// Element type of activation tensors handed to the core.
enum class DType : uint8_t { f32 = 0, f16 = 1, bf16 = 2 };

size_t dtype_size(DType t) noexcept;
const char* dtype_name(DType t) noexcept;

struct ModelShape {
  uint32_t n_layers = 0;
  uint32_t n_q_heads = 0;
  uint32_t n_kv_heads = 0;
  uint32_t head_dim = 0;    // D, even, 2..1024
  uint32_t rotary_dim = 0;  // R, even, 2..D; dims [R, D) are not rotated (partial rotary)
  RopeLayout rope_layout = RopeLayout::split_half;
  double rope_theta = 10000.0;

  // Throws Error(invalid_argument) naming the first bad field.
  void validate() const;

  uint32_t gqa_group() const { return n_q_heads / n_kv_heads; }
  // Rotary 2-D blocks per head (R/2).
  uint32_t n_rotary_blocks() const { return rotary_dim / 2; }
  // All 2-dim blocks per head: rotary blocks first, then the (D-R)/2 static pairs.
  uint32_t n_blocks() const { return head_dim / 2; }

  bool operator==(const ModelShape& o) const;
  bool operator!=(const ModelShape& o) const { return !(*this == o); }
  std::string describe() const;  // "layers=5 q_heads=8 kv_heads=4 head_dim=8 rotary_dim=8 rope=interleaved theta=10000"
};

const char* rope_layout_name(RopeLayout l) noexcept;

}  // namespace kvbits
