// Plans built in tests: a random valid plan for a shape and a small fixed "golden" plan.
// No GoogleTest dependency, so the fuzz corpus generator can use it too.
#pragma once

#include <cstdint>
#include <vector>

#include "kvbits/plan.hpp"

namespace kvbits::test {

// SplitMix64: the same stream on every platform and standard library.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  uint32_t below(uint32_t n) { return uint32_t(next() % n); }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)

 private:
  uint64_t state_;
};

// llama2.c stories260K: 5 layers, 8 q heads, 4 kv heads, D = 8, interleaved.
ModelShape stories260k_shape();
// A Hugging Face-style head: D = 128 split-half, 3 layers, 8 q heads, 2 kv heads.
ModelShape split_half_128_shape();

struct RandomPlanOptions {
  int min_bits = 1;
  int max_bits = 6;
  int v_bits = 3;
  bool fp16_layer = true;         // layer 1 kept at 16 bits
  bool explicit_rotation = true;  // layer 0 head 0: explicit K group 0 and V rotations
};

// A valid plan with random widths, hp orders (ties shuffled), energies, seeds and metadata.
Plan random_plan(const ModelShape& shape, uint64_t seed, const RandomPlanOptions& options = {});

// Fixed tiny plan of docs/plan-format.md §8 (1 layer, 1 kv head, D = 4).
Plan golden_plan();

// A strictly increasing symmetric stand-in for a unit codebook of 2^bits values.
std::vector<double> test_codebook(int bits);

// An orthonormal dim x dim fp32 matrix (product of Givens rotations).
std::vector<float> orthonormal_matrix(uint32_t dim, uint64_t seed);

}  // namespace kvbits::test
