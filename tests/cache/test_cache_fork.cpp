// Fork (shared pages, copy-on-write, nothing re-quantized) and remove (pages return).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "cache_test_util.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using namespace kvbits::cachetest;

namespace {

CacheConfig config(uint32_t page_size, uint64_t max_pages, int64_t sink = 0, int64_t window = 0) {
  CacheConfig c;
  c.page_size = page_size;
  c.max_pages = max_pages;
  c.sink_tokens = sink;
  c.window_tokens = window;
  return c;
}

struct Fixture {
  ModelShape shape = make_shape(2, 2, 16);
  std::shared_ptr<const Plan> plan = make_plan(shape);
  uint64_t seed = 77;

  // Appends n tokens to every layer of each sequence (one call per layer).
  void grow(Cache& cache, Model& model, const std::vector<uint64_t>& seqs, uint32_t n) {
    const std::vector<uint32_t> counts(seqs.size(), n);
    const size_t total = seqs.size() * n;
    const auto k = random_rows(total, shape, ++seed), v = random_rows(total, shape, ++seed);
    for (uint32_t l = 0; l < shape.n_layers; ++l) append_both(cache, model, l, seqs, counts, k, v);
  }
};

std::vector<uint32_t> page_table(const Cache& cache, uint64_t seq, uint32_t layer) {
  const SeqLayerView v = cache.view(seq, layer);
  const uint32_t P = cache.config().page_size;
  const size_t n = v.qend > v.sink ? (v.qend - v.sink + P - 1) / P : 0;
  return std::vector<uint32_t>(v.pages, v.pages + n);
}

}  // namespace

TEST(CacheFork, SharesEveryPageAndCopiesExactlyOnePageOnWrite) {
  Fixture f;
  Cache cache(f.plan, ctx(), config(4, 32));
  Model model(cache);
  const uint64_t src = cache.add_sequence();
  model.add(src);
  f.grow(cache, model, {src}, 10);  // pages 0, 1 full, page 2 holds rows 0-1
  ASSERT_EQ(cache.stats().pages_used, 3u);
  const auto src_bytes = page_bytes_of(cache, src);

  const uint64_t fork = cache.fork_sequence(src, 10);
  model.fork(src, fork, 10);
  EXPECT_EQ(fork, 1u);
  EXPECT_EQ(cache.stats().pages_used, 3u);  // the prefix takes no page
  EXPECT_EQ(cache.stats().sequences, 2u);
  EXPECT_EQ(cache.stats().tokens, 20u);
  EXPECT_EQ(page_table(cache, fork, 0), page_table(cache, src, 0));
  model.check_all();

  // Appending to the fork copies the partial page once (in layer 0), and layer 1 reuses it.
  f.grow(cache, model, {fork}, 1);
  EXPECT_EQ(cache.stats().pages_used, 4u);
  const auto ft = page_table(cache, fork, 0), st = page_table(cache, src, 0);
  EXPECT_EQ(ft[0], st[0]);
  EXPECT_EQ(ft[1], st[1]);
  EXPECT_NE(ft[2], st[2]);
  EXPECT_EQ(page_bytes_of(cache, src), src_bytes);  // src untouched
  model.check_all();

  // src now owns its page 2 alone: its append writes in place.
  f.grow(cache, model, {src}, 2);
  EXPECT_EQ(cache.stats().pages_used, 4u);
  model.check_all();
  // Both continue past the page: one new page each.
  f.grow(cache, model, {src, fork}, 3);
  EXPECT_EQ(cache.stats().pages_used, 6u);
  model.check_all();

  // Removing src frees only what the fork does not share (its pages 2, 3).
  cache.remove_sequence(src);
  model.remove(src);
  EXPECT_EQ(cache.stats().pages_used, 4u);
  EXPECT_FALSE(cache.has_sequence(src));
  model.check_all();
  cache.remove_sequence(fork);
  model.remove(fork);
  EXPECT_EQ(cache.stats().pages_used, 0u);
  EXPECT_EQ(cache.stats().sequences, 0u);
  EXPECT_EQ(cache.stats().tokens, 0u);
  EXPECT_EQ(cache.add_sequence(), 0u);  // ids are reused
}

