// Host cache append throughput: Block-GTQ K3V3 (V 3 bits), D = 128, 8 KV heads, one layer.
// "decode": one token for each of 32 sequences per call; "prefill": 512 tokens of one
// sequence per call. Counters: token-heads encoded per second (each = one K and one V row).
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <vector>

#include "kvbits/cache.hpp"
#include "kvbits/calibrator.hpp"
#include "kvbits/rope_blocks.hpp"

namespace {

using namespace kvbits;

ModelShape bench_shape() {
  ModelShape s;
  s.n_layers = 1;
  s.n_q_heads = 32;
  s.n_kv_heads = 8;
  s.head_dim = 128;
  s.rotary_dim = 128;
  return s;
}

// A calibrated plan from activations whose block energies span a few octaves.
std::shared_ptr<const Plan> bench_plan(const ModelShape& s) {
  EnergyAccumulator acc(s);
  std::mt19937_64 rng(1);
  std::normal_distribution<float> n;
  const size_t T = 16;
  std::vector<float> q(T * s.n_q_heads * s.head_dim), k(T * s.n_kv_heads * s.head_dim);
  auto fill = [&](std::vector<float>& x, uint32_t heads) {
    for (size_t t = 0; t < T; ++t)
      for (uint32_t h = 0; h < heads; ++h)
        for (uint32_t b = 0; b < s.n_blocks(); ++b)
          for (uint32_t d : block_dims(s, b))
            x[(t * heads + h) * s.head_dim + d] = float(1 << (b * 5 / s.n_blocks())) * n(rng);
  };
  fill(q, s.n_q_heads);
  fill(k, s.n_kv_heads);
  acc.observe(0, q.data(), k.data(), T, DType::f32);
  return std::make_shared<const Plan>(build_plan(acc, PlanOptions{}));
}

void BM_Append(benchmark::State& state) {
  const uint32_t threads = uint32_t(state.range(0)), n_seqs = uint32_t(state.range(1)),
                 per_seq = uint32_t(state.range(2));
  const ModelShape s = bench_shape();
  static const auto plan = bench_plan(s);
  Context ctx(ContextConfig{Backend::cpu, 0, threads});
  CacheConfig cfg;
  cfg.max_pages = 4096;
  cfg.max_sequences = n_seqs;
  cfg.sink_tokens = 0;
  cfg.window_tokens = 0;
  Cache cache(plan, ctx, cfg);
  std::vector<uint64_t> ids;
  for (uint32_t i = 0; i < n_seqs; ++i) ids.push_back(cache.add_sequence());
  const std::vector<uint32_t> counts(n_seqs, per_seq);
  const size_t rows = size_t(n_seqs) * per_seq;
  std::vector<float> k(rows * s.n_kv_heads * s.head_dim), v(k.size());
  std::mt19937_64 rng(2);
  std::normal_distribution<float> n;
  for (float& x : k) x = n(rng);
  for (float& x : v) x = n(rng);
  const uint32_t capacity_tokens = uint32_t(cfg.max_pages / n_seqs) * cfg.page_size;
  uint32_t len = 0;
  for (auto _ : state) {
    if (len + per_seq > capacity_tokens) {  // recycle the sequences outside the timing
      state.PauseTiming();
      for (uint64_t& id : ids) {
        cache.remove_sequence(id);
        id = cache.add_sequence();
      }
      len = 0;
      state.ResumeTiming();
    }
    cache.append(0, ids.data(), counts.data(), n_seqs, k.data(), v.data(), DType::f32);
    len += per_seq;
  }
  state.counters["token_heads/s"] =
      benchmark::Counter(double(state.iterations()) * double(rows) * s.n_kv_heads, benchmark::Counter::kIsRate);
}

// The floor: the same rows through TqQuantizer::encode alone (K then V), one thread.
void BM_EncodeOnly(benchmark::State& state) {
  const ModelShape s = bench_shape();
  static const auto plan = bench_plan(s);
  std::vector<HeadQuantizers> q;
  for (uint32_t h = 0; h < s.n_kv_heads; ++h) q.push_back(make_head_quantizers(*plan, 0, h));
  std::vector<float> x(size_t(32) * s.n_kv_heads * s.head_dim);
  std::mt19937_64 rng(2);
  std::normal_distribution<float> n;
  for (float& e : x) e = n(rng);
  std::vector<uint8_t> codes(1024);
  std::vector<uint16_t> scales(16);
  for (auto _ : state)
    for (size_t r = 0; r < 32 * s.n_kv_heads; ++r) {
      const HeadQuantizers& hq = q[r % s.n_kv_heads];
      hq.k.encode(x.data() + r * s.head_dim, codes.data(), scales.data());
      hq.v.encode(x.data() + r * s.head_dim, codes.data() + 512, scales.data() + 8);
      benchmark::DoNotOptimize(codes.data());
    }
  state.counters["token_heads/s"] =
      benchmark::Counter(double(state.iterations()) * 32 * s.n_kv_heads, benchmark::Counter::kIsRate);
}

}  // namespace

BENCHMARK(BM_EncodeOnly)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Append)
    ->ArgNames({"threads", "seqs", "tokens"})
    ->Args({1, 32, 1})
    ->Args({2, 32, 1})
    ->Args({1, 1, 512})
    ->Args({2, 1, 512})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

BENCHMARK_MAIN();
