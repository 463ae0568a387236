// Host quantizer throughput per token and head: encode K (D=128, Block-GTQ widths 1..6),
// encode V (D=128, 3 bits), decode K, rotate a query.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <vector>

#include "kvbits/codebook.hpp"
#include "kvbits/head_layout.hpp"
#include "kvbits/rotation.hpp"
#include "kvbits/tq_mse.hpp"

namespace {

using kvbits::TqQuantizer;

std::vector<std::vector<double>> unit_codebooks() {
  std::vector<std::vector<double>> books(kvbits::kMaxCodeBits + 1);
  for (int b = kvbits::kMinCodeBits; b <= kvbits::kMaxCodeBits; ++b)
    books[size_t(b)] = kvbits::unit_gaussian_codebook(b, kvbits::CodebookRecipe::lloyd_max);
  return books;
}

// The spec's worked histogram (1b:9 2b:15 3b:19 4b:11 5b:8 6b:2 blocks, average 3 bits).
TqQuantizer key_quantizer() {
  const int counts[] = {9, 15, 19, 11, 8, 2};
  std::vector<uint8_t> sorted, widths(64);
  for (int b = 1; b <= 6; ++b) sorted.insert(sorted.end(), size_t(counts[b - 1]), uint8_t(b));
  for (size_t i = 0; i < 64; ++i) widths[(i * 27) % 64] = sorted[i];
  kvbits::ModelShape shape;
  shape.n_layers = shape.n_q_heads = shape.n_kv_heads = 1;
  shape.head_dim = shape.rotary_dim = 128;
  const kvbits::HeadLayout l = kvbits::make_head_layout(shape, widths);
  std::vector<std::vector<float>> rot;
  for (uint32_t g = 0; g < l.groups.size(); ++g) rot.push_back(kvbits::haar_rotation(l.groups[g].dims, 100 + g));
  return kvbits::make_key_quantizer(l, std::move(rot), unit_codebooks());
}

TqQuantizer value_quantizer() {
  return kvbits::make_value_quantizer(128, 3, kvbits::haar_rotation(128, 7), unit_codebooks());
}

std::vector<float> input(uint32_t d) {
  std::vector<float> x(d);
  for (uint32_t i = 0; i < d; ++i) x[i] = float(int((i * i * 7 + i * 13 + 5) % 97) - 48) / 16.0f;
  return x;
}

void encode(benchmark::State& state, const TqQuantizer& q) {
  const auto x = input(q.dim());
  std::vector<uint8_t> packed(q.code_bytes());
  std::vector<uint16_t> scales(q.n_groups());
  for (auto _ : state) {
    q.encode(x.data(), packed.data(), scales.data());
    benchmark::DoNotOptimize(packed.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_EncodeK(benchmark::State& state) { encode(state, key_quantizer()); }
void BM_EncodeV(benchmark::State& state) { encode(state, value_quantizer()); }

void BM_DecodeK(benchmark::State& state) {
  const TqQuantizer q = key_quantizer();
  const auto x = input(q.dim());
  std::vector<uint8_t> packed(q.code_bytes());
  std::vector<uint16_t> scales(q.n_groups());
  q.encode(x.data(), packed.data(), scales.data());
  std::vector<float> out(q.dim());
  for (auto _ : state) {
    q.decode(packed.data(), scales.data(), out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_RotateQueryK(benchmark::State& state) {
  const TqQuantizer q = key_quantizer();
  const auto x = input(q.dim());
  std::vector<float> out(q.dim());
  for (auto _ : state) {
    q.rotate_query(x.data(), out.data());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations());
}

BENCHMARK(BM_EncodeK);
BENCHMARK(BM_EncodeV);
BENCHMARK(BM_DecodeK);
BENCHMARK(BM_RotateQueryK);

}  // namespace

BENCHMARK_MAIN();
