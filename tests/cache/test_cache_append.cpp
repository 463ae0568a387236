// Append and read: every token reads back as the quantizer's own encode -> decode (or exact
// fp16), pages hold exactly the encoder's bytes, for every sink/window/page-size combination.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "cache_test_util.hpp"
#include "kvbits/half.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using namespace kvbits::cachetest;

namespace {

Context& ctx(uint32_t threads) {
  static Context c1{ContextConfig{Backend::cpu, 0, 1}};
  static Context c3{ContextConfig{Backend::cpu, 0, 3}};
  return threads == 1 ? c1 : c3;
}

CacheConfig config(uint32_t page_size, uint64_t max_pages, int64_t sink = 0, int64_t window = 0) {
  CacheConfig c;
  c.page_size = page_size;
  c.max_pages = max_pages;
  c.sink_tokens = sink;
  c.window_tokens = window;
  return c;
}

// The page row of packed token t holds exactly TqQuantizer::encode's bytes (and fp16 bits
// for fp16 layers); the fp16 regions hold float_to_half of the input.
void check_bytes(const Cache& cache, uint64_t seq, uint32_t layer, const std::vector<float>& k_in,
                 const std::vector<float>& v_in) {
  const ModelShape& sh = cache.plan().shape;
  const uint32_t H = sh.n_kv_heads, D = sh.head_dim, P = cache.config().page_size;
  const SeqLayerView view = cache.view(seq, layer);
  const bool window = cache.window_tokens() > 0;
  ASSERT_EQ(view.len * size_t(H) * D, k_in.size());
  for (uint32_t t = 0; t < view.len; ++t)
    for (uint32_t h = 0; h < H; ++h) {
      const float* xk = k_in.data() + (size_t(t) * H + h) * D;
      const float* xv = v_in.data() + (size_t(t) * H + h) * D;
      if (t < view.sink || t >= view.qend) {
        const bool sink = t < view.sink;
        const uint32_t row = sink ? t : (t - view.sink_capacity) % view.window_capacity;
        const uint16_t* k = (sink ? view.sink_k(h) : view.window_k(h)) + size_t(row) * D;
        const uint16_t* v = (sink ? view.sink_v(h) : view.window_v(h)) + size_t(row) * D;
        for (uint32_t d = 0; d < D; ++d) {
          ASSERT_EQ(k[d], float_to_half(xk[d])) << "token " << t;
          ASSERT_EQ(v[d], float_to_half(xv[d])) << "token " << t;
        }
        continue;
      }
      const PageLayout& l = cache.page_layout(layer, h);
      const uint32_t idx = (t - view.sink_capacity) / P, row = (t - view.sink_capacity) % P;
      const uint8_t* page = cache.page_data(layer, h, view.pages[idx]);
      if (l.fp16) {
        for (uint32_t d = 0; d < D; ++d) {
          uint16_t hk, hv;
          std::memcpy(&hk, page + l.k_codes + (size_t(row) * D + d) * 2, 2);
          std::memcpy(&hv, page + l.v_codes + (size_t(row) * D + d) * 2, 2);
          ASSERT_EQ(hk, float_to_half(xk[d]));
          ASSERT_EQ(hv, float_to_half(xv[d]));
        }
        continue;
      }
      const HeadQuantizers& q = cache.quantizers(layer, h);
      for (int tensor = 0; tensor < 2; ++tensor) {
        const TqQuantizer& tq = tensor == 0 ? q.k : q.v;
        std::vector<float> x(tensor == 0 ? xk : xv, (tensor == 0 ? xk : xv) + D);
        if (window)
          for (float& e : x) e = fp16_round(e);
        std::vector<uint8_t> codes(tq.code_bytes());
        std::vector<uint16_t> scales(tq.n_groups());
        tq.encode(x.data(), codes.data(), scales.data());
        const size_t codes_at = tensor == 0 ? l.k_codes + size_t(row) * l.k_code_bytes
                                            : l.v_codes + size_t(row) * l.v_code_bytes;
        const size_t scales_at = tensor == 0 ? l.k_scales + size_t(row) * l.n_k_scales * 2 : l.v_scales + row * 2;
        ASSERT_EQ(0, std::memcmp(page + codes_at, codes.data(), codes.size())) << "token " << t << " head " << h;
        ASSERT_EQ(0, std::memcmp(page + scales_at, scales.data(), scales.size() * 2)) << "token " << t;
      }
    }
}

}  // namespace

