#include "cuda/transfer_checksum.hpp"

#include "cache/seq_transfer_format.hpp"
#include "cuda/cuda_check.hpp"

namespace kvbits::cuda {
namespace {

namespace transfer = cache_detail::transfer;

__global__ void chunk_fnv_kernel(const uint8_t* p, size_t n, uint64_t* hashes, size_t n_chunks) {
  const size_t c = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= n_chunks) return;
  const size_t first = c * transfer::kChecksumChunk;
  const size_t len = n - first < transfer::kChecksumChunk ? n - first : transfer::kChecksumChunk;
  const uint8_t* q = p + first;
  uint64_t h = transfer::kFnvOffset;
  size_t i = 0;
  // Whole 8-byte words where aligned (bytes in memory order: little-endian), then the tail.
  if (reinterpret_cast<uintptr_t>(q) % 8 == 0)
    for (; i + 8 <= len; i += 8) {
      const uint64_t w = *reinterpret_cast<const uint64_t*>(q + i);
      for (int b = 0; b < 8; ++b) h = (h ^ ((w >> (8 * b)) & 0xFFu)) * transfer::kFnvPrime;
    }
  for (; i < len; ++i) h = (h ^ q[i]) * transfer::kFnvPrime;
  hashes[c] = h;
}

}  // namespace

void chunk_checksums(const uint8_t* p, size_t n, uint64_t* hashes, cudaStream_t stream) {
  const size_t chunks = transfer::checksum_chunks(n);
  if (chunks == 0) return;
  const unsigned threads = 128;
  chunk_fnv_kernel<<<unsigned((chunks + threads - 1) / threads), threads, 0, stream>>>(p, n, hashes, chunks);
  check_cuda(cudaGetLastError(), "export/import: checksum launch");
}

}  // namespace kvbits::cuda
