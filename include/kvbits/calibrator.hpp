// kvbits — from observed activations to a bit plan.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kvbits/allocator.hpp"
#include "kvbits/energy.hpp"
#include "kvbits/plan.hpp"

namespace kvbits {

struct PlanOptions {
  Method method = Method::block_gtq;
  ScoreKind score = ScoreKind::product;
  CodebookRecipe recipe = CodebookRecipe::lloyd_max;
  double k_avg_bits = 3.0;  // code bits per key dim (norms not counted)
  int k_min_bits = 1;
  int k_max_bits = 8;
  int v_bits = 3;
  uint64_t rotation_seed = 42;
  uint32_t sink_tokens = 0;
  uint32_t window_tokens = 0;
  std::vector<uint32_t> fp16_layers;  // layers kept at 16 bits
  Fingerprint fingerprint;
  Producer producer;  // calib_tokens is filled in from the accumulator
};

// Bits of the static (non-rotary) blocks under partial rotary: floor(avg), clamped to
// [min, max]. They are outside the greedy budget.
int static_block_bits(const PlanOptions& opt);

// Allocates widths per (layer, KV head) from the accumulated energies and assembles a
// validated Plan with generated rotations and the codebooks of every width used.
// Error(invalid_argument) for bad options or a layer/head with no samples.
Plan build_plan(const EnergyAccumulator& energies, const PlanOptions& options);

}  // namespace kvbits
