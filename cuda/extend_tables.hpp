// kvbits CUDA — the K rotation tables extend_attention rotates queries with.
//
// For each KV head of a packed layer: its K groups' rotations R_g, stored transposed (column j
// of R_g contiguous, so that the pre-pass reads them coalesced), back to back in group order,
// and the slot -> dim map of its hp order. Built once per (plan, layer), like DecodeTables.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/device_cache_mirror.hpp"
#include "cuda/extend.hpp"
#include "kvbits/tq_mse.hpp"

namespace kvbits::cuda {

class ExtendQueryTables {
 public:
  // One K quantizer per KV head, all of the same dim. Error(invalid_argument) otherwise,
  // Error(device_error) when the upload fails.
  explicit ExtendQueryTables(const std::vector<const TqQuantizer*>& k_quantizers);
  // Sets k_rotations, k_rotation_offset and k_slot_dim.
  void fill(ExtendParams& p) const;

  // The host tables (tests): transposed rotations, per-head offsets, slot dims.
  const std::vector<float>& rotations() const { return rot_host_; }
  const std::vector<uint32_t>& offsets() const { return off_host_; }

 private:
  std::vector<float> rot_host_;
  std::vector<uint32_t> off_host_, slot_host_;
  DeviceBlock rot_, off_, slot_;
};

}  // namespace kvbits::cuda
