#include "kvbits/rope_blocks.hpp"

#include <cmath>
#include <string>

#include "kvbits/status.hpp"

namespace kvbits {

std::array<uint32_t, 2> block_dims(const ModelShape& shape, uint32_t block) {
  if (block >= shape.n_blocks())
    fail(StatusCode::invalid_argument, "block " + std::to_string(block) + " out of range (head has " +
                                           std::to_string(shape.n_blocks()) + " blocks)");
  const uint32_t n_rot = shape.n_rotary_blocks();
  if (block >= n_rot) {
    // Static pairs of the non-rotary tail keep their natural order.
    const uint32_t j = block - n_rot;
    return {shape.rotary_dim + 2 * j, shape.rotary_dim + 2 * j + 1};
  }
  if (shape.rope_layout == RopeLayout::split_half) return {block, block + n_rot};
  return {2 * block, 2 * block + 1};
}

double block_frequency(const ModelShape& shape, uint32_t block) {
  if (block >= shape.n_rotary_blocks()) return 0.0;
  return std::pow(shape.rope_theta, -2.0 * double(block) / double(shape.rotary_dim));
}

void apply_rope(const ModelShape& shape, double pos, double* x) {
  for (uint32_t b = 0; b < shape.n_rotary_blocks(); ++b) {
    const auto d = block_dims(shape, b);
    const double angle = pos * block_frequency(shape, b);
    const double c = std::cos(angle), s = std::sin(angle);
    const double re = x[d[0]], im = x[d[1]];
    x[d[0]] = re * c - im * s;
    x[d[1]] = re * s + im * c;
  }
}

}  // namespace kvbits
