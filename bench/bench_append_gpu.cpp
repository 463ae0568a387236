// The fused CUDA append (cuda/append.cu) through Cache::append on a CUDA context, one layer,
// Block-GTQ K3V3, page size 64, bf16 K/V in device memory (as a model hands them over).
//   decode step: 1 token for each of `batch` sequences (batch 1 / 8 / 32), sequences ~200 tokens
//   bulk:        4096 tokens of one sequence in one call (prefill), fp32 and bf16 inputs
// Shapes: Qwen2.5-3B (16 query / 2 KV heads, D = 128) and Llama-3.1-8B (32 / 8 / 128).
// Reported, median of the timed calls (after warm-ups):
//   encode us   the check-and-encode launch (CUDA events around it)
//   commit us   the commit launch (copies, page rows, bookkeeping)
//   device us   encode + commit
//   queued us   the same spans when the stream is kept busy ahead of each call (a 256 MiB
//               memset enqueued just before it), so that no host work (planning, uploads,
//               launch) shows between the events: the GPU time alone, as in a pipelined engine
//   wall us     one Cache::append call on the host clock: planning, uploads, both launches and the
//               one wait for the error word (the price of all-or-nothing)
//   bytes       read (K/V input) + written (packed rows), the floor's traffic
//   GB/s, % copy  bytes / device us, against a 1 GiB device-to-device copy in the same run
// Also one row per shape with every coordinate on the exact fp64 path (what the fast path saves).
// Usage: bench_append_gpu [--quick | --full]   (--full: the three shapes x K2V2 / K3V3 / K4V4
// Block-GTQ and uniform plans, decode steps and a bf16 prefill each)
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_layouts.hpp"
#include "bench_plan.hpp"
#include "gpu_bench_util.hpp"
#include "cuda/device_cache.hpp"
#include "kvbits/cache.hpp"
#include "kvbits/calibrator.hpp"
#include "kvbits/half.hpp"
#include "kvbits/rope_blocks.hpp"

using namespace kvbits;

