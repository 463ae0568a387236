// Online (streaming) softmax of a work item's queries, fp32: per query a running max m, a
// running sum l of exp(s - m), and two output accumulators scaled by the same exp(s - m):
// acc_rot for packed V (rotated basis) and acc_orig for fp16 V (original basis).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvbits::attn {

class OnlineSoftmax {
 public:
  void reset(uint32_t n, uint32_t dim);

  // Folds the logits s[0, count) of query i (token order) into its state and overwrites them
  // with their weights exp(s - m) relative to the updated max. When the max grows, l and both
  // accumulators are rescaled first by exp(m_old - m_new).
  void absorb(uint32_t i, float* s, uint32_t count);

  float* acc_rot(uint32_t i) { return acc_rot_.data() + size_t(i) * dim_; }
  float* acc_orig(uint32_t i) { return acc_orig_.data() + size_t(i) * dim_; }
  float* acc_rot_all() { return acc_rot_.data(); }
  float* acc_orig_all() { return acc_orig_.data(); }

  // out = (R_v^T acc_rot + acc_orig) / l, in fp64 and rounded once to fp32 (v_rotation: the
  // dim x dim row-major R_v, or null when nothing was packed); lse = m + ln(l).
  // `tmp`: dim doubles.
  void finish(uint32_t i, const float* v_rotation, float* out, float* lse, double* tmp) const;

 private:
  uint32_t n_ = 0, dim_ = 0;
  std::vector<float> m_, l_, acc_rot_, acc_orig_;
};

}  // namespace kvbits::attn