TEST(CacheAppend, ReadBackIsTheQuantizersEncodeDecodeBitForBit) {
  const ModelShape s = make_shape(2, 2, 64);
  auto plan = make_plan(s);
  Cache cache(plan, ctx(1), config(4, 16));
  Model model(cache);
  const uint64_t seq = cache.add_sequence();
  EXPECT_EQ(seq, 0u);
  model.add(seq);
  std::vector<float> all_k, all_v;
  uint64_t seed = 10;
  for (uint32_t n : {1u, 3u, 7u, 4u}) {  // crosses page boundaries at 4, 8, 12
    const auto k = random_rows(n, s, ++seed), v = random_rows(n, s, ++seed, 3.0f);
    for (uint32_t l = 0; l < 2; ++l) append_both(cache, model, l, {seq}, {n}, k, v);
    all_k.insert(all_k.end(), k.begin(), k.end());
    all_v.insert(all_v.end(), v.begin(), v.end());
    model.check_all();
  }
  for (uint32_t l = 0; l < 2; ++l) check_bytes(cache, seq, l, all_k, all_v);
  EXPECT_EQ(cache.length(seq, 0), 15u);
  const SeqLayerView view = cache.view(seq, 1);
  EXPECT_EQ(view.len, 15u);
  EXPECT_EQ(view.qend, 15u);
  EXPECT_EQ(view.sink, 0u);
  EXPECT_EQ(view.fp16_base, nullptr);
  const CacheStats st = cache.stats();
  EXPECT_EQ(st.pages_used, 4u);  // ceil(15 / 4), shared by both layers
  EXPECT_EQ(st.tokens, 15u);
  EXPECT_EQ(st.sequences, 1u);
  EXPECT_EQ(st.packed_bytes_used, 4 * (st.pool_bytes / 16));
  // Partial reads and null outputs.
  std::vector<float> k(5 * 2 * 64), v(k.size()), ek(64), ev(64);
  cache.read(seq, 0, 9, 5, k.data(), nullptr);
  cache.read(seq, 0, 9, 5, nullptr, v.data());
  for (uint32_t t = 9; t < 14; ++t)
    for (uint32_t h = 0; h < 2; ++h) {
      model.expected(seq, 0, t, h, ek.data(), ev.data());
      EXPECT_EQ(0, std::memcmp(ek.data(), k.data() + ((t - 9) * 2 + h) * 64, 256));
      EXPECT_EQ(0, std::memcmp(ev.data(), v.data() + ((t - 9) * 2 + h) * 64, 256));
    }
  cache.read(seq, 0, 15, 0, k.data(), v.data());  // empty range at the end is fine
}

TEST(CacheAppend, ManySequencesInOneCallInterleavedWithLayersAtDifferentLengths) {
  const ModelShape s = make_shape(3, 2, 16, 0, RopeLayout::interleaved);
  auto plan = make_plan(s);
  Cache cache(plan, ctx(3), config(3, 64));
  Model model(cache);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 4; ++i) {
    ids.push_back(cache.add_sequence());
    model.add(ids.back());
  }
  EXPECT_EQ(ids, (std::vector<uint64_t>{0, 1, 2, 3}));
  std::mt19937 rng(5);
  uint64_t seed = 100;
  for (int round = 0; round < 6; ++round) {
    // A random subset in a random order, random counts.
    std::vector<uint64_t> call = ids;
    std::shuffle(call.begin(), call.end(), rng);
    call.resize(1 + rng() % 4);
    std::vector<uint32_t> n;
    uint32_t total = 0;
    for (size_t i = 0; i < call.size(); ++i) {
      n.push_back(1 + rng() % 5);
      total += n.back();
    }
    const uint32_t layer = rng() % 3;
    const auto k = random_rows(total, s, ++seed), v = random_rows(total, s, ++seed);
    append_both(cache, model, layer, call, n, k, v);
    model.check_all();
  }
  // Pages: each sequence holds max over layers of ceil(len / 3).
  uint64_t expect_pages = 0;
  for (uint64_t id : ids) {
    uint32_t longest = 0;
    for (uint32_t l = 0; l < 3; ++l) longest = std::max(longest, cache.length(id, l));
    expect_pages += (longest + 2) / 3;
  }
  EXPECT_EQ(cache.stats().pages_used, expect_pages);
}

