// llama2c — choosing the next token: greedy or temperature sampling with a seeded RNG.
#pragma once

#include <cstdint>
#include <vector>

namespace llama2c {

// SplitMix64 (Steele, Lea & Flood, 2014): the state advances by 0x9E3779B97F4A7C15 and each
// output is a fixed 64-bit mix of it. One word of state, integer-only, so a seed gives the
// same stream on every platform; statistically strong enough for sampling.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [0, 1): the top 53 bits of next() scaled by 2^-53.
  double uniform();

 private:
  uint64_t state_;
};

// Index of the largest logit; the lowest index on ties.
int argmax(const float* logits, int n);

class Sampler {
 public:
  // temperature 0: greedy (argmax). temperature > 0: sample from softmax(logits / T).
  // Error(invalid_argument) for a negative or non-finite temperature.
  Sampler(float temperature, uint64_t seed);

  // Draws one token from logits[n]. Each call consumes exactly one RNG output when sampling.
  int sample(const float* logits, int n);

 private:
  float temperature_;
  SplitMix64 rng_;
  std::vector<double> weights_;  // scratch
};

}  // namespace llama2c
