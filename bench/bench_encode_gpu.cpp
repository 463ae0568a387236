// GPU TQ-MSE encode throughput (the reference-exact fp64 encoder; not yet the fused append).
// Reports µs per launch, rows/s and input GB/s, median of 50 timed launches (CUDA events).
// Usage: bench_encode_gpu [rows=32768]
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "bench_layouts.hpp"
#include "cuda/encode.hpp"

using namespace kvbits;

namespace {

#define CK(x)                                                                      \
  do {                                                                             \
    cudaError_t e_ = (x);                                                          \
    if (e_ != cudaSuccess) {                                                       \
      std::fprintf(stderr, "%s: %s\n", #x, cudaGetErrorString(e_));                \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

float time_encode(const TqQuantizer& q, size_t rows, const char* name) {
  cuda::DeviceQuantizer dq(q);
  std::vector<float> x(rows * q.dim());
  std::mt19937_64 rng(1);
  std::normal_distribution<float> n;
  for (float& v : x) v = n(rng);
  float *dx;
  uint8_t* dc;
  uint16_t* ds;
  CK(cudaMalloc(&dx, x.size() * 4));
  CK(cudaMalloc(&dc, rows * q.code_bytes()));
  CK(cudaMalloc(&ds, rows * q.n_groups() * 2));
  CK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 5; ++i) cuda::encode_rows(dq.tables(), dx, rows, dc, ds, nullptr);
  std::vector<float> ms;
  for (int i = 0; i < 50; ++i) {
    CK(cudaEventRecord(a));
    cuda::encode_rows(dq.tables(), dx, rows, dc, ds, nullptr);
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float t;
    CK(cudaEventElapsedTime(&t, a, b));
    ms.push_back(t);
  }
  std::sort(ms.begin(), ms.end());
  const double med_us = ms[ms.size() / 2] * 1e3;
  std::printf("%-28s rows %7zu  %9.1f us  %8.2f Mrows/s  %7.1f GB/s fp32 in\n", name, rows, med_us,
              double(rows) / med_us, double(x.size() * 4) / (med_us * 1e3));
  cudaFree(dx), cudaFree(dc), cudaFree(ds);
  return float(med_us);
}

}  // namespace

int main(int argc, char** argv) {
  if (cuda::device_count() == 0) {
    std::printf("no CUDA device: skipped\n");
    return 0;
  }
  const size_t rows = argc > 1 ? size_t(std::atoll(argv[1])) : 32768;
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  // The K3V3 Block-GTQ head of the decode benchmark (bench_layouts.hpp): six K groups at 1..6 bits.
  const HeadQuantizers head = bench::make_bench_head(128, bench::kLayouts[1], 1);
  time_encode(head.k, rows, "K Block-GTQ 3b D128");
  time_encode(head.v, rows, "V uniform 3b D128");
  time_encode(head.v, 1, "V 3b D128, one row");
  return 0;
}