TEST(CacheAppend, SinkWindowAndPageSizeMatrix) {
  const ModelShape s = make_shape(2, 2, 8, 0, RopeLayout::interleaved);
  PlanOptions o;
  o.fp16_layers = {1};
  auto plan = make_plan(s, o);
  for (uint32_t P : {1u, 3u, 64u})
    for (uint32_t W : {0u, 1u, 5u, 128u})
      for (uint32_t S : {0u, 2u, 7u}) {
        SCOPED_TRACE("page_size " + std::to_string(P) + " window " + std::to_string(W) + " sink " + std::to_string(S));
        Cache cache(plan, ctx(3), config(P, 600, S, W));
        Model model(cache);
        const uint64_t a = cache.add_sequence(), b = cache.add_sequence();
        model.add(a);
        model.add(b);
        std::vector<float> ka, va;
        uint64_t seed = 1000;
        uint32_t len = 0;
        for (uint32_t n : {1u, 2u, 9u, 1u, 40u, 3u, 1u, 100u, 1u}) {
          const auto k = random_rows(2 * n, s, ++seed), v = random_rows(2 * n, s, ++seed);
          for (uint32_t l = 0; l < 2; ++l) append_both(cache, model, l, {b, a}, {n, n}, k, v);
          const size_t half = k.size() / 2;
          ka.insert(ka.end(), k.begin() + long(half), k.end());  // a's tokens come second
          va.insert(va.end(), v.begin() + long(half), v.end());
          len += n;
          for (uint32_t l = 0; l < 2; ++l) {
            const SeqLayerView view = cache.view(a, l);
            ASSERT_EQ(view.len, len);
            ASSERT_EQ(view.sink, std::min(len, S));
            const uint32_t qend = len <= S ? len : std::max(S, len > W ? len - W : 0);
            ASSERT_EQ(view.qend, qend);
            ASSERT_EQ(view.window_capacity, W);
            ASSERT_EQ(view.sink_capacity, S);
            ASSERT_EQ(view.head_dim, 8u);
            ASSERT_EQ(view.n_kv_heads, 2u);
            ASSERT_EQ(view.fp16_base == nullptr, S + W == 0);
          }
        }
        model.check_all();
        for (uint32_t l = 0; l < 2; ++l) check_bytes(cache, a, l, ka, va);
        const uint32_t packed = len <= S ? 0 : std::max(S, len > W ? len - W : 0) - S;
        EXPECT_EQ(cache.stats().pages_used, 2 * ((packed + P - 1) / P));
        EXPECT_EQ(cache.stats().fp16_region_bytes, S + W == 0 ? 0 : 2 * 2 * (2 * 2 * (S + W) * 8 * 2));
      }
}

TEST(CacheAppend, PackedBytesDoNotDependOnHowTokensAreSplitIntoCalls) {
  const ModelShape s = make_shape(1, 2, 32);
  auto plan = make_plan(s);
  for (uint32_t W : {0u, 6u}) {
    Cache one(plan, ctx(1), config(5, 40, 3, W)), many(plan, ctx(1), config(5, 40, 3, W));
    const auto k = random_rows(37, s, 1), v = random_rows(37, s, 2);
    const uint64_t a = one.add_sequence(), b = many.add_sequence();
    const uint32_t n = 37;
    one.append(0, &a, &n, 1, k.data(), v.data(), DType::f32);
    const size_t row = 2 * 32;
    for (uint32_t t = 0, step = 1; t < 37; t += step, step = step % 4 + 1) {
      const uint32_t c = std::min(step, 37 - t);
      many.append(0, &b, &c, 1, k.data() + t * row, v.data() + t * row, DType::f32);
    }
    EXPECT_EQ(page_bytes_of(one, a), page_bytes_of(many, b)) << "window " << W;
    EXPECT_EQ(snapshot(one), snapshot(many));
  }
}

