// Device-side fill of benchmark page pools (bench_decode_gpu only).
#pragma once

#include <cstdint>

#include "cuda/decode.hpp"

namespace kvbits::bench {

// Fills n_pages pages of head `h`'s pool with pseudo-random bytes: every byte pattern is a valid
// code stream, so code arrays get raw random bytes; the K and V scale arrays get random positive
// normal fp16 values in [0.125, 0.25) so that no scale is NaN, inf or zero. Decode cost does not
// depend on the values. Synchronous; exits with a message on a CUDA error.
void fill_pages_random(const kvbits::cuda::DecodeHead& h, uint32_t page_size, uint64_t n_pages, uint64_t seed);

}  // namespace kvbits::bench
