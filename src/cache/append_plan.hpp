// kvbits — what an append will do, worked out on the host before anything changes: where
// every token goes, which tokens get packed, and which pages are taken (new ones and copies of
// shared ones), in the order the commit takes them. The CPU append (cache_append.cpp) and the
// CUDA append (cuda/device_cache.cpp) share it, so both take the same pages in the same order.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "cache_impl.hpp"
#include "kvbits/status.hpp"

namespace kvbits::cache_detail {

// What one sequence of the call will become.
struct SeqAppend {
  Sequence* seq = nullptr;
  uint64_t id = 0;
  size_t first_row = 0;  // row of its first token in k and v (a row = n_kv_heads * D values)
  uint32_t len0 = 0, qend0 = 0, len1 = 0, qend1 = 0;
  uint32_t qstart = 0;       // tokens [qstart, qend1) get packed by this call
  size_t first_packed = 0;   // index of its first packed token in the call's list
  Fp16Block new_block;       // the fp16 block, when the layer has none yet
  uint32_t n_packed() const { return qend1 > qstart ? qend1 - qstart : 0; }
};

// One token packed by this call.
struct PackedToken {
  uint32_t entry;  // index into AppendPlan::entries
  uint32_t t;      // position in the sequence
};

// One page a commit takes, in commit order: a new page-table entry, or a private copy of a
// shared page about to be written (copy-on-write).
struct PageStep {
  uint32_t entry = 0;     // index into AppendPlan::entries
  uint32_t index = 0;     // page-table index
  uint32_t page = 0;      // the id PagePool::allocate() will return for it
  bool copy = false;
  uint32_t old_page = 0;  // copy: the shared page it replaces
};

struct AppendPlan {
  uint32_t layer = 0;
  DType dtype = DType::f32;
  bool layer_fp16 = false;
  std::vector<SeqAppend> entries;
  size_t rows = 0;                   // input rows (sum of n_tokens)
  std::vector<uint32_t> row_entry;   // row -> entry
  std::vector<PackedToken> packed;   // every token the call packs, entry after entry
  uint64_t pages_needed = 0;         // new pages and copies
  bool pages_fit = false;            // pages_needed <= free pages; page_steps is then complete
  std::vector<PageStep> page_steps;

  uint32_t row_token(size_t r) const { return entries[row_entry[r]].len0 + uint32_t(r - entries[row_entry[r]].first_row); }
};

// "cache: append: <message>; nothing was appended"
[[noreturn]] void append_error(StatusCode code, const std::string& message);

// Checks the call's structure (layer, pointers, dtype, unknown / repeated sequences, zero or
// too many tokens) and plans positions, packed tokens and pages. Reads no value of k or v.
// Throws the errors Cache::append documents for those checks; the cache is unchanged.
AppendPlan plan_append(const Cache::Impl& m, uint32_t layer, const uint64_t* seq_ids, const uint32_t* n_tokens,
                       size_t n_seqs, const void* k, const void* v, DType dtype);

// Error(capacity_exhausted) "layer L needs N new pages, M free (pool of P pages)".
[[noreturn]] void capacity_error(const Cache::Impl& m, const AppendPlan& plan);

// Commits the page steps to the host bookkeeping (pool, page tables). For a copy, on_copy(step)
// runs after the new page is taken and before the shared one is released, while every
// layer's qend still has its value from before the call. Never fails (capacity reserved).
template <class OnCopy>
void commit_page_steps(Cache::Impl& m, AppendPlan& plan, OnCopy&& on_copy) noexcept {
  for (const PageStep& s : plan.page_steps) {
    std::vector<uint32_t>& pages = plan.entries[s.entry].seq->pages;
    const uint32_t id = m.pool.allocate();  // == s.page: nothing else changed the pool since planning
    if (!s.copy) {
      pages.push_back(id);
      continue;
    }
    on_copy(s);
    m.pool.release(s.old_page);
    pages[s.index] = id;
  }
}

}  // namespace kvbits::cache_detail
