// kvbits — RoPE 2-D frequency blocks of one attention head.
//
// A head of D dims is cut into D/2 blocks of two dims each. The first R/2 blocks are the
// rotary blocks (R = rotary_dim), numbered by frequency: block i rotates by angle
// pos * theta^(-2i/R), block 0 fastest. The remaining (D-R)/2 "static" blocks pair the
// non-rotary dims [R, D) as (R+2j, R+2j+1); they never rotate. Bits are allocated per block;
// static blocks get a fixed width outside the greedy budget (see allocator.hpp).
#pragma once

#include <array>
#include <cstdint>

#include "kvbits/types.hpp"

namespace kvbits {

// The two dims of block b (0 <= b < D/2), in the order (real, imaginary) of the rotation.
std::array<uint32_t, 2> block_dims(const ModelShape& shape, uint32_t block);

// Rotation frequency of rotary block i: theta^(-2i/R). Static blocks return 0.
double block_frequency(const ModelShape& shape, uint32_t block);

// Applies RoPE at position `pos` in place to one head vector x[D] (fp64 reference).
// Used by tests and diagnostics; kernels receive keys that are already rotated.
void apply_rope(const ModelShape& shape, double pos, double* x);

}  // namespace kvbits
