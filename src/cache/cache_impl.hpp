// kvbits — Cache internals shared by the cache_*.cpp files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "kvbits/cache.hpp"
#include "page_layout.hpp"
#include "page_pool.hpp"
#include "sequence_table.hpp"

namespace kvbits {
namespace cache_detail {
class DeviceCache;
}

struct Cache::Impl {
  Impl(const Plan& plan, const Context& ctx, const CacheConfig& cfg, uint32_t sink, uint32_t window,
       std::vector<std::unique_ptr<HeadQuantizers>> quantizers, std::vector<PageLayout> layouts);
  ~Impl();

  const Plan& plan;
  const Context& ctx;
  const uint32_t n_layers, n_heads, head_dim, page_size;
  const uint32_t sink, window;  // S and W
  std::vector<std::unique_ptr<HeadQuantizers>> quantizers;  // [layer][head]; null for fp16 layers
  std::vector<PageLayout> layouts;                          // [layer][head]
  // The device half on a CUDA context (null on the CPU): owns the pool's device memory, so it
  // is built before `pool` and destroyed after everything that points into it.
  std::unique_ptr<cache_detail::DeviceCache> device;
  cache_detail::PagePool pool;                              // region = layer * n_heads + head
  cache_detail::SequenceTable seqs;
  // A cache over KV heads [head_begin, head_begin + n_heads) of full_plan (`plan` is then the
  // cut plan; both are the same plan for a cache of every head). Set before attach().
  const Plan* full_plan = nullptr;
  uint32_t head_begin = 0;
  bool head_range() const { return full_plan != &plan; }
  // Cache::plan_fingerprint, computed on first use.
  mutable std::once_flag fingerprint_once;
  mutable uint64_t fingerprint = 0;

  size_t slot(uint32_t layer, uint32_t head) const { return size_t(layer) * n_heads + head; }
  bool fp16_layer(uint32_t layer) const { return layouts[slot(layer, 0)].fp16; }
  // fp16 values in one (sequence, layer) sink/window block: 2 * H * (S + W) * D.
  size_t fp16_block_elems() const { return size_t(2) * n_heads * (size_t(sink) + window) * head_dim; }
  uint16_t* sink_row(const cache_detail::SeqLayer& sl, bool v, uint32_t head, uint32_t t) const {
    return sl.fp16.get() + sink_offset(v, head, t);
  }
  uint16_t* ring_row(const cache_detail::SeqLayer& sl, bool v, uint32_t head, uint32_t t) const {
    return sl.fp16.get() + ring_offset(v, head, t);
  }
  // Offsets (in fp16 values) of those rows inside a block (docs/cache-layout.md §10.4).
  size_t sink_offset(bool v, uint32_t head, uint32_t t) const {
    return (v ? size_t(n_heads) * sink * head_dim : 0) + (size_t(head) * sink + t) * head_dim;
  }
  size_t ring_offset(bool v, uint32_t head, uint32_t t) const {
    return size_t(2) * n_heads * sink * head_dim + (v ? size_t(n_heads) * window * head_dim : 0) +
           (size_t(head) * window + (t - sink) % window) * head_dim;
  }
  // Page table index and row of packed token t (t >= sink).
  uint32_t page_index(uint32_t t) const { return (t - sink) / page_size; }
  uint32_t page_row(uint32_t t) const { return (t - sink) % page_size; }
  // Page table entries a layer needs to hold packed tokens [sink, qend).
  size_t pages_for(uint32_t qend) const { return qend > sink ? (size_t(qend) - sink + page_size - 1) / page_size : 0; }

  void check_layer(uint32_t layer, const char* what) const;

  void append(uint32_t layer, const uint64_t* seq_ids, const uint32_t* n_tokens, size_t n_seqs, const void* k,
              const void* v, DType dtype, void* stream);
  void read(uint64_t seq, uint32_t layer, uint32_t pos, uint32_t n, float* k, float* v) const;
  uint64_t fork(uint64_t src, uint32_t prefix_len);
  void remove(uint64_t seq);
  // Rows of page-table entry `index` that `seq` holds in `layer` (what copy-on-write copies).
  uint32_t held_rows(const cache_detail::Sequence& seq, size_t index, uint32_t layer) const;
  // Copy-on-write, host memory: copies those rows of every layer from page `from` to `to`.
  void copy_page_rows(const cache_detail::Sequence& seq, size_t index, uint32_t from, uint32_t to) noexcept;
};

}  // namespace kvbits
