// The bytes a cache holds do not depend on the number of worker threads.
#include <gtest/gtest.h>

#include "cache_test_util.hpp"

using namespace kvbits;
using namespace kvbits::cachetest;

TEST(CacheThreads, OneAndFourThreadsGiveIdenticalPageBytes) {
  const ModelShape s = make_shape(2, 3, 64);
  PlanOptions o;
  o.fp16_layers = {1};
  auto plan = make_plan(s, o);
  Context one{ContextConfig{Backend::cpu, 0, 1}}, four{ContextConfig{Backend::cpu, 0, 4}};
  for (int64_t window : {0, 7}) {
    CacheConfig c;
    c.page_size = 5;
    c.max_pages = 200;
    c.sink_tokens = 1;
    c.window_tokens = window;
    Cache a(plan, one, c), b(plan, four, c);
    std::vector<uint64_t> ids;
    for (int i = 0; i < 3; ++i) {
      ids.push_back(a.add_sequence());
      ASSERT_EQ(b.add_sequence(), ids.back());
    }
    uint64_t seed = 9;
    for (std::vector<uint32_t> n : {std::vector<uint32_t>{40, 1, 17}, {1, 1, 1}, {9, 30, 2}}) {
      uint32_t total = 0;
      for (uint32_t x : n) total += x;
      const auto k = random_rows(total, s, ++seed), v = random_rows(total, s, ++seed);
      for (uint32_t l = 0; l < 2; ++l) {
        a.append(l, ids.data(), n.data(), 3, k.data(), v.data(), DType::f32);
        b.append(l, ids.data(), n.data(), 3, k.data(), v.data(), DType::f32);
      }
    }
    for (uint64_t id : ids) {
      EXPECT_FALSE(page_bytes_of(a, id).empty());
      EXPECT_EQ(page_bytes_of(a, id), page_bytes_of(b, id)) << "seq " << id << " window " << window;
    }
    EXPECT_TRUE(snapshot(a) == snapshot(b));
  }
}
