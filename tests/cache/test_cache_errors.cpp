// Every bad append/read gets its documented status and leaves the cache exactly as it was;
// an exhausted pool too.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>

#include "cache_test_util.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using namespace kvbits::cachetest;

namespace {

struct ErrorFixture {
  ModelShape shape = make_shape(2, 2, 16);
  std::shared_ptr<const Plan> plan = make_plan(shape);
  std::unique_ptr<Cache> cache;
  std::unique_ptr<Model> model;
  uint64_t a = 0, b = 0;

  ErrorFixture(uint64_t max_pages, int64_t sink, int64_t window) {
    CacheConfig c;
    c.page_size = 4;
    c.max_pages = max_pages;
    c.sink_tokens = sink;
    c.window_tokens = window;
    cache = std::make_unique<Cache>(plan, ctx(), c);
    model = std::make_unique<Model>(*cache);
    a = cache->add_sequence();
    b = cache->add_sequence();
    model->add(a);
    model->add(b);
    const auto k = random_rows(13, shape, 1), v = random_rows(13, shape, 2);
    for (uint32_t l = 0; l < 2; ++l) append_both(*cache, *model, l, {a, b}, {6, 7}, k, v);
  }

  // Runs the call, expects the status (and a message fragment), then proves nothing changed.
  template <class F>
  void expect_rejected(StatusCode code, F&& call, const std::string& needle = "") {
    const Snapshot before = snapshot(*cache);
    try {
      call();
      ADD_FAILURE() << "no error, expected " << status_name(code);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
      if (!needle.empty()) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      }
    }
    EXPECT_TRUE(snapshot(*cache) == before);
    model->check_all();
  }
};

}  // namespace

TEST(CacheErrors, BadAppendsChangeNothing) {
  for (int64_t window : {0, 3}) {
    SCOPED_TRACE("window " + std::to_string(window));
    ErrorFixture f(32, 1, window);
    Cache& c = *f.cache;
    const std::vector<uint64_t> ids = {f.a, f.b};
    const std::vector<uint32_t> n = {2, 3};
    auto k = random_rows(5, f.shape, 3), v = random_rows(5, f.shape, 4);
    const std::vector<uint64_t> dup = {f.a, f.a}, unknown = {f.a, 7};
    const std::vector<uint32_t> zero = {2, 0};

    f.expect_rejected(StatusCode::null_pointer, [&] { c.append(0, nullptr, n.data(), 2, k.data(), v.data(), DType::f32); });
    f.expect_rejected(StatusCode::null_pointer, [&] { c.append(0, ids.data(), nullptr, 2, k.data(), v.data(), DType::f32); });
    f.expect_rejected(StatusCode::null_pointer, [&] { c.append(0, ids.data(), n.data(), 2, nullptr, v.data(), DType::f32); });
    f.expect_rejected(StatusCode::null_pointer, [&] { c.append(0, ids.data(), n.data(), 2, k.data(), nullptr, DType::f32); });
    f.expect_rejected(StatusCode::invalid_argument,
                      [&] { c.append(2, ids.data(), n.data(), 2, k.data(), v.data(), DType::f32); }, "layer 2");
    f.expect_rejected(StatusCode::not_found,
                      [&] { c.append(0, unknown.data(), n.data(), 2, k.data(), v.data(), DType::f32); }, "id 7");
    f.expect_rejected(StatusCode::invalid_argument,
                      [&] { c.append(0, dup.data(), n.data(), 2, k.data(), v.data(), DType::f32); }, "twice");
    f.expect_rejected(StatusCode::invalid_argument,
                      [&] { c.append(0, ids.data(), n.data(), 2, k.data(), v.data(), DType(9)); }, "dtype");
    f.expect_rejected(StatusCode::invalid_argument,
                      [&] { c.append(0, ids.data(), n.data(), 0, k.data(), v.data(), DType::f32); }, "no sequences");
    f.expect_rejected(StatusCode::invalid_argument,
                      [&] { c.append(0, ids.data(), zero.data(), 2, k.data(), v.data(), DType::f32); }, "n_tokens[1]");

    // Non-finite values, named by sequence, token, head and dim: b's last token (its 10th).
    const size_t last = (4 * 2 + 1) * 16 + 5;  // row 4, head 1, dim 5
    for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
      k[last] = bad;
      f.expect_rejected(StatusCode::invalid_argument,
                        [&] { c.append(1, ids.data(), n.data(), 2, k.data(), v.data(), DType::f32); },
                        "K value at sequence 1, token 9 (row 4 of the call), kv head 1, dim 5");
      k[last] = 0.5f;
      v[3] = bad;
      f.expect_rejected(StatusCode::invalid_argument,
                        [&] { c.append(1, ids.data(), n.data(), 2, k.data(), v.data(), DType::f32); },
                        "V value at sequence 0, token 6");
      v[3] = 0.5f;
    }
    // A value fp16 cannot hold, where it is to be held in fp16 (with a window: every token).
    k[last] = 1e6f;
    if (window > 0) {
      f.expect_rejected(StatusCode::invalid_argument,
                        [&] { c.append(1, ids.data(), n.data(), 2, k.data(), v.data(), DType::f32); }, "fp16 range");
    } else {
      // Without a window it is packed: fine as a value, but its group norm overflows the scale.
      f.expect_rejected(StatusCode::invalid_argument,
                        [&] { c.append(1, ids.data(), n.data(), 2, k.data(), v.data(), DType::f32); },
                        "too large for an fp16 scale");
    }
    k[last] = 0.5f;
    // The clean call then succeeds.
    append_both(c, *f.model, 1, ids, n, k, v);
    f.model->check_all();
  }
}

