// kvbits — caches over a range of a plan's KV heads (tensor parallelism, docs/transfer.md).
#pragma once

#include <cstdint>
#include <utility>

#include "kvbits/plan.hpp"

namespace kvbits::cache_detail {

// [begin, end) from CacheConfig::kv_head_begin / kv_head_end: 0/0 = every head. Throws
// Error(invalid_argument) "cache: kv_head_end 5 exceeds n_kv_heads 4" and the like.
std::pair<uint32_t, uint32_t> resolve_head_range(uint32_t begin, uint32_t end, uint32_t n_kv_heads);

// The plan cut to KV heads [begin, end): n_kv_heads = end - begin, n_q_heads = (end - begin) *
// GQA group, every quantized layer keeping the plans of those heads (rotations included) as
// they are. So head h of the cut plan quantizes exactly as head begin + h of the plan, and its
// query heads are begin * group .. end * group - 1 of the model.
Plan cut_kv_heads(const Plan& plan, uint32_t begin, uint32_t end);

}  // namespace kvbits::cache_detail
