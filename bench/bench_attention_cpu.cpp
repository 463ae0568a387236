// CPU attention decode on the packed cache: one sequence, one layer, D = 128, 32 query heads
// over 8 KV heads (GQA 4), Block-GTQ K3V3, contexts of 1K and 8K tokens, 1 and 2 worker
// threads. Reports tokens/s (context tokens attended per second, all heads of the layer) and
// bytes/s (packed K+V bytes of those tokens per second, codes and scales).
#include <benchmark/benchmark.h>

#include <cmath>
#include <memory>
#include <random>
#include <vector>

#include "kvbits/attention.hpp"
#include "kvbits/calibrator.hpp"
#include "kvbits/rope_blocks.hpp"

namespace {

using namespace kvbits;

ModelShape bench_shape() {
  ModelShape s;
  s.n_layers = 1, s.n_q_heads = 32, s.n_kv_heads = 8, s.head_dim = 128, s.rotary_dim = 128;
  return s;
}

// Head vectors with block energies growing over ~3 orders of magnitude, as real keys do, so
// the K3 plan has several width groups.
std::vector<float> activations(const ModelShape& s, size_t tokens, uint32_t heads, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> x(tokens * heads * s.head_dim);
  for (size_t v = 0; v < tokens * heads; ++v)
    for (uint32_t b = 0; b < s.n_blocks(); ++b) {
      const float sd = std::pow(2.0f, 5.0f * float(b) / float(s.n_blocks())) / 8.0f;
      for (uint32_t d : block_dims(s, b)) x[v * s.head_dim + d] = sd * normal(rng);
    }
  return x;
}

std::shared_ptr<const Plan> k3v3_plan(const ModelShape& s) {
  EnergyAccumulator acc(s);
  const auto q = activations(s, 64, s.n_q_heads, 1), k = activations(s, 64, s.n_kv_heads, 2);
  acc.observe(0, q.data(), k.data(), 64, DType::f32);
  PlanOptions o;
  o.k_avg_bits = 3.0, o.v_bits = 3;
  return std::make_shared<const Plan>(build_plan(acc, o));
}

void BM_DecodeK3V3(benchmark::State& state) {
  const uint32_t ctx_len = uint32_t(state.range(0));
  const ModelShape shape = bench_shape();
  const auto plan = k3v3_plan(shape);
  ContextConfig cc;
  cc.backend = Backend::cpu;
  cc.n_threads = uint32_t(state.range(1));
  Context ctx(cc);
  CacheConfig cfg;
  cfg.page_size = 64;
  cfg.max_pages = ctx_len / 64 + 2;
  Cache cache(plan, ctx, cfg);
  const uint64_t seq = cache.add_sequence();
  const auto k = activations(shape, ctx_len, shape.n_kv_heads, 3);
  const auto v = activations(shape, ctx_len, shape.n_kv_heads, 4);
  cache.append(0, &seq, &ctx_len, 1, k.data(), v.data(), DType::f32);
  const auto q = activations(shape, 1, shape.n_q_heads, 5);
  std::vector<float> out(size_t(shape.n_q_heads) * shape.head_dim), lse(shape.n_q_heads);

  for (auto _ : state) {
    attention_decode(cache, 0, &seq, 1, q.data(), DType::f32, out.data(), lse.data(), {});
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  size_t bytes_per_token = 0;  // all KV heads of the layer
  for (uint32_t h = 0; h < shape.n_kv_heads; ++h) bytes_per_token += plan->bytes_per_token(0, h);
  const double tokens = double(state.iterations()) * ctx_len;
  state.counters["tokens/s"] = benchmark::Counter(tokens, benchmark::Counter::kIsRate);
  state.SetBytesProcessed(int64_t(tokens * double(bytes_per_token)));
  state.counters["B/token"] = double(bytes_per_token);
}

BENCHMARK(BM_DecodeK3V3)
    ->ArgNames({"ctx", "threads"})
    ->Args({1024, 1})
    ->Args({1024, 2})
    ->Args({8192, 1})
    ->Args({8192, 2})
    ->Unit(benchmark::kMicrosecond)
    ->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
