#include "bench_gpu_delay.hpp"

#include <cstdio>
#include <cstdlib>

namespace kvbits::bench {
namespace {

__global__ void spin_kernel(uint64_t nanoseconds) {
  uint64_t t0 = 0, t = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do {
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  } while (t - t0 < nanoseconds);
}

}  // namespace

void enqueue_gpu_delay(uint32_t microseconds, cudaStream_t stream) {
  spin_kernel<<<1, 1, 0, stream>>>(uint64_t(microseconds) * 1000);
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) {
    std::fprintf(stderr, "enqueue_gpu_delay: %s\n", cudaGetErrorString(e));
    std::exit(1);
  }
}

}  // namespace kvbits::bench
