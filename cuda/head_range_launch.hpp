// kvbits CUDA — launch shapes for a cache over a range of KV heads (docs/transfer.md).
//
// The decode and extend launchers choose how many splits a sequence's tokens get (and decode
// its kernel variant) from the number of KV heads in the launch and the largest head layout.
// Another split count sums the same products in another order, so a cache over heads [b, e)
// would differ in the last bits from a cache of every head. This keeps them equal: it describes
// every head of the full plan (layouts only, no tables) and makes a head-range launch take the
// split count and variant a launch over all heads would take.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/decode.hpp"
#include "cuda/extend.hpp"
#include "kvbits/plan.hpp"

namespace kvbits::cuda {

class HeadRangeLaunch {
 public:
  HeadRangeLaunch(const Plan& full, uint32_t page_size);

  // p describes a launch over some of the heads (n_seqs, max_len, sm_count set): sets
  // p.splits and p.variant to what the same launch over every head of the plan would use.
  void match_decode(DecodeParams& p, uint32_t layer) const;
  // The same for extend (e.total_q and e.max_q_len set): sets e.base.splits.
  void match_extend(ExtendParams& e) const;

 private:
  uint32_t n_kv_heads_ = 0, n_q_heads_ = 0;
  std::vector<std::vector<DecodeHead>> heads_;  // per layer, every KV head (layout fields only)
};

}  // namespace kvbits::cuda
