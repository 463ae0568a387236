// kvbits — Cache internals shared by the cache_*.cpp files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "kvbits/cache.hpp"
#include "page_layout.hpp"
#include "page_pool.hpp"
#include "sequence_table.hpp"

namespace kvbits {

struct Cache::Impl {
  Impl(const Plan& plan, const Context& ctx, const CacheConfig& cfg, uint32_t sink, uint32_t window,
       std::vector<std::unique_ptr<HeadQuantizers>> quantizers, std::vector<PageLayout> layouts);

  const Plan& plan;
  const Context& ctx;
  const uint32_t n_layers, n_heads, head_dim, page_size;
  const uint32_t sink, window;  // S and W
  std::vector<std::unique_ptr<HeadQuantizers>> quantizers;  // [layer][head]; null for fp16 layers
  std::vector<PageLayout> layouts;                          // [layer][head]
  cache_detail::PagePool pool;                              // region = layer * n_heads + head
  cache_detail::SequenceTable seqs;

  size_t slot(uint32_t layer, uint32_t head) const { return size_t(layer) * n_heads + head; }
  bool fp16_layer(uint32_t layer) const { return layouts[slot(layer, 0)].fp16; }
  // fp16 values in one (sequence, layer) sink/window block: 2 * H * (S + W) * D.
  size_t fp16_block_elems() const { return size_t(2) * n_heads * (size_t(sink) + window) * head_dim; }
  uint16_t* sink_row(const cache_detail::SeqLayer& sl, bool v, uint32_t head, uint32_t t) const;
  uint16_t* ring_row(const cache_detail::SeqLayer& sl, bool v, uint32_t head, uint32_t t) const;
  // Page table index and row of packed token t (t >= sink).
  uint32_t page_index(uint32_t t) const { return (t - sink) / page_size; }
  uint32_t page_row(uint32_t t) const { return (t - sink) % page_size; }
  // Page table entries a layer needs to hold packed tokens [sink, qend).
  size_t pages_for(uint32_t qend) const { return qend > sink ? (size_t(qend) - sink + page_size - 1) / page_size : 0; }

  void check_layer(uint32_t layer, const char* what) const;

  void append(uint32_t layer, const uint64_t* seq_ids, const uint32_t* n_tokens, size_t n_seqs, const void* k,
              const void* v, DType dtype);
  void read(uint64_t seq, uint32_t layer, uint32_t pos, uint32_t n, float* k, float* v) const;
  uint64_t fork(uint64_t src, uint32_t prefix_len);
  void remove(uint64_t seq);
  // Replaces a shared page of `seq` at page-table index `index` by a private copy holding
  // the rows of every layer that this sequence uses. A free page must be available.
  void copy_on_write(cache_detail::Sequence& seq, size_t index) noexcept;
};

}  // namespace kvbits
