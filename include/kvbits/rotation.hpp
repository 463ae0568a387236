// kvbits — portable random rotations.
//
// A plan names each rotation by (algorithm, seed, dim). The generator below uses only
// integer arithmetic and exactly-rounded IEEE-754 binary64 operations (+ - * / sqrt), with a
// fixed evaluation order and its own logarithm, so every conforming machine produces the same
// fp32 matrix bit for bit (the library builds with -ffp-contract=off). A golden-hash test
// pins the output.
#pragma once

#include <cstdint>
#include <vector>

namespace kvbits {

// Row-major d x d orthogonal matrix (fp32), Haar-distributed: Householder QR of a d x d
// standard-normal matrix with the signs of R's diagonal folded into Q, then column 0 negated
// if det < 0 (so det = +1). Normals come from a SplitMix64 stream seeded by `seed` through
// the Marsaglia polar method. Throws Error(invalid_argument) for d == 0 or d > 4096.
std::vector<float> haar_rotation(uint32_t dim, uint64_t seed);

// Seed of one rotation inside a plan, derived from the plan's base seed so that every
// (layer, kv_head, role, group) gets an independent stream. role 0 = K group, 1 = V.
uint64_t derive_rotation_seed(uint64_t base_seed, uint32_t layer, uint32_t kv_head, uint32_t role,
                              uint32_t group);

// Deterministic natural logarithm for x > 0 built from exactly-rounded operations only
// (exposed for its tests).
double portable_log(double x);

}  // namespace kvbits
