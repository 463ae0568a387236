// kvbits — TurboQuant-MSE encode/decode for one (layer, KV head), K or V.
//
// K: dims are permuted into hp order (head_layout.hpp); each bit-width group g is normalised
// by its own norm, rotated by its own Haar matrix R_g (y = R_g x_g / ||x_g||), and every
// coordinate is mapped to its exact nearest centroid. The stored scale is the
// norm-corrected ||x_g|| / ||c(codes_g)|| in fp16, so dequantisation is scale * centroid.
// V: the same with one group of all D dims at the V width and no permutation.
//
// Canonical arithmetic (bit-identical on CPU and GPU; see docs/cache-layout.md §Encode):
//   nsq   = sum_j x_j*x_j               fp64, j ascending (products of fp32 are exact)
//   n     = sqrt(nsq)
//   y_r   = (sum_j R[r][j]*x_j) / n     fp64, j ascending
//   code  = #{ fp32 boundaries < y_r }
//   scale = double_to_half(n / sqrt(sum_r c[code_r]^2))   (n == 0: codes of 0.0, scale 0)
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kvbits/codebook.hpp"
#include "kvbits/head_layout.hpp"

namespace kvbits {

class TqQuantizer {
 public:
  // groups: contiguous over slots [0, D), strictly ascending widths; slot_dim: slot -> original
  // dim (a permutation of [0, D), D <= 1024); rotations[g]: dims x dims row-major fp32;
  // unit_codebooks[bits]: unit Gaussian centroids for each width used (index = bits, entries
  // for unused widths may be empty). Throws Error(invalid_argument) naming the first problem.
  TqQuantizer(std::vector<KeyGroup> groups, std::vector<uint32_t> slot_dim,
              std::vector<std::vector<float>> rotations,
              const std::vector<std::vector<double>>& unit_codebooks);

  uint32_t dim() const { return uint32_t(slot_dim_.size()); }
  size_t n_groups() const { return groups_.size(); }
  const std::vector<KeyGroup>& groups() const { return groups_; }
  const std::vector<uint32_t>& slot_dim() const { return slot_dim_; }
  const std::vector<float>& rotation(size_t g) const { return rotations_[g]; }
  const GroupCodebook& codebook(size_t g) const { return codebooks_[g]; }
  // Packed code bytes per token: sum over groups of ceil(dims*bits/8) (groups in order).
  size_t code_bytes() const { return code_bytes_; }
  size_t group_byte_offset(size_t g) const { return group_offsets_[g]; }

  // Unpacked codes (one per hp slot) and fp16 scales (one per group) for one vector x[D].
  // x must be finite: encode is the hot path and does not check; the cache's append validates.
  void encode_codes(const float* x, uint8_t* codes, uint16_t* scales) const;
  // encode_codes + pack: packed[code_bytes()], scales[n_groups()].
  void encode(const float* x, uint8_t* packed, uint16_t* scales) const;
  // Rotated-domain values per hp slot: half_to_float(scale_g) * centroid (what kernels dot with R q).
  void dequantize_rotated(const uint8_t* packed, const uint16_t* scales, float* y) const;
  // Full reconstruction in the original dim order: x[slot_dim[s]] = (R_g^T y_g)[s], fp64 sums.
  void decode(const uint8_t* packed, const uint16_t* scales, float* x) const;
  // q' = R q per group in hp order (fp64 sums, rounded to fp32), so that q'.y == q.x_hat.
  void rotate_query(const float* q, float* q_rot) const;

 private:
  std::vector<KeyGroup> groups_;
  std::vector<uint32_t> slot_dim_;
  std::vector<std::vector<float>> rotations_;
  std::vector<GroupCodebook> codebooks_;
  std::vector<size_t> group_offsets_;
  size_t code_bytes_ = 0;
};

// Key quantizer of one head: layout from the plan, one rotation per group.
TqQuantizer make_key_quantizer(const HeadLayout& layout, std::vector<std::vector<float>> rotations,
                               const std::vector<std::vector<double>>& unit_codebooks);
// Value quantizer: one group of all D dims at `bits`, identity slot order.
TqQuantizer make_value_quantizer(uint32_t head_dim, int bits, std::vector<float> rotation,
                                 const std::vector<std::vector<double>>& unit_codebooks);

}  // namespace kvbits
