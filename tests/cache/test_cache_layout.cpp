// Page layouts, pool geometry and construction errors (docs/cache-layout.md §Pages).
#include <gtest/gtest.h>

#include <string>

#include "cache_test_util.hpp"
#include "kvbits/bitpack.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using namespace kvbits::cachetest;

namespace {

Context& ctx1() {
  static Context c{ContextConfig{Backend::cpu, 0, 1}};
  return c;
}

CacheConfig config(uint32_t page_size, uint64_t max_pages) {
  CacheConfig c;
  c.page_size = page_size;
  c.max_pages = max_pages;
  return c;
}

size_t a16(size_t x) { return (x + 15) / 16 * 16; }
size_t a64(size_t x) { return (x + 63) / 64 * 64; }

template <class F>
void expect_status(StatusCode code, F&& f, const std::string& needle = "") {
  try {
    f();
    ADD_FAILURE() << "no error, expected " << status_name(code);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    if (!needle.empty()) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

}  // namespace

TEST(CacheLayout, WorkedExampleK3V3HistogramD128Page64) {
  // The documented example: 1b:9 2b:15 3b:19 4b:11 5b:8 6b:2 blocks, V at 3 bits.
  auto plan = std::make_shared<Plan>(*make_plan(make_shape(1, 1, 128)));
  std::vector<uint8_t> widths;
  for (auto [bits, count] : {std::pair{1, 9}, {2, 15}, {3, 19}, {4, 11}, {5, 8}, {6, 2}})
    widths.insert(widths.end(), size_t(count), uint8_t(bits));
  set_head_widths(*plan, 0, 0, widths);
  ASSERT_EQ(plan->head(0, 0).v_bits, 3);
  Cache cache(plan, ctx1(), config(64, 4));
  const PageLayout& l = cache.page_layout(0, 0);
  EXPECT_FALSE(l.fp16);
  EXPECT_EQ(l.k_code_bytes, 50u);
  EXPECT_EQ(l.n_k_scales, 6u);
  EXPECT_EQ(l.v_code_bytes, 48u);
  EXPECT_EQ(l.k_codes, 0u);
  EXPECT_EQ(l.k_scales, 3200u);
  EXPECT_EQ(l.v_codes, 3968u);
  EXPECT_EQ(l.v_scales, 7040u);
  EXPECT_EQ(l.page_bytes, 7168u);  // 64 tokens x 112 B, no padding at all
  EXPECT_EQ(l.page_bytes, 64 * plan->bytes_per_token(0, 0));
  EXPECT_EQ(cache.stats().pool_bytes, 4u * 7168u);
}

TEST(CacheLayout, UniformK3V3D128Page64) {
  PlanOptions o;
  o.method = Method::uniform_tq_mse;
  auto plan = make_plan(make_shape(1, 2, 128), o);
  Cache cache(plan, ctx1(), config(64, 2));
  for (uint32_t h = 0; h < 2; ++h) {
    const PageLayout& l = cache.page_layout(0, h);
    EXPECT_EQ(l.k_code_bytes, 48u);
    EXPECT_EQ(l.n_k_scales, 1u);
    EXPECT_EQ(l.k_scales, 3072u);
    EXPECT_EQ(l.v_codes, 3200u);
    EXPECT_EQ(l.v_scales, 6272u);
    EXPECT_EQ(l.page_bytes, 6400u);
  }
}

TEST(CacheLayout, OffsetsFollowTheAlignmentFormulasForOddPageSizes) {
  PlanOptions o;
  o.fp16_layers = {1};
  o.k_avg_bits = 2.5;
  const ModelShape s = make_shape(2, 2, 8, 0, RopeLayout::interleaved);
  auto plan = make_plan(s, o);
  for (uint32_t P : {1u, 3u, 5u, 64u, 100u}) {
    Cache cache(plan, ctx1(), config(P, 3));
    uint64_t column = 0;
    for (uint32_t h = 0; h < 2; ++h) {
      const HeadQuantizers& q = cache.quantizers(0, h);
      const PageLayout& l = cache.page_layout(0, h);
      EXPECT_EQ(l.k_code_bytes, q.k.code_bytes());
      EXPECT_EQ(l.n_k_scales, q.k.n_groups());
      EXPECT_EQ(l.v_code_bytes, packed_bytes(8, plan->head(0, h).v_bits));
      EXPECT_EQ(l.k_codes, 0u);
      EXPECT_EQ(l.k_scales, a16(P * l.k_code_bytes));
      EXPECT_EQ(l.v_codes, a16(l.k_scales + 2 * P * l.n_k_scales));
      EXPECT_EQ(l.v_scales, a16(l.v_codes + P * l.v_code_bytes));
      EXPECT_EQ(l.page_bytes, a64(l.v_scales + 2 * P));
      column += l.page_bytes;
      // The fp16 layer: K rows then V rows of D fp16 values.
      const PageLayout& f = cache.page_layout(1, h);
      EXPECT_TRUE(f.fp16);
      EXPECT_EQ(f.k_code_bytes, 16u);
      EXPECT_EQ(f.v_code_bytes, 16u);
      EXPECT_EQ(f.n_k_scales, 0u);
      EXPECT_EQ(f.k_codes, 0u);
      EXPECT_EQ(f.k_scales, a16(16 * P));
      EXPECT_EQ(f.v_codes, f.k_scales);
      EXPECT_EQ(f.v_scales, a16(f.v_codes + 16 * P));
      EXPECT_EQ(f.page_bytes, a64(f.v_scales));
      column += f.page_bytes;
    }
    EXPECT_EQ(cache.stats().pool_bytes, 3 * column);
  }
}

TEST(CacheLayout, RegionsArePageArraysInLayerThenHeadOrderOnCacheLines) {
  auto plan = make_plan(make_shape(2, 3, 16));
  Cache cache(plan, ctx1(), config(3, 5));
  const uint8_t* prev_end = cache.page_data(0, 0, 0);
  for (uint32_t l = 0; l < 2; ++l)
    for (uint32_t h = 0; h < 3; ++h) {
      const size_t pb = cache.page_layout(l, h).page_bytes;
      EXPECT_EQ(cache.page_data(l, h, 0), prev_end);
      for (uint32_t p = 0; p < 5; ++p) {
        EXPECT_EQ(reinterpret_cast<uintptr_t>(cache.page_data(l, h, p)) % 64, 0u);
        EXPECT_EQ(cache.page_data(l, h, p), cache.page_data(l, h, 0) + p * pb);
      }
      prev_end = cache.page_data(l, h, 0) + 5 * pb;
    }
  const CacheStats st = cache.stats();
  EXPECT_EQ(st.pages_total, 5u);
  EXPECT_EQ(st.pages_used, 0u);
  EXPECT_EQ(st.sequences, 0u);
  EXPECT_EQ(st.tokens, 0u);
  EXPECT_EQ(st.packed_bytes_used, 0u);
  EXPECT_EQ(st.fp16_region_bytes, 0u);
  EXPECT_EQ(st.pool_bytes, size_t(prev_end - cache.page_data(0, 0, 0)));
}

TEST(CacheLayout, SinkAndWindowComeFromThePlanUnlessConfigured) {
  PlanOptions o;
  o.sink_tokens = 4;
  o.window_tokens = 16;
  auto plan = make_plan(make_shape(1, 1, 8), o);
  CacheConfig c = config(8, 2);
  Cache from_plan(plan, ctx1(), c);
  EXPECT_EQ(from_plan.sink_tokens(), 4u);
  EXPECT_EQ(from_plan.window_tokens(), 16u);
  c.sink_tokens = 0;
  c.window_tokens = 3;
  Cache configured(plan, ctx1(), c);
  EXPECT_EQ(configured.sink_tokens(), 0u);
  EXPECT_EQ(configured.window_tokens(), 3u);
  EXPECT_EQ(configured.config().window_tokens, 3);
}

TEST(CacheLayout, ConstructionErrors) {
  auto plan = make_plan(make_shape(2, 2, 8), [] {
    PlanOptions o;
    o.fp16_layers = {1};
    return o;
  }());
  auto make = [&](CacheConfig c) { Cache cache(plan, ctx1(), c); };
  expect_status(StatusCode::null_pointer, [&] { Cache c(nullptr, ctx1(), config(4, 4)); });
  expect_status(StatusCode::invalid_argument, [&] { make(config(0, 4)); }, "page_size");
  expect_status(StatusCode::invalid_argument, [&] { make(config(4097, 4)); }, "page_size");
  expect_status(StatusCode::invalid_argument, [&] { make(config(4, 0)); }, "max_pages");
  expect_status(StatusCode::invalid_argument, [&] { make(config(4, uint64_t(1) << 32)); }, "max_pages");
  CacheConfig c = config(4, 4);
  c.max_sequences = 0;
  expect_status(StatusCode::invalid_argument, [&] { make(c); }, "max_sequences");
  c = config(4, 4);
  c.sink_tokens = -2;
  expect_status(StatusCode::invalid_argument, [&] { make(c); }, "sink_tokens");
  c = config(4, 4);
  c.window_tokens = (int64_t(1) << 24) + 1;
  expect_status(StatusCode::invalid_argument, [&] { make(c); }, "window_tokens");
  // A pool no machine can hold: out_of_memory naming the byte count.
  expect_status(StatusCode::out_of_memory, [&] { make(config(4096, 0xFFFFFFFFull)); }, "bytes");
  // A broken plan.
  auto broken = std::make_shared<Plan>(*plan);
  broken->layers[0].heads[0].v_bits = 0;
  expect_status(StatusCode::invalid_argument, [&] { Cache x(broken, ctx1(), config(4, 4)); }, "plan");
  // Accessors.
  Cache cache(plan, ctx1(), config(4, 4));
  expect_status(StatusCode::invalid_argument, [&] { cache.quantizers(1, 0); }, "16 bits");
  expect_status(StatusCode::invalid_argument, [&] { cache.page_layout(2, 0); }, "layer");
  expect_status(StatusCode::invalid_argument, [&] { cache.page_layout(0, 2); }, "kv head");
  expect_status(StatusCode::invalid_argument, [&] { cache.page_data(0, 0, 4); }, "page");
  expect_status(StatusCode::not_found, [&] { cache.length(0, 0); });
  expect_status(StatusCode::not_found, [&] { cache.view(3, 0); });
}
