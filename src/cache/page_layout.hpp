// kvbits — byte layout of one page of one (layer, KV head) (docs/cache-layout.md §Pages).
#pragma once

#include <cstddef>
#include <cstdint>

#include "kvbits/cache.hpp"
#include "kvbits/plan.hpp"

namespace kvbits::cache_detail {

constexpr size_t kArrayAlign = 16;  // every array inside a page starts at a multiple of this
constexpr size_t kPageAlign = 64;   // page_bytes is a multiple of this: pages start on cache lines

constexpr size_t align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }

// Quantized layer: the sizes come from the (layer, KV head)'s quantizers.
PageLayout quantized_page_layout(const HeadQuantizers& q, uint32_t page_size);
// Layer kept at 16 bits: K and V rows of D fp16 values.
PageLayout fp16_page_layout(uint32_t head_dim, uint32_t page_size);

// Addresses of one token row inside a page (`page` points at the page's first byte).
struct RowPtrs {
  uint8_t* k_codes;   // k_code_bytes (fp16 layer: D fp16 values)
  uint16_t* k_scales; // n_k_scales
  uint8_t* v_codes;   // v_code_bytes (fp16 layer: D fp16 values)
  uint16_t* v_scales; // 1 (fp16 layer: none)
};
RowPtrs row_ptrs(const PageLayout& l, uint8_t* page, uint32_t row);

// Copies rows [0, n_rows) of every array from one page to another.
void copy_rows(const PageLayout& l, uint8_t* dst, const uint8_t* src, uint32_t n_rows);

// Zeroes rows [first_row, page_size) of every array of the page.
void zero_rows_from(const PageLayout& l, uint32_t page_size, uint8_t* page, uint32_t first_row);

}  // namespace kvbits::cache_detail
