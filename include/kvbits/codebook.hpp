// kvbits — scalar Gaussian Lloyd-Max codebooks for TurboQuant-MSE.
//
// After a random rotation, each coordinate of a unit vector in d dims is close to N(0, 1/d).
// A codebook for (bits, d) is the unit-variance codebook scaled by 1/sqrt(d). Plans store the
// unit codebooks (fp64), so every reader derives bit-identical per-group fp32 tables.
#pragma once

#include <cstdint>
#include <vector>

namespace kvbits {

enum class CodebookRecipe : uint8_t {
  // Lloyd-Max on N(0,1) iterated to convergence (default).
  lloyd_max = 0,
  // The authors' recipe, for parity: 1 bit = +-sqrt(2/pi), 2 bits = {+-0.453, +-1.51},
  // b >= 3: equal-probability quantile init + exactly 100 analytic Lloyd iterations.
  reference = 1,
};
const char* codebook_recipe_name(CodebookRecipe r) noexcept;

constexpr int kMinCodeBits = 1;
constexpr int kMaxCodeBits = 8;

// 2^bits ascending centroids of the unit-variance Gaussian codebook, computed in fp64.
// Throws Error(invalid_argument) for bits outside [1, 8].
std::vector<double> unit_gaussian_codebook(int bits, CodebookRecipe recipe);

// Expected squared error per unit variance of the nearest-centroid rule for a unit codebook
// under N(0,1) (fp64 numerical integral) — used by tests and `kvbits inspect`.
double gaussian_codebook_mse(const std::vector<double>& unit_centroids);

// Per-group fp32 table derived from a unit codebook for group dimension d:
//   centroid[k] = (float)(unit[k] / sqrt(d))
//   boundary[k] = (float)(((double)centroid[k] + centroid[k+1]) / 2), k < 2^bits - 1
// The exact nearest-centroid code of y is the number of boundaries strictly below y.
struct GroupCodebook {
  int bits = 0;
  uint32_t dim = 0;
  std::vector<float> centroids;   // 2^bits
  std::vector<float> boundaries;  // 2^bits - 1
  uint32_t code_of(double y) const;  // binary search, = #{boundaries < y}
};
GroupCodebook make_group_codebook(const std::vector<double>& unit_centroids, int bits, uint32_t dim);

}  // namespace kvbits
