#include "cuda/extend_tables.hpp"

#include <string>

#include "kvbits/status.hpp"

namespace kvbits::cuda {

ExtendQueryTables::ExtendQueryTables(const std::vector<const TqQuantizer*>& k_quantizers) {
  if (k_quantizers.empty()) fail(StatusCode::invalid_argument, "ExtendQueryTables: no KV head");
  const uint32_t D = k_quantizers[0]->dim();
  for (size_t h = 0; h < k_quantizers.size(); ++h) {
    const TqQuantizer& k = *k_quantizers[h];
    if (k.dim() != D) fail(StatusCode::invalid_argument, "ExtendQueryTables: head " + std::to_string(h) + " has another dim");
    off_host_.push_back(uint32_t(rot_host_.size()));
    for (size_t g = 0; g < k.n_groups(); ++g) {
      const uint32_t d = k.groups()[g].dims;
      const std::vector<float>& r = k.rotation(g);  // d x d row-major
      for (uint32_t j = 0; j < d; ++j)
        for (uint32_t i = 0; i < d; ++i) rot_host_.push_back(r[size_t(i) * d + j]);
    }
    slot_host_.insert(slot_host_.end(), k.slot_dim().begin(), k.slot_dim().end());
  }
  rot_ = DeviceBlock(rot_host_.data(), rot_host_.size() * 4);
  off_ = DeviceBlock(off_host_.data(), off_host_.size() * 4);
  slot_ = DeviceBlock(slot_host_.data(), slot_host_.size() * 4);
}

void ExtendQueryTables::fill(ExtendParams& p) const {
  p.k_rotations = rot_.as<float>();
  p.k_rotation_offset = off_.as<uint32_t>();
  p.k_slot_dim = slot_.as<uint32_t>();
}

}  // namespace kvbits::cuda
