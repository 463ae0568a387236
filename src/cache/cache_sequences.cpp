// Cache: removing and forking sequences, and the copy-on-write of shared pages.
#include <algorithm>
#include <cstring>
#include <string>
#include <utility>

#include "cache_device.hpp"
#include "cache_impl.hpp"
#include "kvbits/status.hpp"

namespace kvbits {

using cache_detail::Sequence;
using cache_detail::SeqLayer;

void Cache::Impl::remove(uint64_t id) {
  seqs.get(id);  // Error(not_found)
  std::vector<uint32_t> freed;
  if (device) freed.reserve(seqs.get(id).pages.size());  // before anything changes: may throw
  std::unique_ptr<Sequence> seq = seqs.take(id);
  // Last page first: the free stack then hands the pages out again in the sequence's order, so a
  // sequence added after a removal gets consecutive ids where the removed one had them (its
  // transfers then merge into few copies, cache_transfer.cpp).
  for (auto it = seq->pages.rbegin(); it != seq->pages.rend(); ++it)
    if (pool.release(*it) && device) freed.push_back(*it);
  if (device) device->removed(id, freed);
}

uint64_t Cache::Impl::fork(uint64_t src_id, uint32_t prefix_len) {
  const Sequence& src = seqs.get(src_id);
  for (uint32_t l = 0; l < n_layers; ++l)
    if (prefix_len > src.layers[l].len)
      fail(StatusCode::invalid_argument, "cache: fork: prefix_len " + std::to_string(prefix_len) + " exceeds layer " +
                                             std::to_string(l) + "'s length " + std::to_string(src.layers[l].len) +
                                             " of sequence " + std::to_string(src_id));
  seqs.require_room();
  uint64_t id = 0;
  try {
    auto fork = std::make_unique<Sequence>();
    fork->layers.resize(n_layers);
    size_t shared_pages = 0;
    for (uint32_t l = 0; l < n_layers; ++l) {
      const SeqLayer& from = src.layers[l];
      SeqLayer& to = fork->layers[l];
      to.len = prefix_len;
      // Tokens src already packed stay packed: the fork shares their pages, never re-encodes.
      to.qend = std::min(from.qend, prefix_len);
      shared_pages = std::max(shared_pages, pages_for(to.qend));
      if (prefix_len == 0 || !from.fp16) continue;
      const uint32_t sink_rows = std::min(prefix_len, sink), ring_first = std::max(to.qend, sink);
      if (device) {
        to.fp16 = device->new_fp16_block();
        device->copy_fork_rows(to.fp16.get(), from.fp16.get(), sink_rows, ring_first, prefix_len);
        continue;
      }
      to.fp16 = cache_detail::host_fp16_block(fp16_block_elems());
      const size_t row_bytes = size_t(head_dim) * 2;
      for (uint32_t h = 0; h < n_heads; ++h)
        for (int tensor = 0; tensor < 2; ++tensor) {
          const bool is_v = tensor == 1;
          for (uint32_t t = 0; t < sink_rows; ++t)
            std::memcpy(sink_row(to, is_v, h, t), sink_row(from, is_v, h, t), row_bytes);
          for (uint32_t t = ring_first; t < prefix_len; ++t)
            std::memcpy(ring_row(to, is_v, h, t), ring_row(from, is_v, h, t), row_bytes);
        }
    }
    fork->pages.assign(src.pages.begin(), src.pages.begin() + std::ptrdiff_t(shared_pages));
    if (device) device->mirror_sequence(seqs.next_id(), *fork);
    id = seqs.insert(std::move(fork));
  } catch (const std::bad_alloc&) {
    fail(StatusCode::out_of_memory, "cache: out of memory forking sequence " + std::to_string(src_id));
  }
  for (uint32_t page : seqs.find(id)->pages) pool.retain(page);
  return id;
}

uint32_t Cache::Impl::held_rows(const Sequence& seq, size_t index, uint32_t layer) const {
  const uint64_t page_first = uint64_t(sink) + uint64_t(index) * page_size;  // first token of the page
  const uint64_t qend = seq.layers[layer].qend;
  return qend > page_first ? uint32_t(std::min<uint64_t>(qend - page_first, page_size)) : 0;
}

void Cache::Impl::copy_page_rows(const Sequence& seq, size_t index, uint32_t from, uint32_t to) noexcept {
  for (uint32_t l = 0; l < n_layers; ++l) {
    // Only the rows this sequence owns; rows of other sharers stay out (the copy is zeroed).
    const uint32_t rows = held_rows(seq, index, l);
    if (rows == 0) continue;
    for (uint32_t h = 0; h < n_heads; ++h) {
      const size_t r = slot(l, h);
      cache_detail::copy_rows(layouts[r], pool.page(r, to), pool.page(r, from), rows);
    }
  }
}

}  // namespace kvbits
