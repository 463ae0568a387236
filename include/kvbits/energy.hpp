// kvbits — streaming per-block energy statistics for calibration.
//
// For each (layer, KV head, block) it keeps fp64 sums of ||q^(b)||^2 over every query head of
// the GQA group (each head is its own sample) and of ||k^(b)||^2, plus sample counts. Chunks
// may arrive in any number and size; pre- or post-RoPE inputs give the same statistics since
// RoPE rotates inside each block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvbits/types.hpp"

namespace kvbits {

// How a block's importance is scored from its mean energies Eq, Ek.
//   energy:  s = (Eq + Ek) / 2   — the paper's label-free score (reference parity)
//   product: s = Eq * Ek         — first-order logit sensitivity ||q||^2 * MSE(k)
enum class ScoreKind : uint8_t { energy = 0, product = 1 };
const char* score_kind_name(ScoreKind s) noexcept;

class EnergyAccumulator {
 public:
  explicit EnergyAccumulator(const ModelShape& shape);

  // q: [n_tokens, n_q_heads, head_dim], k: [n_tokens, n_kv_heads, head_dim], row-major,
  // element type `dtype`. Either pointer may be null to observe only the other side.
  // Non-finite values -> Error(invalid_argument) and nothing is accumulated.
  void observe(uint32_t layer, const void* q, const void* k, size_t n_tokens, DType dtype);

  const ModelShape& shape() const { return shape_; }
  uint64_t q_samples(uint32_t layer, uint32_t kv_head) const;  // query vectors seen
  uint64_t k_samples(uint32_t layer, uint32_t kv_head) const;  // key vectors seen
  // Mean block energies, D/2 values each (0 where no samples).
  std::vector<double> mean_q_energy(uint32_t layer, uint32_t kv_head) const;
  std::vector<double> mean_k_energy(uint32_t layer, uint32_t kv_head) const;
  std::vector<double> scores(uint32_t layer, uint32_t kv_head, ScoreKind kind) const;

 private:
  size_t slot(uint32_t layer, uint32_t kv_head) const;
  ModelShape shape_;
  std::vector<double> q_sum_, k_sum_;  // [layer][kv_head][block]
  std::vector<uint64_t> q_n_, k_n_;    // [layer][kv_head]
};

// Score of one block from its mean energies.
double block_score(double eq, double ek, ScoreKind kind) noexcept;

}  // namespace kvbits
