#include "head_range.hpp"

#include <string>

#include "kvbits/status.hpp"

namespace kvbits::cache_detail {

std::pair<uint32_t, uint32_t> resolve_head_range(uint32_t begin, uint32_t end, uint32_t n_kv_heads) {
  if (begin == 0 && end == 0) return {0, n_kv_heads};
  if (end > n_kv_heads)
    fail(StatusCode::invalid_argument, "cache: kv_head_end " + std::to_string(end) + " exceeds the plan's " +
                                           std::to_string(n_kv_heads) + " KV heads");
  if (begin >= end)
    fail(StatusCode::invalid_argument, "cache: kv_head_begin " + std::to_string(begin) +
                                           " must be below kv_head_end " + std::to_string(end) +
                                           " (0/0 = every KV head)");
  return {begin, end};
}

Plan cut_kv_heads(const Plan& plan, uint32_t begin, uint32_t end) {
  Plan cut = plan;
  const uint32_t group = plan.shape.gqa_group();
  cut.shape.n_kv_heads = end - begin;
  cut.shape.n_q_heads = (end - begin) * group;
  for (LayerPlan& layer : cut.layers) {
    if (layer.keep_fp16) continue;
    layer.heads.erase(layer.heads.begin() + end, layer.heads.end());
    layer.heads.erase(layer.heads.begin(), layer.heads.begin() + begin);
  }
  return cut;
}

}  // namespace kvbits::cache_detail
