// kvbits CUDA — a sequence transfer's copies as one launch (cuda/device_cache_transfer.cpp):
// a table of spans between the page pool / fp16 blocks and a payload in device memory, copied
// by one block per span, so that a sequence whose pages are scattered over the pool (pages
// taken while other sequences grew) costs one launch, not one cudaMemcpyAsync per page.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace kvbits::cuda {

// `bytes` bytes from src to dst; src null: dst is zeroed. Device addresses.
struct CopySpan {
  const uint8_t* src = nullptr;
  uint8_t* dst = nullptr;
  uint64_t bytes = 0;
};

// Copies every span of `spans` (device memory, n entries; spans must not overlap one another)
// in one launch on `stream`.
void copy_spans(const CopySpan* spans, size_t n, cudaStream_t stream);

}  // namespace kvbits::cuda
