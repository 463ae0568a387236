// attention_decode / attention_extend on the paged cache against fp64 softmax attention over
// what the cache holds (Cache::read): 1e-5 relative (max abs error / max abs reference per
// output row) and 1e-5 absolute on the LSE, across GQA ratios, head dims, page boundaries,
// sink/window policies, fp16 layers, partial rotary, query dtypes and scales.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "attention_scenario.hpp"
#include "kvbits/half.hpp"

using namespace kvbits;
using namespace kvbits::test_attn;

namespace {

constexpr double kRelTol = 1e-5, kLseTol = 1e-5;

struct Policy {
  int64_t sink, window;
};

ErrorStats run_decode(Scenario& sc, uint32_t layer, const AttentionParams& params = {}) {
  const ModelShape& sh = sc.shape();
  const size_t n = sc.seqs().size();
  const auto q = sc.queries(n, layer);
  std::vector<float> out(n * sh.n_q_heads * sh.head_dim), lse(n * sh.n_q_heads);
  attention_decode(sc.cache(), layer, sc.seqs().data(), n, q.data(), DType::f32, out.data(), lse.data(), params);
  std::vector<size_t> which(n);
  for (size_t i = 0; i < n; ++i) which[i] = i;
  std::vector<double> ref, ref_lse;
  const double scale = params.scale > 0 ? params.scale : 1.0 / std::sqrt(double(sh.head_dim));
  sc.reference(layer, which, std::vector<uint32_t>(n, 1), q.data(), scale, false, ref, ref_lse);
  return compare(out, ref, lse.data(), ref_lse, sh.head_dim);
}

void report(const char* what, const ErrorStats& st) {
  std::printf("%s: %zu rows, max rel err %.3g, max lse err %.3g\n", what, st.rows, st.max_rel, st.max_lse);
}

}  // namespace

TEST(Attention, DecodeMatchesFp64OverTheCacheForEveryGqaRatioAndHeadDim) {
  const Policy policies[] = {{0, 0}, {4, 16}, {0, 5}, {2, 0}};
  const uint32_t page_sizes[] = {16, 7, 64, 5};
  ErrorStats all;
  uint64_t seed = 1;
  int k = 0;
  for (uint32_t D : {8u, 64u, 128u, 256u})
    for (uint32_t G : {1u, 2u, 4u, 8u, 16u}) {
      ScenarioConfig c;
      c.shape = make_shape(1, 2 * G, 2, D);
      c.cache.page_size = page_sizes[k % 4];
      c.cache.sink_tokens = policies[k % 4].sink;
      c.cache.window_tokens = policies[k % 4].window;
      const uint32_t P = c.cache.page_size;
      // Lengths around page boundaries, counted from 0 and from the first packed token (the
      // packed region starts after the sink and stops window tokens before the end), and
      // several pages.
      const uint32_t base = uint32_t(policies[k % 4].sink + policies[k % 4].window);
      c.lengths = {1, P - 1, P, P + 1, base + P - 1, base + P, base + P + 1, base + 3 * P + 9};
      c.append_chunk = 1 + k % 7;
      c.seed = seed++;
      ++k;
      SCOPED_TRACE(::testing::Message() << "D=" << D << " G=" << G << " page=" << P);
      Scenario sc(c);
      const ErrorStats st = run_decode(sc, 0);
      EXPECT_LT(st.max_rel, kRelTol);
      EXPECT_LT(st.max_lse, kLseTol);
      all.merge(st);
    }
  report("decode vs fp64 over the cache", all);
}

TEST(Attention, ExtendChunkedPrefillMatchesTheCausalFp64Reference) {
  ErrorStats all;
  for (uint32_t chunk = 1; chunk <= 20; ++chunk) {
    ScenarioConfig c;
    c.shape = make_shape(1, 8, 2, 64);
    c.cache.page_size = 16;
    const Policy p = chunk % 3 == 0 ? Policy{0, 0} : chunk % 3 == 1 ? Policy{4, 16} : Policy{0, 5};
    c.cache.sink_tokens = p.sink, c.cache.window_tokens = p.window;
    c.lengths = {0, 3};  // sequence 0 is prefilled below; sequence 1 rides along
    c.seed = 40 + chunk;
    Scenario sc(c);
    // Prefill sequence 0 chunk by chunk: append, then attend with the chunk's queries.
    for (uint32_t done = 0; done < 50;) {
      const uint32_t n = std::min(chunk, 50 - done);
      sc.append(0, n);
      done += n;
      const std::vector<uint32_t> q_len = {n, 2};
      const auto q = sc.queries(n + 2, done);
      const ModelShape& sh = sc.shape();
      std::vector<float> out((n + 2) * sh.n_q_heads * sh.head_dim), lse((n + 2) * sh.n_q_heads);
      attention_extend(sc.cache(), 0, sc.seqs().data(), q_len.data(), 2, q.data(), DType::f32, out.data(), lse.data(),
                       {});
      std::vector<double> ref, ref_lse;
      sc.reference(0, {0, 1}, q_len, q.data(), 1.0 / 8.0, false, ref, ref_lse);
      const ErrorStats st = compare(out, ref, lse.data(), ref_lse, sh.head_dim);
      ASSERT_LT(st.max_rel, kRelTol) << "chunk " << chunk << " at " << done;
      ASSERT_LT(st.max_lse, kLseTol) << "chunk " << chunk << " at " << done;
      all.merge(st);
    }
  }
  report("extend (chunked prefill 1..20) vs fp64", all);
}

