// kvbits — the page pool: one 64-byte aligned allocation, made once, holding for every
// (layer, KV head) an array of max_pages page slots; a free list and reference counts.
//
// A page id names the same slot in every (layer, KV head) region ("a page column"), so one
// id serves every layer of a sequence. The free list is a stack (ids 0, 1, 2, ... first, then
// the most recently freed), so allocation order is deterministic. A host pool zeroes the column
// on allocation, which keeps the bytes of a page a pure function of what was appended. A pool
// in device memory is only bookkept here: its owner (the CUDA cache) keeps free pages zero.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace kvbits::cache_detail {

class PagePool {
 public:
  // region_page_bytes[r]: bytes of one page in region r (each a multiple of 64).
  // Error(out_of_memory) with the byte count when the total overflows, is absurd or cannot
  // be allocated.
  PagePool(const std::vector<size_t>& region_page_bytes, uint64_t max_pages);
  // Bookkeeping over memory someone else owns (device memory of pool_bytes() bytes, free
  // pages kept zero by the owner): no allocation, and allocate() does not touch the bytes.
  PagePool(const std::vector<size_t>& region_page_bytes, uint64_t max_pages, uint8_t* external_base);
  // Total bytes of a pool; the same checks and errors as the constructor, without allocating.
  static uint64_t pool_bytes(const std::vector<size_t>& region_page_bytes, uint64_t max_pages);
  ~PagePool();
  PagePool(const PagePool&) = delete;
  PagePool& operator=(const PagePool&) = delete;

  uint64_t max_pages() const { return max_pages_; }
  uint64_t free_pages() const { return free_.size(); }
  uint64_t used_pages() const { return max_pages_ - free_.size(); }
  uint64_t total_bytes() const { return total_bytes_; }
  size_t column_bytes() const { return column_bytes_; }  // one page in every region
  size_t region_offset(size_t region) const { return region_offset_[region]; }
  size_t region_page_bytes(size_t region) const { return region_page_bytes_[region]; }
  uint8_t* base() const { return base_; }
  // The id that the (k+1)-th next allocate() returns when nothing is released in between;
  // k < free_pages().
  uint32_t next_free(uint64_t k) const { return free_[free_.size() - 1 - size_t(k)]; }

  uint8_t* page(size_t region, uint32_t id) const {
    return base_ + region_offset_[region] + size_t(id) * region_page_bytes_[region];
  }
  uint32_t refcount(uint32_t id) const { return refs_[id]; }

  // The caller has checked free_pages(): these never fail.
  uint32_t allocate() noexcept;           // refcount 1, every byte of the column zero
  void retain(uint32_t id) noexcept;      // one more owner
  bool release(uint32_t id) noexcept;     // one owner fewer; at 0 the page is free again (true)

 private:
  std::vector<size_t> region_page_bytes_, region_offset_;
  uint64_t max_pages_ = 0;
  uint64_t total_bytes_ = 0;
  size_t column_bytes_ = 0;
  uint8_t* base_ = nullptr;
  bool owned_ = true;  // base_ allocated here (host memory)
  std::vector<uint32_t> refs_;
  std::vector<uint32_t> free_;  // a stack; capacity max_pages, so pushes never allocate
};

}  // namespace kvbits::cache_detail
