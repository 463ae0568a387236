#include "page_pool.hpp"

#include <cstring>
#include <new>
#include <string>

#include "kvbits/status.hpp"

#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h>
#endif

namespace kvbits::cache_detail {
namespace {

constexpr std::align_val_t kPoolAlign{64};

// Physical memory of this machine, or 0 when unknown. A pool larger than that can never be
// backed and is reported up front instead of failing later under overcommit.
uint64_t physical_memory_bytes() {
#if defined(_SC_PHYS_PAGES) && defined(_SC_PAGESIZE)
  const long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGESIZE);
  if (pages > 0 && size > 0) return uint64_t(pages) * uint64_t(size);
#endif
  return 0;
}

[[noreturn]] void too_big(const std::string& what) {
  fail(StatusCode::out_of_memory, "cache: page pool of " + what + " cannot be allocated");
}

}  // namespace

uint64_t PagePool::pool_bytes(const std::vector<size_t>& region_page_bytes, uint64_t max_pages) {
  // Every product and sum is checked: max_pages and the page sizes come from the caller.
  uint64_t column = 0;
  for (size_t b : region_page_bytes)
    if (__builtin_add_overflow(column, uint64_t(b), &column)) too_big("more than 2^64 bytes per page");
  uint64_t total = 0;
  if (__builtin_mul_overflow(column, max_pages, &total))
    too_big(std::to_string(max_pages) + " pages x " + std::to_string(column) + " bytes (overflows 64 bits)");
  if (total == 0) fail(StatusCode::invalid_argument, "cache: page pool would be empty");
  if (total > uint64_t(SIZE_MAX) / 2) too_big(std::to_string(total) + " bytes");
  return total;
}

PagePool::PagePool(const std::vector<size_t>& region_page_bytes, uint64_t max_pages, uint8_t* external_base)
    : region_page_bytes_(region_page_bytes), max_pages_(max_pages), owned_(external_base == nullptr) {
  const uint64_t total = pool_bytes(region_page_bytes_, max_pages);
  const uint64_t phys = physical_memory_bytes();
  if (owned_ && phys != 0 && total > phys)
    too_big(std::to_string(total) + " bytes (" + std::to_string(max_pages) + " pages x " +
            std::to_string(total / max_pages) + " bytes; physical memory " + std::to_string(phys) + " bytes)");
  column_bytes_ = size_t(total / max_pages);
  total_bytes_ = total;
  region_offset_.resize(region_page_bytes_.size());
  size_t offset = 0;
  for (size_t r = 0; r < region_page_bytes_.size(); ++r) {
    region_offset_[r] = offset;
    offset += region_page_bytes_[r] * size_t(max_pages);
  }
  try {
    refs_.assign(size_t(max_pages), 0);
    free_.resize(size_t(max_pages));
  } catch (const std::bad_alloc&) {
    too_big("bookkeeping for " + std::to_string(max_pages) + " pages");
  }
  for (size_t i = 0; i < free_.size(); ++i) free_[i] = uint32_t(max_pages - 1 - i);
  if (!owned_) {
    base_ = external_base;
    return;
  }
  base_ = static_cast<uint8_t*>(::operator new(size_t(total), kPoolAlign, std::nothrow));
  if (base_ == nullptr) too_big(std::to_string(total) + " bytes");
}

PagePool::PagePool(const std::vector<size_t>& region_page_bytes, uint64_t max_pages)
    : PagePool(region_page_bytes, max_pages, nullptr) {}

PagePool::~PagePool() {
  if (owned_) ::operator delete(base_, kPoolAlign);
}

uint32_t PagePool::allocate() noexcept {
  const uint32_t id = free_.back();
  free_.pop_back();
  refs_[id] = 1;
  if (owned_)
    for (size_t r = 0; r < region_page_bytes_.size(); ++r) std::memset(page(r, id), 0, region_page_bytes_[r]);
  return id;
}

void PagePool::retain(uint32_t id) noexcept { ++refs_[id]; }

bool PagePool::release(uint32_t id) noexcept {
  if (--refs_[id] != 0) return false;
  free_.push_back(id);
  return true;
}

}  // namespace kvbits::cache_detail