TEST(CacheFork, PrefixInsideAPageCopiesOnlyTheForksRows) {
  Fixture f;
  Cache cache(f.plan, ctx(), config(4, 32));
  Model model(cache);
  const uint64_t src = cache.add_sequence();
  model.add(src);
  f.grow(cache, model, {src}, 11);
  const uint64_t fork = cache.fork_sequence(src, 6);  // rows 0-1 of src's page 1
  model.fork(src, fork, 6);
  EXPECT_EQ(cache.length(fork, 0), 6u);
  EXPECT_EQ(page_table(cache, fork, 1).size(), 2u);
  EXPECT_EQ(cache.stats().pages_used, 3u);
  model.check_all();
  f.grow(cache, model, {fork}, 1);
  EXPECT_EQ(cache.stats().pages_used, 4u);
  model.check_all();
  // The copy holds rows 0-2 (two shared, one new); rows 3.. are zero, not src's tokens 7-8.
  for (uint32_t l = 0; l < 2; ++l)
    for (uint32_t h = 0; h < 2; ++h) {
      const PageLayout& lay = cache.page_layout(l, h);
      const uint8_t* page = cache.page_data(l, h, page_table(cache, fork, l)[1]);
      const uint8_t* shared = cache.page_data(l, h, page_table(cache, src, l)[1]);
      EXPECT_EQ(0, std::memcmp(page + lay.k_codes, shared + lay.k_codes, 2 * lay.k_code_bytes));
      EXPECT_TRUE(std::all_of(page + lay.k_codes + 3 * lay.k_code_bytes, page + lay.k_scales,
                              [](uint8_t b) { return b == 0; }));
      EXPECT_TRUE(std::all_of(page + lay.v_scales + 3 * 2, page + lay.page_bytes, [](uint8_t b) { return b == 0; }));
    }
}

TEST(CacheFork, SinkAndWindowAreCopiedAndPackedTokensStayPacked) {
  Fixture f;
  for (uint32_t prefix : {0u, 1u, 2u, 7u, 12u, 15u, 17u, 20u}) {
    SCOPED_TRACE("prefix " + std::to_string(prefix));
    Cache cache(f.plan, ctx(), config(3, 64, 2, 5));
    Model model(cache);
    const uint64_t src = cache.add_sequence();
    model.add(src);
    f.grow(cache, model, {src}, 20);  // qend = 15: tokens 2..14 packed, 15..19 in the ring
    const uint64_t pages_before = cache.stats().pages_used;
    const uint64_t fork = cache.fork_sequence(src, prefix);
    model.fork(src, fork, prefix);
    EXPECT_EQ(cache.stats().pages_used, pages_before);
    const SeqLayerView v = cache.view(fork, 0);
    EXPECT_EQ(v.len, prefix);
    EXPECT_EQ(v.qend, std::min(prefix, 15u));
    EXPECT_EQ(v.fp16_base == nullptr, prefix == 0);
    model.check_all();
    // Both keep growing; every token of both still reads back as expected.
    f.grow(cache, model, {fork, src}, 4);
    f.grow(cache, model, {fork}, 9);
    model.check_all();
  }
}

TEST(CacheFork, ThreeSharersWritingInOneCallNeedTwoCopies) {
  Fixture f;
  Cache cache(f.plan, ctx(), config(4, 4));
  Model model(cache);
  const uint64_t a = cache.add_sequence();
  model.add(a);
  f.grow(cache, model, {a}, 6);  // 2 pages, the second partial
  const uint64_t b = cache.fork_sequence(a, 6), c = cache.fork_sequence(b, 5);
  model.fork(a, b, 6);
  model.fork(b, c, 5);
  ASSERT_EQ(cache.stats().pages_used, 2u);
  // All three write into the shared partial page: a and b copy it, c then owns it alone.
  // The pool has exactly the 2 free pages this needs.
  f.grow(cache, model, {a, b, c}, 1);
  EXPECT_EQ(cache.stats().pages_used, 4u);
  model.check_all();
}

TEST(CacheFork, ErrorsLeaveTheCacheAsItWas) {
  Fixture f;
  CacheConfig cfg = config(4, 16);
  cfg.max_sequences = 2;
  Cache cache(f.plan, ctx(), cfg);
  Model model(cache);
  const uint64_t a = cache.add_sequence();
  model.add(a);
  f.grow(cache, model, {a}, 5);
  // Layer 1 one token shorter than layer 0.
  const auto k = random_rows(1, f.shape, 1), v = random_rows(1, f.shape, 2);
  append_both(cache, model, 0, {a}, {1}, k, v);
  const Snapshot before = snapshot(cache);
  auto expect = [&](StatusCode code, auto&& call) {
    try {
      call();
      ADD_FAILURE() << "expected " << status_name(code);
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code) << e.what();
    }
    EXPECT_TRUE(snapshot(cache) == before);
  };
  expect(StatusCode::not_found, [&] { cache.fork_sequence(9, 1); });
  expect(StatusCode::invalid_argument, [&] { cache.fork_sequence(a, 6); });  // layer 1 holds 5
  expect(StatusCode::not_found, [&] { cache.remove_sequence(5); });
  const uint64_t b = cache.fork_sequence(a, 5);
  model.fork(a, b, 5);
  const Snapshot full = snapshot(cache);
  try {
    cache.fork_sequence(a, 1);
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::capacity_exhausted);
  }
  try {
    cache.add_sequence();
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::capacity_exhausted);
  }
  EXPECT_TRUE(snapshot(cache) == full);
  model.check_all();
}
