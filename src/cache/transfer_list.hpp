// kvbits — the copies that move one sequence between a cache and an export payload
// (docs/transfer.md), shared by the CPU path (cache_transfer.cpp) and the CUDA one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvbits::cache_detail {

// `bytes` bytes at payload offset `buf` and at `cache` (pool page or fp16 block: host memory on
// the CPU backend, device memory on CUDA).
struct TransferSpan {
  uint64_t buf = 0;
  uint8_t* cache = nullptr;
  size_t bytes = 0;
};

struct TransferList {
  // Adds a copy, merged into the previous one when both sides continue it (pages with
  // consecutive ids, as a sequence's fresh pages usually are): a long sequence then moves in a
  // few copies per (layer, head) instead of one per page.
  void copy(uint64_t buf, uint8_t* cache, size_t bytes) {
    if (!copies.empty()) {
      TransferSpan& last = copies.back();
      if (last.buf + last.bytes == buf && last.cache + last.bytes == cache) {
        last.bytes += bytes;
        return;
      }
    }
    copies.push_back({buf, cache, bytes});
  }
  std::vector<TransferSpan> copies;
  // Rows past a layer's packed tokens in its last page: zeroed in the payload on export (a
  // shared page may hold another sequence's rows there) and in the page on import.
  std::vector<TransferSpan> zeros;
  uint64_t payload_bytes = 0;
};

}  // namespace kvbits::cache_detail