TEST(Attention, Fp16LayersAndPartialRotaryPlans) {
  ErrorStats all;
  for (uint32_t rotary : {128u, 64u, 32u}) {
    ScenarioConfig c;
    c.shape = make_shape(3, 8, 2, 128, rotary);
    c.plan.fp16_layers = {1};
    c.cache.page_size = 32;
    c.cache.sink_tokens = rotary == 64 ? 4 : 0;
    c.cache.window_tokens = rotary == 64 ? 16 : 0;
    c.lengths = {33, 100, 1};
    c.seed = rotary;
    Scenario sc(c);
    for (uint32_t layer = 0; layer < 3; ++layer) {
      SCOPED_TRACE(::testing::Message() << "rotary=" << rotary << " layer=" << layer);
      const ErrorStats st = run_decode(sc, layer);
      EXPECT_LT(st.max_rel, kRelTol);
      EXPECT_LT(st.max_lse, kLseTol);
      all.merge(st);
    }
  }
  report("fp16 layer + partial rotary vs fp64", all);
}

TEST(Attention, HalfAndBfloatQueriesAndCustomScales) {
  ScenarioConfig c;
  c.shape = make_shape(1, 8, 2, 64);
  c.cache.page_size = 16;
  c.cache.sink_tokens = 4, c.cache.window_tokens = 16;
  c.lengths = {70, 5, 40};
  Scenario sc(c);
  const ModelShape& sh = sc.shape();
  const size_t n = 3, values = n * sh.n_q_heads * sh.head_dim;
  ErrorStats all;
  for (DType t : {DType::f32, DType::f16, DType::bf16})
    for (float scale : {0.0f, 0.05f, 0.3f}) {
      const auto q32 = sc.queries(n, 11);
      std::vector<uint16_t> bits(values);
      std::vector<float> q_exact(q32);  // what the kernel sees after conversion
      for (size_t i = 0; i < values; ++i) {
        if (t == DType::f16) bits[i] = float_to_half(q32[i]), q_exact[i] = half_to_float(bits[i]);
        if (t == DType::bf16) bits[i] = float_to_bf16(q32[i]), q_exact[i] = bf16_to_float(bits[i]);
      }
      const void* q = t == DType::f32 ? static_cast<const void*>(q32.data()) : bits.data();
      std::vector<float> out(values), lse(n * sh.n_q_heads);
      AttentionParams params;
      params.scale = scale;
      attention_decode(sc.cache(), 0, sc.seqs().data(), n, q, t, out.data(), lse.data(), params);
      std::vector<double> ref, ref_lse;
      sc.reference(0, {0, 1, 2}, {1, 1, 1}, q_exact.data(), scale > 0 ? scale : 0.125, false, ref, ref_lse);
      const ErrorStats st = compare(out, ref, lse.data(), ref_lse, sh.head_dim);
      EXPECT_LT(st.max_rel, kRelTol) << dtype_name(t) << " scale " << scale;
      EXPECT_LT(st.max_lse, kLseTol) << dtype_name(t) << " scale " << scale;
      all.merge(st);
    }
  report("f16/bf16 queries, custom scales", all);
}

TEST(Attention, ExtendOnRandomShapesAndChunks) {
  std::mt19937_64 rng(2024);
  ErrorStats all;
  const uint32_t dims[] = {8, 64, 128, 256}, groups[] = {1, 2, 4, 8, 16};
  const Policy policies[] = {{0, 0}, {4, 16}, {0, 5}, {3, 7}};
  for (int trial = 0; trial < 12; ++trial) {
    ScenarioConfig c;
    const uint32_t D = dims[rng() % 4], G = groups[rng() % 5], kv = 1 + uint32_t(rng() % 2);
    c.shape = make_shape(1, G * kv, kv, D);
    c.cache.page_size = 1 + uint32_t(rng() % 40);
    const Policy p = policies[rng() % 4];
    c.cache.sink_tokens = p.sink, c.cache.window_tokens = p.window;
    c.lengths = {1 + uint32_t(rng() % 120), 1 + uint32_t(rng() % 120), 1 + uint32_t(rng() % 120)};
    c.append_chunk = 1 + uint32_t(rng() % 30);
    c.seed = 300 + trial;
    Scenario sc(c);
    std::vector<uint32_t> q_len;
    size_t rows = 0;
    for (uint32_t len : c.lengths) q_len.push_back(1 + uint32_t(rng() % std::min(len, 20u))), rows += q_len.back();
    const auto q = sc.queries(rows, trial);
    std::vector<float> out(rows * c.shape.n_q_heads * D), lse(rows * c.shape.n_q_heads);
    attention_extend(sc.cache(), 0, sc.seqs().data(), q_len.data(), 3, q.data(), DType::f32, out.data(), lse.data(),
                     {});
    std::vector<double> ref, ref_lse;
    sc.reference(0, {0, 1, 2}, q_len, q.data(), 1.0 / std::sqrt(double(D)), false, ref, ref_lse);
    const ErrorStats st = compare(out, ref, lse.data(), ref_lse, D);
    EXPECT_LT(st.max_rel, kRelTol) << "trial " << trial << " D=" << D << " G=" << G;
    EXPECT_LT(st.max_lse, kLseTol) << "trial " << trial << " D=" << D << " G=" << G;
    all.merge(st);
  }
  report("extend on random shapes", all);
}
