#include "page_layout.hpp"

#include <cstring>

namespace kvbits::cache_detail {
namespace {

// Places the four arrays one after another, each on a kArrayAlign boundary.
void place_arrays(PageLayout& l, uint32_t page_size) {
  const size_t p = page_size;
  l.k_codes = 0;
  l.k_scales = align_up(l.k_codes + p * l.k_code_bytes, kArrayAlign);
  l.v_codes = align_up(l.k_scales + p * l.n_k_scales * 2, kArrayAlign);
  const size_t v_scale_bytes = l.fp16 ? 0 : 2;
  l.v_scales = align_up(l.v_codes + p * l.v_code_bytes, kArrayAlign);
  l.page_bytes = align_up(l.v_scales + p * v_scale_bytes, kPageAlign);
}

}  // namespace

PageLayout quantized_page_layout(const HeadQuantizers& q, uint32_t page_size) {
  PageLayout l;
  l.fp16 = false;
  l.k_code_bytes = uint32_t(q.k.code_bytes());
  l.n_k_scales = uint32_t(q.k.n_groups());
  l.v_code_bytes = uint32_t(q.v.code_bytes());
  place_arrays(l, page_size);
  return l;
}

PageLayout fp16_page_layout(uint32_t head_dim, uint32_t page_size) {
  PageLayout l;
  l.fp16 = true;
  l.k_code_bytes = 2 * head_dim;
  l.n_k_scales = 0;
  l.v_code_bytes = 2 * head_dim;
  place_arrays(l, page_size);
  return l;
}

RowPtrs row_ptrs(const PageLayout& l, uint8_t* page, uint32_t row) {
  // The offsets are 16-byte aligned and every per-row size of a scale array is even, so the
  // uint16_t pointers are properly aligned.
  return RowPtrs{page + l.k_codes + size_t(row) * l.k_code_bytes,
                 reinterpret_cast<uint16_t*>(page + l.k_scales) + size_t(row) * l.n_k_scales,
                 page + l.v_codes + size_t(row) * l.v_code_bytes,
                 reinterpret_cast<uint16_t*>(page + l.v_scales) + row};
}

void copy_rows(const PageLayout& l, uint8_t* dst, const uint8_t* src, uint32_t n_rows) {
  const size_t n = n_rows;
  std::memcpy(dst + l.k_codes, src + l.k_codes, n * l.k_code_bytes);
  std::memcpy(dst + l.k_scales, src + l.k_scales, n * l.n_k_scales * 2);
  std::memcpy(dst + l.v_codes, src + l.v_codes, n * l.v_code_bytes);
  if (!l.fp16) std::memcpy(dst + l.v_scales, src + l.v_scales, n * 2);
}

void zero_rows_from(const PageLayout& l, uint32_t page_size, uint8_t* page, uint32_t first_row) {
  if (first_row >= page_size) return;
  const size_t rows = page_size - first_row;
  const RowPtrs r = row_ptrs(l, page, first_row);
  std::memset(r.k_codes, 0, rows * l.k_code_bytes);
  std::memset(r.k_scales, 0, rows * l.n_k_scales * 2);
  std::memset(r.v_codes, 0, rows * l.v_code_bytes);
  if (!l.fp16) std::memset(r.v_scales, 0, rows * 2);
}

}  // namespace kvbits::cache_detail
