#include "kvbits/allocator.hpp"

#include <cmath>
#include <string>

#include "kvbits/status.hpp"

namespace kvbits {

int64_t bit_budget(size_t n_blocks, double avg_bits) {
  return int64_t(std::floor(double(n_blocks) * avg_bits));
}

std::vector<uint8_t> allocate_bits(const std::vector<double>& scores, const AllocatorConfig& cfg) {
  if (cfg.min_bits < 1 || cfg.max_bits > 8 || cfg.min_bits > cfg.max_bits)
    fail(StatusCode::invalid_argument, "allocator: need 1 <= min_bits <= max_bits <= 8, got min " +
                                           std::to_string(cfg.min_bits) + " max " + std::to_string(cfg.max_bits));
  if (!std::isfinite(cfg.avg_bits) || cfg.avg_bits < 0 || cfg.avg_bits > 8)
    fail(StatusCode::invalid_argument, "allocator: avg_bits must be in [0, 8]");
  for (size_t i = 0; i < scores.size(); ++i)
    if (!std::isfinite(scores[i]) || scores[i] < 0)
      fail(StatusCode::invalid_argument, "allocator: score of block " + std::to_string(i) + " is negative or not finite");

  std::vector<uint8_t> bits(scores.size(), uint8_t(cfg.min_bits));
  int64_t remaining = bit_budget(scores.size(), cfg.avg_bits) - int64_t(scores.size()) * cfg.min_bits;
  while (remaining > 0) {
    // argmax of s_i * 4^-b_i over blocks below the cap; strict '>' keeps the lowest index on ties.
    // ldexp is exact, so priorities equal the reference's s * 4.0**-b bit for bit.
    double best = 0.0;
    size_t arg = scores.size();
    for (size_t i = 0; i < scores.size(); ++i) {
      if (bits[i] >= cfg.max_bits) continue;
      const double p = std::ldexp(scores[i], -2 * int(bits[i]));
      if (arg == scores.size() || p > best) best = p, arg = i;
    }
    if (arg == scores.size() || best <= 0.0) break;  // all capped, or only zero-energy blocks left
    ++bits[arg];
    --remaining;
  }
  return bits;
}

}  // namespace kvbits
