#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "bench_decode_fill.hpp"

namespace kvbits::bench {
namespace {

__device__ uint32_t mix(uint64_t x) {
  x ^= x >> 33, x *= 0xff51afd7ed558ccdull, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ull, x ^= x >> 33;
  return uint32_t(x);
}

// One 32-bit word per thread (page_bytes and every array offset are multiples of 16).
__global__ void fill_kernel(uint32_t* pool, uint64_t n_words, uint32_t page_bytes, uint32_t ks0, uint32_t ks1,
                            uint32_t vs0, uint32_t vs1, uint64_t seed) {
  for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n_words; i += uint64_t(gridDim.x) * blockDim.x) {
    const uint32_t r = mix(seed * 0x9e3779b97f4a7c15ull + i);
    const uint32_t off = uint32_t((i * 4) % page_bytes);
    const bool scale = (off >= ks0 && off < ks1) || (off >= vs0 && off < vs1);
    // fp16 0x3000 = 0.125; adding 10 random mantissa bits stays below 0.25.
    pool[i] = scale ? (0x3000u | (r & 0x3FFu)) | ((0x3000u | ((r >> 16) & 0x3FFu)) << 16) : r;
  }
}

}  // namespace

void fill_pages_random(const kvbits::cuda::DecodeHead& h, uint32_t page_size, uint64_t n_pages, uint64_t seed) {
  const uint64_t n_words = n_pages * h.page_bytes / 4;
  fill_kernel<<<4096, 256>>>(const_cast<uint32_t*>(reinterpret_cast<const uint32_t*>(h.pool)), n_words,
                             uint32_t(h.page_bytes), h.k_scales, h.v_codes, h.v_scales, h.v_scales + 2 * page_size,
                             seed);
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess || cudaGetLastError() != cudaSuccess) {
    std::fprintf(stderr, "fill_pages_random: %s\n", cudaGetErrorString(e));
    std::exit(1);
  }
}

}  // namespace kvbits::bench
