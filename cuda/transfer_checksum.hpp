// kvbits CUDA — the payload checksum of a sequence export held in device memory
// (src/cache/seq_transfer_format.hpp): one thread hashes one 4096-byte chunk (FNV-1a 64).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace kvbits::cuda {

// hashes[c] = FNV-1a 64 of bytes [4096 c, min(4096 (c + 1), n)) of p, for every chunk c.
// p and hashes are device memory (hashes 8-byte aligned). Enqueues one launch on `stream`.
void chunk_checksums(const uint8_t* p, size_t n, uint64_t* hashes, cudaStream_t stream);

}  // namespace kvbits::cuda
