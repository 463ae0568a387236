#include "cuda/transfer_copy.hpp"

#include "cuda/cuda_check.hpp"

namespace kvbits::cuda {
namespace {

constexpr unsigned kThreads = 256;

// Block b takes spans b, b + gridDim.x, ...: 16-byte words where both ends allow them, else
// bytes (page and row sizes are usually multiples of 16).
__global__ void copy_spans_kernel(const CopySpan* spans, size_t n) {
  for (size_t i = blockIdx.x; i < n; i += gridDim.x) {
    const CopySpan s = spans[i];
    const bool wide = (reinterpret_cast<uintptr_t>(s.src) | reinterpret_cast<uintptr_t>(s.dst) | s.bytes) % 16 == 0;
    if (wide) {
      const uint64_t words = s.bytes / 16;
      uint4* d = reinterpret_cast<uint4*>(s.dst);
      const uint4* q = reinterpret_cast<const uint4*>(s.src);
#pragma unroll 4
      for (uint64_t w = threadIdx.x; w < words; w += kThreads) d[w] = q ? q[w] : make_uint4(0, 0, 0, 0);
    } else {
      for (uint64_t b = threadIdx.x; b < s.bytes; b += kThreads) s.dst[b] = s.src ? s.src[b] : uint8_t(0);
    }
  }
}

}  // namespace

void copy_spans(const CopySpan* spans, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  const size_t blocks = n < 65536 ? n : 65536;
  copy_spans_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(spans, n);
  check_cuda(cudaGetLastError(), "transfer: copy launch");
}

}  // namespace kvbits::cuda
