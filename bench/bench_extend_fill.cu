#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#include "bench_extend_fill.hpp"

namespace kvbits::bench {
namespace {

__device__ uint32_t mix32(uint64_t x) {
  x ^= x >> 33, x *= 0xff51afd7ed558ccdull, x ^= x >> 33, x *= 0xc4ceb9fe1a85ec53ull, x ^= x >> 33;
  return uint32_t(x);
}

__global__ void fill_kernel(uint16_t* dst, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const uint32_t r = mix32(seed * 0x9e3779b97f4a7c15ull + i);
    // Four 8-bit uniforms: mean 510, variance 4 * 65535 / 12; scaled to unit variance.
    const float s = float((r & 0xFF) + ((r >> 8) & 0xFF) + ((r >> 16) & 0xFF) + (r >> 24)) - 510.0f;
    dst[i] = __half_as_ushort(__float2half_rn(s * (1.0f / 147.8f)));
  }
}

}  // namespace

void fill_fp16_random(uint16_t* dst, size_t n, uint64_t seed) {
  fill_kernel<<<4096, 256>>>(dst, n, seed);
  const cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess || cudaGetLastError() != cudaSuccess) {
    std::fprintf(stderr, "fill_fp16_random: %s\n", cudaGetErrorString(e));
    std::exit(1);
  }
}

}  // namespace kvbits::bench
