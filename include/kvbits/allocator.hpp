// kvbits — greedy integer bit allocation over RoPE blocks (reference spec §2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvbits {

struct AllocatorConfig {
  double avg_bits = 3.0;  // average code bits per key dim; budget = floor(n_blocks * avg_bits)
  int min_bits = 1;       // every block starts here
  int max_bits = 8;       // no block goes above
};

// Minimises sum_i s_i * 4^(-b_i) subject to sum_i b_i <= floor(n * avg_bits) and
// min <= b_i <= max: start all blocks at min, then give one bit at a time to
// argmax_i s_i * 4^(-b_i) among blocks below max (ties -> lowest index); stop when the budget
// is spent, every block is at max, or the best priority is <= 0 (zero-energy blocks absorb
// nothing). Uniform TQ-MSE is min = max. Throws Error(invalid_argument) for a bad config or
// non-finite/negative scores.
std::vector<uint8_t> allocate_bits(const std::vector<double>& scores, const AllocatorConfig& cfg);

// The budget the allocator spends at most: floor(n_blocks * avg_bits).
int64_t bit_budget(size_t n_blocks, double avg_bits);

}  // namespace kvbits
