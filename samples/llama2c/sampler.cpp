#include "sampler.hpp"

#include <cmath>

#include "kvbits/status.hpp"

namespace llama2c {

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double SplitMix64::uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }

int argmax(const float* logits, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (logits[i] > logits[best]) best = i;
  return best;
}

Sampler::Sampler(float temperature, uint64_t seed) : temperature_(temperature), rng_(seed) {
  if (!(temperature >= 0.0f) || !std::isfinite(temperature))
    kvbits::fail(kvbits::StatusCode::invalid_argument, "temperature must be finite and >= 0");
}

int Sampler::sample(const float* logits, int n) {
  if (temperature_ == 0.0f) return argmax(logits, n);
  // Inverse-CDF draw over the unnormalised weights exp((l - max) / T), in fp64.
  const double max = logits[argmax(logits, n)];
  weights_.resize(size_t(n));
  double total = 0;
  for (int i = 0; i < n; ++i) {
    weights_[size_t(i)] = std::exp((double(logits[i]) - max) / temperature_);
    total += weights_[size_t(i)];
  }
  const double target = rng_.uniform() * total;
  double cdf = 0;
  int last_positive = 0;
  for (int i = 0; i < n; ++i) {
    if (weights_[size_t(i)] == 0.0) continue;
    cdf += weights_[size_t(i)];
    last_positive = i;
    if (target < cdf) return i;
  }
  return last_positive;  // u * total rounded up to total
}

}  // namespace llama2c
