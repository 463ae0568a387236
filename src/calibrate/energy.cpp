#include "kvbits/energy.hpp"

#include <cmath>
#include <cstring>
#include <array>
#include <string>

#include "common/dtype_load.hpp"
#include "kvbits/rope_blocks.hpp"
#include "kvbits/status.hpp"

namespace kvbits {

const char* score_kind_name(ScoreKind s) noexcept { return s == ScoreKind::energy ? "energy" : "product"; }

double block_score(double eq, double ek, ScoreKind kind) noexcept {
  return kind == ScoreKind::energy ? 0.5 * (eq + ek) : eq * ek;
}

namespace {

void check_finite(const void* p, size_t n, DType t, const char* what, uint32_t layer) {
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(load_value(p, i, t)))
      fail(StatusCode::invalid_argument, std::string("calibration: non-finite ") + what + " value at layer " +
                                             std::to_string(layer) + ", element " + std::to_string(i));
}

}  // namespace

EnergyAccumulator::EnergyAccumulator(const ModelShape& shape) : shape_(shape) {
  shape_.validate();
  const size_t heads = size_t(shape.n_layers) * shape.n_kv_heads;
  q_sum_.assign(heads * shape.n_blocks(), 0.0);
  k_sum_.assign(heads * shape.n_blocks(), 0.0);
  q_n_.assign(heads, 0);
  k_n_.assign(heads, 0);
}

size_t EnergyAccumulator::slot(uint32_t layer, uint32_t kv_head) const {
  if (layer >= shape_.n_layers || kv_head >= shape_.n_kv_heads)
    fail(StatusCode::invalid_argument, "calibration: (layer " + std::to_string(layer) + ", kv head " +
                                           std::to_string(kv_head) + ") out of range for " + shape_.describe());
  return size_t(layer) * shape_.n_kv_heads + kv_head;
}

void EnergyAccumulator::observe(uint32_t layer, const void* q, const void* k, size_t n_tokens, DType dtype) {
  slot(layer, 0);  // range check before touching anything
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16)
    fail(StatusCode::invalid_argument, "calibration: unknown dtype");
  const uint32_t D = shape_.head_dim, nb = shape_.n_blocks(), G = shape_.gqa_group();
  const size_t q_row = size_t(shape_.n_q_heads) * D, k_row = size_t(shape_.n_kv_heads) * D;
  // Validate first so a bad chunk leaves the statistics untouched.
  if (q) check_finite(q, n_tokens * q_row, dtype, "query", layer);
  if (k) check_finite(k, n_tokens * k_row, dtype, "key", layer);

  std::vector<std::array<uint32_t, 2>> dims(nb);
  for (uint32_t b = 0; b < nb; ++b) dims[b] = block_dims(shape_, b);
  auto block_energy = [&](const void* base, size_t off, uint32_t b) {
    const double x0 = load_value(base, off + dims[b][0], dtype), x1 = load_value(base, off + dims[b][1], dtype);
    return x0 * x0 + x1 * x1;
  };
  for (uint32_t h = 0; h < shape_.n_kv_heads; ++h) {
    const size_t s = slot(layer, h);
    double* qs = &q_sum_[s * nb];
    double* ks = &k_sum_[s * nb];
    for (size_t t = 0; t < n_tokens; ++t) {
      if (q)  // every query head of the GQA group is its own sample
        for (uint32_t g = 0; g < G; ++g)
          for (uint32_t b = 0; b < nb; ++b) qs[b] += block_energy(q, t * q_row + size_t(h * G + g) * D, b);
      if (k)
        for (uint32_t b = 0; b < nb; ++b) ks[b] += block_energy(k, t * k_row + size_t(h) * D, b);
    }
    if (q) q_n_[s] += n_tokens * G;
    if (k) k_n_[s] += n_tokens;
  }
}

uint64_t EnergyAccumulator::q_samples(uint32_t layer, uint32_t kv_head) const { return q_n_[slot(layer, kv_head)]; }
uint64_t EnergyAccumulator::k_samples(uint32_t layer, uint32_t kv_head) const { return k_n_[slot(layer, kv_head)]; }

namespace {
std::vector<double> mean_of(const std::vector<double>& sums, size_t s, uint32_t nb, uint64_t n) {
  std::vector<double> out(nb, 0.0);
  if (n == 0) return out;
  for (uint32_t b = 0; b < nb; ++b) out[b] = sums[s * nb + b] / double(n);
  return out;
}
}  // namespace

std::vector<double> EnergyAccumulator::mean_q_energy(uint32_t layer, uint32_t kv_head) const {
  const size_t s = slot(layer, kv_head);
  return mean_of(q_sum_, s, shape_.n_blocks(), q_n_[s]);
}

std::vector<double> EnergyAccumulator::mean_k_energy(uint32_t layer, uint32_t kv_head) const {
  const size_t s = slot(layer, kv_head);
  return mean_of(k_sum_, s, shape_.n_blocks(), k_n_[s]);
}

std::vector<double> EnergyAccumulator::scores(uint32_t layer, uint32_t kv_head, ScoreKind kind) const {
  const auto eq = mean_q_energy(layer, kv_head), ek = mean_k_energy(layer, kv_head);
  std::vector<double> s(eq.size());
  for (size_t b = 0; b < s.size(); ++b) s[b] = block_score(eq[b], ek[b], kind);
  return s;
}

}  // namespace kvbits
