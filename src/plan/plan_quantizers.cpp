// kvbits — from a plan to working quantizers: rotation materialisation and the per-head
// TQ-MSE quantizers. Kept apart from plan.cpp because it needs the rotation generator and
// the quantizer, which plan I/O does not.
#include <string>
#include <utility>

#include "kvbits/plan.hpp"
#include "kvbits/rotation.hpp"
#include "kvbits/status.hpp"

namespace kvbits {

std::vector<float> RotationSpec::materialize() const {
  switch (kind) {
    case Kind::generated: return haar_rotation(dim, seed);
    case Kind::explicit_matrix:
      if (matrix.size() != size_t(dim) * dim)
        fail(StatusCode::invalid_argument, "rotation: explicit matrix has " + std::to_string(matrix.size()) +
                                               " values, expected " + std::to_string(size_t(dim) * dim));
      return matrix;
  }
  fail(StatusCode::invalid_argument, "rotation: unknown kind " + std::to_string(int(kind)));
}

HeadQuantizers make_head_quantizers(const Plan& plan, uint32_t layer, uint32_t kv_head) {
  const HeadPlan& hp = plan.head(layer, kv_head);
  const HeadLayout layout = plan.head_layout(layer, kv_head);
  std::vector<std::vector<float>> k_rotations;
  k_rotations.reserve(hp.k_rotations.size());
  for (const RotationSpec& r : hp.k_rotations) k_rotations.push_back(r.materialize());
  return HeadQuantizers{make_key_quantizer(layout, std::move(k_rotations), plan.unit_codebooks),
                        make_value_quantizer(plan.shape.head_dim, hp.v_bits, hp.v_rotation.materialize(),
                                             plan.unit_codebooks)};
}

}  // namespace kvbits
