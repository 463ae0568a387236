// kvbits CUDA — what the append launches read, built on the host without any CUDA call:
// per (layer, KV head) an AppendHead and its tables (once per cache), and per call the
// descriptors of an append plan. cuda/device_cache.cpp uploads them to the device;
// tests/cache/test_append_emulated.cpp runs the kernel bodies on them in host memory.
#pragma once

#include <cstdint>
#include <vector>

#include "cache/append_plan.hpp"
#include "cuda/append.hpp"

namespace kvbits::cuda {

struct AppendTables {
  std::vector<AppendHead> heads;  // [n_layers * n_heads]; pool pointers set, tables after place()
  std::vector<uint8_t> data;      // every head's slot order, rotations, centroids, boundaries
  std::vector<uint32_t> max_cb;   // per layer: the largest AppendHead::n_cb
  // Points every head's table pointers into a copy of `data` at `base` (device or host).
  void place(const uint8_t* base);

  struct At {
    size_t slot = 0, rot = 0, cb = 0;  // element offsets of one head's tables
  };
  std::vector<At> at;                            // per head
  size_t o_slot = 0, o_rot = 0, o_cent = 0, o_bnd = 0;  // byte offsets of the four arrays in data
};

// Tables of every (layer, KV head) of a cache whose pool starts at pool_base (the regions of
// docs/cache-layout.md §10.1). Rotations are stored in j-blocks of four (append.hpp).
AppendTables build_append_tables(const Cache::Impl& m, uint8_t* pool_base);

struct AppendCall {
  std::vector<AppendEntry> entries;
  std::vector<AppendToken> tokens;
  std::vector<AppendCopy> copies;
  std::vector<uint32_t> copy_rows;
  uint32_t code_stride = 0, scale_stride = 0;  // staging strides (append.hpp)
};

// Page ids of an entry's page-table indices once the plan is committed. An entry's page steps
// are consecutive in plan.page_steps and ascend by index: a look-up is a binary search in them,
// so that a prefill of thousands of tokens over hundreds of pages stays linear.
class FinalPages {
 public:
  explicit FinalPages(const cache_detail::AppendPlan& plan);
  uint32_t operator()(uint32_t e, size_t idx) const;  // page of index idx of entry e
  // The entry's steps: plan.page_steps[begin(e), end(e)).
  size_t begin(uint32_t e) const { return first_[e]; }
  size_t end(uint32_t e) const { return first_[e + 1]; }

 private:
  const cache_detail::AppendPlan& plan_;
  std::vector<size_t> first_;  // n_entries + 1
};

// The descriptors of a planned append. An entry's fp16 block is its new block if the plan has
// one, else the sequence's; token pages and copies are filled only when plan.pages_fit.
AppendCall describe_append(const Cache::Impl& m, const cache_detail::AppendPlan& plan);

// Throws what the CPU backend throws for the problem an error key names (AppendError):
// Error(invalid_argument) with the same message.
[[noreturn]] void throw_append_error(const Cache::Impl& m, const cache_detail::AppendPlan& plan,
                                     unsigned long long key);

}  // namespace kvbits::cuda
