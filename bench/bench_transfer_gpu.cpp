// Sequence transfer on a CUDA context (docs/transfer.md): Cache::export_sequence and
// import_sequence of one Llama-3.1-8B-shaped sequence (32 layers, 8 KV heads, D = 128, K3V3
// Block-GTQ, page size 64, no fp16 tokens), to and from page-locked host memory, device memory
// and pageable host memory. Its pages are either contiguous (4096-token appends on a fresh
// pool) or interleaved with another sequence's (the two appended 64 tokens at a time, as under
// continuous batching). Reported, median of the timed calls: µs per call (the call waits for its
// copies and, on export, the checksum), the payload bytes and GB/s.
// Usage: bench_transfer_gpu [--quick]   (--quick: 8K tokens only)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <vector>

#include "bench_plan.hpp"
#include "gpu_bench_util.hpp"
#include "kvbits/cache.hpp"
#include "kvbits/calibrator.hpp"
#include "kvbits/half.hpp"
#include "kvbits/rope_blocks.hpp"

using namespace kvbits;

namespace {

constexpr uint32_t kLayers = 32, kQHeads = 32, kKvHeads = 8, kD = 128;

// K3V3 Block-GTQ for every layer (bench_plan.hpp).
std::shared_ptr<const Plan> k3v3_plan() {
  ModelShape s;
  s.n_layers = kLayers, s.n_q_heads = kQHeads, s.n_kv_heads = kKvHeads, s.head_dim = kD, s.rotary_dim = kD;
  return bench::synthetic_plan(s);
}

using bench::median;

template <class F>
double time_us(int iters, F&& f) {
  std::vector<double> us;
  for (int i = 0; i < iters + 1; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    const auto t1 = std::chrono::steady_clock::now();
    if (i > 0) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
  }
  return median(us);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  cudaDeviceProp prop;
  if (!gpu_bench_start(argc, argv, quick, prop)) return 0;
  std::printf("device: %s; device-to-device copy %.0f GB/s (read + written)\n", prop.name, copy_bandwidth_gbs());
  const Context ctx(ContextConfig{Backend::cuda, 0, 0});
  const auto plan = k3v3_plan();
  std::printf("\n| tokens | pages | payload MB | export to pinned host us | GB/s | export to device us | GB/s | "
              "import from pinned host us | import from device us | export to pageable host us | import from pageable "
              "host us |\n|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (uint32_t tokens : {8192u, 32768u})
    for (bool interleaved : {false, true}) {
      if (quick && tokens > 8192) continue;
      CacheConfig cfg;
      cfg.page_size = 64, cfg.max_sequences = 8;
      cfg.max_pages = 5 * (tokens / 64 + 2);
      Cache cache(plan, ctx, cfg);
      const uint64_t id = cache.add_sequence(), other = cache.add_sequence();
      // Random bf16 K/V in device memory, appended 4096 tokens per call in every layer.
      const uint32_t chunk = 4096;
      const size_t values = size_t(chunk) * kKvHeads * kD;
      std::vector<uint16_t> host(values);
      std::mt19937_64 rng(11);
      std::normal_distribution<float> nd;
      for (uint16_t& b : host) b = float_to_bf16(nd(rng));
      void* dkv = nullptr;
      CK(cudaMalloc(&dkv, values * 2));
      CK(cudaMemcpy(dkv, host.data(), values * 2, cudaMemcpyHostToDevice));
      const uint32_t page = 64;
      for (uint32_t l = 0; l < kLayers; ++l)
        if (!interleaved) {
          for (uint32_t t = 0; t < tokens; t += chunk) cache.append(l, &id, &chunk, 1, dkv, dkv, DType::bf16);
        } else {
          for (uint32_t t = 0; t < tokens; t += page) {
            cache.append(l, &id, &page, 1, dkv, dkv, DType::bf16);
            cache.append(l, &other, &page, 1, dkv, dkv, DType::bf16);
          }
        }
      CK(cudaFree(dkv));
      const size_t bytes = cache.export_size(id);
      void *pinned = nullptr, *dev = nullptr;
      CK(cudaMallocHost(&pinned, bytes));
      CK(cudaMalloc(&dev, bytes));
      const int iters = 5;
      const double ex_host = time_us(iters, [&] { cache.export_sequence(id, pinned, bytes); });
      const double ex_dev = time_us(iters, [&] { cache.export_sequence(id, dev, bytes); });
      // Imports add a sequence each; it is removed (untimed) before the next one.
      auto import_from = [&](const void* buf) {
        std::vector<double> us;
        for (int i = 0; i < iters + 1; ++i) {
          const auto t0 = std::chrono::steady_clock::now();
          const uint64_t got = cache.import_sequence(buf, bytes);
          const auto t1 = std::chrono::steady_clock::now();
          cache.remove_sequence(got);
          if (i > 0) us.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        }
        return median(us);
      };
      const double im_host = import_from(pinned), im_dev = import_from(dev);
      std::vector<uint8_t> pageable(bytes);
      const double ex_page = time_us(iters, [&] { cache.export_sequence(id, pageable.data(), bytes); });
      const double im_page = import_from(pageable.data());
      std::printf("| %u | %s | %.1f | %.0f | %.1f | %.0f | %.1f | %.0f | %.0f | %.0f | %.0f |\n", tokens,
                  interleaved ? "interleaved" : "contiguous", double(bytes) / 1e6, ex_host,
                  double(bytes) / (ex_host * 1e3), ex_dev, double(bytes) / (ex_dev * 1e3), im_host, im_dev, ex_page,
                  im_page);
      CK(cudaFreeHost(pinned));
      CK(cudaFree(dev));
    }
  return 0;
}
