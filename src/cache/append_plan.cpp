// Planning an append: positions, packed tokens and pages (append_plan.hpp).
//
// Where token t of a layer goes (S sink tokens, W window tokens, see cache.hpp):
//   t < S                fp16 sink row t
//   S <= t < qend        packed page row
//   qend <= t < len      fp16 ring row (t - S) % W
// After the append qend = max(old qend, S, len - W): the oldest ring tokens, and new tokens
// that would not fit the ring, are packed.
#include "append_plan.hpp"

#include <algorithm>
#include <unordered_map>
#include <utility>

#include "kvbits/status.hpp"

namespace kvbits::cache_detail {
namespace {

constexpr uint64_t kMaxSequenceTokens = 0xFFFFFFFFull;  // positions are uint32

// Page steps in commit order and the number of pages they take. Ids are assigned only while
// they fit the free list.
void plan_pages(const Cache::Impl& m, AppendPlan& plan) {
  std::unordered_map<uint32_t, uint32_t> released;  // shared pages given up by earlier entries
  const uint64_t free = m.pool.free_pages();
  for (uint32_t e = 0; e < plan.entries.size(); ++e) {
    const SeqAppend& p = plan.entries[e];
    if (p.n_packed() == 0) continue;
    const std::vector<uint32_t>& pages = p.seq->pages;
    for (size_t idx = m.page_index(p.qstart); idx < m.pages_for(p.qend1); ++idx) {
      PageStep s;
      s.entry = e;
      s.index = uint32_t(idx);
      if (idx < pages.size()) {
        const uint32_t old = pages[idx];
        const uint32_t refs = m.pool.refcount(old);
        if (refs <= 1) continue;  // its own page: written in place (no map entry: the common case)
        uint32_t& gone = released[old];
        if (refs - gone <= 1) continue;  // the earlier holders gave it up: this one owns it
        ++gone;
        s.copy = true;
        s.old_page = old;
      }
      s.page = plan.pages_needed < free ? m.pool.next_free(plan.pages_needed) : 0;
      ++plan.pages_needed;
      plan.page_steps.push_back(s);
    }
  }
  plan.pages_fit = plan.pages_needed <= free;
  if (!plan.pages_fit) plan.page_steps.clear();
}

}  // namespace

void append_error(StatusCode code, const std::string& message) {
  fail(code, "cache: append: " + message + "; nothing was appended");
}

AppendPlan plan_append(const Cache::Impl& m, uint32_t layer, const uint64_t* seq_ids, const uint32_t* n_tokens,
                       size_t n_seqs, const void* k, const void* v, DType dtype) {
  m.check_layer(layer, "append");
  if (seq_ids == nullptr) fail(StatusCode::null_pointer, "cache: append: seqs is null");
  if (n_tokens == nullptr) fail(StatusCode::null_pointer, "cache: append: n_tokens is null");
  if (k == nullptr) fail(StatusCode::null_pointer, "cache: append: k is null");
  if (v == nullptr) fail(StatusCode::null_pointer, "cache: append: v is null");
  if (n_seqs == 0) append_error(StatusCode::invalid_argument, "no sequences given (n_seqs = 0)");
  if (dtype != DType::f32 && dtype != DType::f16 && dtype != DType::bf16)
    append_error(StatusCode::invalid_argument, "unknown dtype " + std::to_string(int(dtype)));
  {
    std::vector<std::pair<uint64_t, size_t>> sorted(n_seqs);
    for (size_t i = 0; i < n_seqs; ++i) sorted[i] = {seq_ids[i], i};
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 1; i < n_seqs; ++i)
      if (sorted[i].first == sorted[i - 1].first)
        append_error(StatusCode::invalid_argument, "sequence " + std::to_string(sorted[i].first) +
                                                       " appears twice (entries " + std::to_string(sorted[i - 1].second) +
                                                       " and " + std::to_string(sorted[i].second) + ")");
  }
  AppendPlan plan;
  plan.layer = layer;
  plan.dtype = dtype;
  plan.layer_fp16 = m.fp16_layer(layer);
  plan.entries.resize(n_seqs);
  for (size_t i = 0; i < n_seqs; ++i) {
    SeqAppend& p = plan.entries[i];
    p.id = seq_ids[i];
    p.seq = m.seqs.find(p.id);
    if (p.seq == nullptr)
      append_error(StatusCode::not_found,
                   "no sequence with id " + std::to_string(p.id) + " (entry " + std::to_string(i) + ")");
    if (n_tokens[i] == 0)
      append_error(StatusCode::invalid_argument,
                   "n_tokens[" + std::to_string(i) + "] is 0 (sequence " + std::to_string(p.id) + ")");
    const SeqLayer& sl = p.seq->layers[layer];
    if (uint64_t(sl.len) + n_tokens[i] > kMaxSequenceTokens)
      append_error(StatusCode::invalid_argument, "sequence " + std::to_string(p.id) + " would exceed 2^32 - 1 tokens");
    p.first_row = plan.rows;
    plan.rows += n_tokens[i];
    p.len0 = sl.len;
    p.qend0 = sl.qend;
    p.len1 = sl.len + n_tokens[i];
    const uint32_t oldest_in_window = p.len1 > m.window ? p.len1 - m.window : 0;
    p.qend1 = p.len1 <= m.sink ? p.len1 : std::max({p.qend0, m.sink, oldest_in_window});
    p.qstart = std::max(p.qend0, m.sink);
    p.first_packed = plan.packed.size();
    for (uint32_t j = 0; j < p.n_packed(); ++j) plan.packed.push_back({uint32_t(i), p.qstart + j});
  }
  plan.row_entry.resize(plan.rows);
  for (size_t i = 0; i < n_seqs; ++i)
    std::fill_n(plan.row_entry.begin() + std::ptrdiff_t(plan.entries[i].first_row), n_tokens[i], uint32_t(i));
  plan_pages(m, plan);
  return plan;
}

void capacity_error(const Cache::Impl& m, const AppendPlan& plan) {
  append_error(StatusCode::capacity_exhausted,
               "layer " + std::to_string(plan.layer) + " needs " + std::to_string(plan.pages_needed) +
                   " new pages, " + std::to_string(m.pool.free_pages()) + " free (pool of " +
                   std::to_string(m.pool.max_pages()) + " pages)");
}

}  // namespace kvbits::cache_detail