TEST(CacheErrors, BadReadsAndRemovals) {
  ErrorFixture f(32, 0, 0);
  Cache& c = *f.cache;
  std::vector<float> k(100 * 32), v(k.size());
  f.expect_rejected(StatusCode::not_found, [&] { c.read(5, 0, 0, 1, k.data(), v.data()); });
  f.expect_rejected(StatusCode::invalid_argument, [&] { c.read(f.a, 2, 0, 1, k.data(), v.data()); });
  f.expect_rejected(StatusCode::invalid_argument, [&] { c.read(f.a, 0, 5, 2, k.data(), v.data()); }, "exceed");
  f.expect_rejected(StatusCode::invalid_argument, [&] { c.read(f.a, 0, 7, 0, k.data(), v.data()); });
  f.expect_rejected(StatusCode::invalid_argument, [&] { c.length(f.a, 2); });
  f.expect_rejected(StatusCode::not_found, [&] { c.remove_sequence(9); });
}

TEST(CacheErrors, ExhaustedPoolKeepsEveryEarlierToken) {
  // 2 layers x 2 heads; a: 6 tokens -> 2 pages, b: 7 tokens -> 2 pages; pool of 5.
  ErrorFixture f(5, 0, 0);
  Cache& c = *f.cache;
  ASSERT_EQ(c.stats().pages_used, 4u);
  const std::vector<uint64_t> ids = {f.a, f.b};
  // a needs 1 page for tokens 8..9, b fits its page for token 7, then needs 1 for 8..: 2 > 1 free.
  const std::vector<uint32_t> n = {4, 2};
  const auto k = random_rows(6, f.shape, 5), v = random_rows(6, f.shape, 6);
  f.expect_rejected(StatusCode::capacity_exhausted,
                    [&] { c.append(0, ids.data(), n.data(), 2, k.data(), v.data(), DType::f32); },
                    "needs 2 new pages, 1 free");
  // A call that fits still works, and fills the pool.
  append_both(c, *f.model, 0, {f.a}, {3}, random_rows(3, f.shape, 7), random_rows(3, f.shape, 8));
  EXPECT_EQ(c.stats().pages_used, 5u);
  // Layer 1 reuses the pages layer 0 took.
  append_both(c, *f.model, 1, {f.a}, {3}, random_rows(3, f.shape, 9), random_rows(3, f.shape, 10));
  EXPECT_EQ(c.stats().pages_used, 5u);
  f.model->check_all();
  // A fork of a partial page: appending to it needs a copy, and none is free.
  const uint64_t fork = c.fork_sequence(f.b, 7);
  f.model->fork(f.b, fork, 7);
  const uint32_t one = 1;
  f.expect_rejected(StatusCode::capacity_exhausted,
                    [&] { c.append(0, &fork, &one, 1, k.data(), v.data(), DType::f32); }, "needs 1 new pages, 0 free");
  // Removing a returns its pages; then it works.
  c.remove_sequence(f.a);
  f.model->remove(f.a);
  EXPECT_EQ(c.stats().pages_used, 2u);
  append_both(c, *f.model, 0, {fork}, {1}, random_rows(1, f.shape, 11), random_rows(1, f.shape, 12));
  EXPECT_EQ(c.stats().pages_used, 3u);
  f.model->check_all();
}