TEST(CacheAppend, Fp16AndBf16InputsConvertExactly) {
  const ModelShape s = make_shape(2, 2, 64);
  PlanOptions o;
  o.fp16_layers = {1};
  auto plan = make_plan(s, o);
  for (DType t : {DType::f16, DType::bf16})
    for (uint32_t W : {0u, 4u}) {
      Cache typed(plan, ctx(3), config(4, 20, 1, W)), f32(plan, ctx(3), config(4, 20, 1, W));
      Model model(f32);
      const uint64_t a = typed.add_sequence(), b = f32.add_sequence();
      model.add(b);
      for (uint32_t n : {3u, 6u, 1u}) {
        const auto kb = to_bits(random_rows(n, s, n), t), vb = to_bits(random_rows(n, s, n + 50, 2.0f), t);
        for (uint32_t l = 0; l < 2; ++l) {
          typed.append(l, &a, &n, 1, kb.data(), vb.data(), t);
          append_both(f32, model, l, {b}, {n}, from_bits(kb, t), from_bits(vb, t));
        }
      }
      model.check_all();
      EXPECT_EQ(page_bytes_of(typed, a), page_bytes_of(f32, b)) << dtype_name(t);
      EXPECT_EQ(snapshot(typed), snapshot(f32)) << dtype_name(t);
    }
}

TEST(CacheAppend, HeadDimsAndPartialRotary) {
  struct Case {
    uint32_t D, R;
    RopeLayout layout;
  };
  for (const Case& c : {Case{8, 8, RopeLayout::interleaved}, Case{64, 64, RopeLayout::split_half},
                        Case{128, 64, RopeLayout::split_half}, Case{256, 128, RopeLayout::split_half},
                        Case{128, 96, RopeLayout::interleaved}}) {
    SCOPED_TRACE("D " + std::to_string(c.D) + " R " + std::to_string(c.R));
    const ModelShape s = make_shape(2, 2, c.D, c.R, c.layout);
    PlanOptions o;
    o.fp16_layers = {1};
    auto plan = make_plan(s, o);
    Cache cache(plan, ctx(3), config(3, 16, 1, 2));
    Model model(cache);
    const uint64_t a = cache.add_sequence();
    model.add(a);
    std::vector<float> ka, va;
    for (uint32_t n : {2u, 5u, 1u}) {
      const auto k = random_rows(n, s, n * 7), v = random_rows(n, s, n * 7 + 1, 0.5f);
      for (uint32_t l = 0; l < 2; ++l) append_both(cache, model, l, {a}, {n}, k, v);
      ka.insert(ka.end(), k.begin(), k.end());
      va.insert(va.end(), v.begin(), v.end());
    }
    model.check_all();
    for (uint32_t l = 0; l < 2; ++l) check_bytes(cache, a, l, ka, va);
    // Packed K is a real approximation of the input: relative error well below 1 at >= 1 bit.
    std::vector<float> k(8 * 2 * size_t(c.D));
    cache.read(a, 0, 0, 8, k.data(), nullptr);
    double err = 0, ref = 0;
    for (size_t i = 2 * c.D; i < 6 * 2 * size_t(c.D); ++i) {  // tokens 1..5 are packed
      err += (k[i] - ka[i]) * double(k[i] - ka[i]);
      ref += double(ka[i]) * ka[i];
    }
    EXPECT_LT(err / ref, 0.2);
    EXPECT_GT(err, 0.0);
  }
}