namespace {

struct Shape {
  const char* name;
  uint32_t q_heads, kv_heads, D;
};

// A plan for one layer of the shape (bench_plan.hpp): Block-GTQ or uniform TQ-MSE at K`bits`V`bits`.
std::shared_ptr<const Plan> layer_plan(const Shape& sh, const bench::LayoutSpec& lay) {
  ModelShape s;
  s.n_layers = 1, s.n_q_heads = sh.q_heads, s.n_kv_heads = sh.kv_heads, s.head_dim = sh.D, s.rotary_dim = sh.D;
  return bench::synthetic_plan(s, lay.uniform ? Method::uniform_tq_mse : Method::block_gtq, lay.bits, lay.bits);
}

using bench::median;

struct Row {
  std::string what;
  double encode_us, commit_us, wall_us, bytes, queued_us;
};

// Device work enqueued ahead of a timed call (queued us): a 256 MiB memset, ~90 us on an H100.
void* g_busy = nullptr;
constexpr size_t kBusyBytes = size_t(256) << 20;

// Times `iters` appends of n_tokens to each of `batch` sequences (after `warm` untimed ones).
Row run(const Shape& sh, uint32_t batch, uint32_t n_tokens, DType dtype, bool exact, int warm, int iters,
        const Context& ctx, const bench::LayoutSpec& lay = bench::kLayouts[1]) {
  const auto plan = layer_plan(sh, lay);
  CacheConfig cfg;
  cfg.page_size = 64;
  cfg.max_sequences = std::max<uint32_t>(64, batch);
  const uint64_t tokens_per_seq = 256 + uint64_t(n_tokens) * (warm + 2 * iters);
  cfg.max_pages = uint64_t(batch) * (tokens_per_seq / 64 + 2) + 16;
  Cache cache(plan, ctx, cfg);
  auto* dev = static_cast<cuda::CudaCache*>(cache.device_cache());
  dev->set_force_exact(exact);
  std::vector<uint64_t> seqs;
  for (uint32_t i = 0; i < batch; ++i) seqs.push_back(cache.add_sequence());
  const size_t row = size_t(sh.kv_heads) * sh.D;
  // Random K/V in device memory, `rounds` different sets so that no call sees its inputs in L2.
  const int rounds = 4;
  const size_t values = size_t(batch) * n_tokens * row;
  std::vector<void*> dk(rounds), dv(rounds);
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd;
  for (int r = 0; r < rounds; ++r) {
    std::vector<uint8_t> bytes(values * dtype_size(dtype));
    for (int t = 0; t < 2; ++t) {
      for (size_t i = 0; i < values; ++i) {
        const float x = nd(rng);
        if (dtype == DType::f32) std::memcpy(&bytes[4 * i], &x, 4);
        else {
          const uint16_t b = dtype == DType::f16 ? float_to_half(x) : float_to_bf16(x);
          std::memcpy(&bytes[2 * i], &b, 2);
        }
      }
      void*& d = t == 0 ? dk[size_t(r)] : dv[size_t(r)];
      CK(cudaMalloc(&d, bytes.size()));
      CK(cudaMemcpy(d, bytes.data(), bytes.size(), cudaMemcpyHostToDevice));
    }
  }
  // Decode steps start from sequences that already hold ~200 tokens.
  if (n_tokens < 64) {
    std::vector<uint32_t> n(batch, 200);
    std::vector<float> k(size_t(batch) * 200 * row, 0.5f);
    cache.append(0, seqs.data(), n.data(), batch, k.data(), k.data(), DType::f32);
  }
  cudaEvent_t ev[4];
  for (auto& e : ev) CK(cudaEventCreate(&e));
  void* evp[4] = {ev[0], ev[1], ev[2], ev[3]};
  dev->set_append_events(evp);
  std::vector<uint32_t> n(batch, n_tokens);
  std::vector<double> enc, com, wall, queued;
  for (int it = 0; it < warm + 2 * iters; ++it) {
    const int r = it % rounds;
    const bool busy = it >= warm + iters;  // the second half: the stream kept busy ahead
    if (busy) CK(cudaMemsetAsync(g_busy, it & 0xFF, kBusyBytes, nullptr));
    const auto t0 = std::chrono::steady_clock::now();
    cache.append(0, seqs.data(), n.data(), batch, dk[size_t(r)], dv[size_t(r)], dtype);
    const auto t1 = std::chrono::steady_clock::now();
    CK(cudaEventSynchronize(ev[3]));
    float a = 0, b = 0;
    CK(cudaEventElapsedTime(&a, ev[0], ev[1]));
    CK(cudaEventElapsedTime(&b, ev[2], ev[3]));
    if (busy) {
      queued.push_back((a + b) * 1e3);
    } else if (it >= warm) {
      enc.push_back(a * 1e3), com.push_back(b * 1e3);
      wall.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
    }
    if (n_tokens >= 64) {  // bulk: a fresh sequence every call
      cache.remove_sequence(seqs[0]);
      seqs[0] = cache.add_sequence();
    }
  }
  dev->set_append_events(nullptr);
  for (auto& e : ev) CK(cudaEventDestroy(e));
  for (int r = 0; r < rounds; ++r) {
    CK(cudaFree(dk[size_t(r)]));
    CK(cudaFree(dv[size_t(r)]));
  }
  // Traffic floor: every input value read once, every packed row written once.
  double written = 0;
  for (uint32_t h = 0; h < sh.kv_heads; ++h) {
    const PageLayout& l = cache.page_layout(0, h);
    written += double(l.k_code_bytes) + 2.0 * l.n_k_scales + l.v_code_bytes + 2.0;
  }
  const double tokens = double(batch) * n_tokens;
  const double bytes = tokens * (2.0 * row * double(dtype_size(dtype)) + written);
  // The default layout (K3V3 Block-GTQ) is not named in the row.
  const std::string l = &lay == &bench::kLayouts[1] ? std::string() : std::string(" ") + lay.name;
  char what[200];
  std::snprintf(what, sizeof what, "%s%s %s x%u %s%s", sh.name, l.c_str(), n_tokens == 1 ? "decode step" : "bulk", batch,
                dtype_name(dtype), exact ? " exact" : "");
  if (n_tokens > 1)
    std::snprintf(what, sizeof what, "%s%s bulk %u tok %s%s", sh.name, l.c_str(), n_tokens, dtype_name(dtype),
                  exact ? " exact" : "");
  return {what, median(enc), median(com), median(wall), bytes, median(queued)};
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false;
  cudaDeviceProp prop;
  if (!gpu_bench_start(argc, argv, quick, prop)) return 0;
  const double copy = copy_bandwidth_gbs();
  std::printf("device: %s, %d SMs; device-to-device copy %.0f GB/s (read + written)\n", prop.name,
              prop.multiProcessorCount, copy);
  CK(cudaMalloc(&g_busy, kBusyBytes));
  const Context ctx(ContextConfig{Backend::cuda, 0, 0});
  const Shape shapes[] = {{"Qwen2.5-3B 16/2/128", 16, 2, 128}, {"Llama-3.1-8B 32/8/128", 32, 8, 128}};
  std::printf("\n| append | encode us | commit us | device us | queued us | wall us | bytes | GB/s | %% of copy |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  // Rows print as they are measured (a sweep that is cut off keeps what it measured).
  auto emit = [&](const Row& r) {
    const double dev_us = r.encode_us + r.commit_us;
    const double gbs = r.bytes / (dev_us * 1e3);
    std::printf("| %s | %.1f | %.1f | %.1f | %.1f | %.1f | %.0f | %.0f | %.1f |\n", r.what.c_str(), r.encode_us,
                r.commit_us, dev_us, r.queued_us, r.wall_us, r.bytes, gbs, 100.0 * gbs / copy);
    std::fflush(stdout);
  };
  if (argc > 1 && std::string(argv[1]) == "--full") {
    // Every shape x layout: decode steps at batch 1 / 8 / 32 and a 4096-token bf16 prefill.
    const Shape all[] = {shapes[0], {"Qwen2.5-7B 28/4/128", 28, 4, 128}, shapes[1]};
    for (const Shape& sh : all)
      for (const bench::LayoutSpec& lay : bench::kLayouts) {
        for (uint32_t batch : {1u, 8u, 32u}) emit(run(sh, batch, 1, DType::bf16, false, 10, 100, ctx, lay));
        emit(run(sh, 1, 4096, DType::bf16, false, 3, 10, ctx, lay));
      }
  } else {
    for (const Shape& sh : shapes) {
      for (uint32_t batch : {1u, 8u, 32u}) {
        if (quick && batch != 1) continue;
        emit(run(sh, batch, 1, DType::bf16, false, 20, 200, ctx));
      }
      emit(run(sh, 1, 4096, DType::bf16, false, 3, quick ? 10 : 30, ctx));
      emit(run(sh, 1, 4096, DType::f32, false, 3, quick ? 10 : 30, ctx));
      emit(run(sh, 1, 4096, DType::bf16, true, 1, quick ? 3 : 5, ctx));
    }
  }
  CK(cudaFree(g_busy));
  return 0;
}
