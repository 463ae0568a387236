// The call contract: determinism across thread counts, decode == extend with q_len 1, every
// bad input's status, and that a failed call writes nothing (out/lse keep a sentinel).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "attention_scenario.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;
using namespace kvbits::test_attn;

namespace {

ScenarioConfig base_config(uint32_t threads) {
  ScenarioConfig c;
  c.shape = make_shape(2, 8, 2, 64);
  c.cache.page_size = 16;
  c.cache.sink_tokens = 4, c.cache.window_tokens = 16;
  c.lengths = {1, 15, 16, 17, 90, 300};
  c.append_chunk = 13;
  c.threads = threads;
  c.seed = 77;
  return c;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), sizeof(float) * a.size()) == 0;
}

constexpr float kSentinel = -12345.5f;

StatusCode status_of(const std::function<void()>& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.code();
  }
  return StatusCode::ok;
}

}  // namespace

TEST(AttentionContract, OneAndThreeThreadsGiveIdenticalBits) {
  Scenario one(base_config(1)), three(base_config(3));
  const ModelShape& sh = one.shape();
  const size_t n = one.seqs().size();
  const std::vector<uint32_t> q_len = {1, 7, 16, 17, 20, 64};
  size_t rows = 0;
  for (uint32_t x : q_len) rows += x;
  const auto q = one.queries(rows, 3);
  for (uint32_t layer = 0; layer < 2; ++layer) {
    std::vector<float> out1(rows * sh.n_q_heads * sh.head_dim), out3(out1.size());
    std::vector<float> lse1(rows * sh.n_q_heads), lse3(lse1.size());
    attention_extend(one.cache(), layer, one.seqs().data(), q_len.data(), n, q.data(), DType::f32, out1.data(),
                     lse1.data(), {});
    attention_extend(three.cache(), layer, three.seqs().data(), q_len.data(), n, q.data(), DType::f32, out3.data(),
                     lse3.data(), {});
    EXPECT_TRUE(same_bits(out1, out3)) << "extend, layer " << layer;
    EXPECT_TRUE(same_bits(lse1, lse3)) << "extend, layer " << layer;
    std::vector<float> d1(n * sh.n_q_heads * sh.head_dim), d3(d1.size());
    attention_decode(one.cache(), layer, one.seqs().data(), n, q.data(), DType::f32, d1.data(), nullptr, {});
    attention_decode(three.cache(), layer, three.seqs().data(), n, q.data(), DType::f32, d3.data(), nullptr, {});
    EXPECT_TRUE(same_bits(d1, d3)) << "decode, layer " << layer;
  }
}

TEST(AttentionContract, DecodeEqualsExtendWithOneQueryPerSequence) {
  Scenario sc(base_config(2));
  const ModelShape& sh = sc.shape();
  const size_t n = sc.seqs().size();
  const auto q = sc.queries(n, 9);
  const std::vector<uint32_t> ones(n, 1);
  std::vector<float> dec(n * sh.n_q_heads * sh.head_dim), ext(dec.size()), dl(n * sh.n_q_heads), el(dl.size());
  AttentionParams p;
  p.scale = 0.2f;
  attention_decode(sc.cache(), 1, sc.seqs().data(), n, q.data(), DType::f32, dec.data(), dl.data(), p);
  attention_extend(sc.cache(), 1, sc.seqs().data(), ones.data(), n, q.data(), DType::f32, ext.data(), el.data(), p);
  EXPECT_TRUE(same_bits(dec, ext));
  EXPECT_TRUE(same_bits(dl, el));
}

TEST(AttentionContract, BadInputsGiveTheirStatusAndWriteNothing) {
  Scenario sc(base_config(2));
  const ModelShape& sh = sc.shape();
  const uint64_t empty = sc.cache().add_sequence();  // holds no tokens
  const std::vector<uint64_t> seqs = {sc.seqs()[4], sc.seqs()[1]};  // lengths 90 and 15
  auto q = sc.queries(40, 1);
  const size_t values = 40 * sh.n_q_heads * sh.head_dim;
  std::vector<float> out(values, kSentinel), lse(40 * sh.n_q_heads, kSentinel);
  auto untouched = [&] {
    for (float x : out)
      if (x != kSentinel) return false;
    for (float x : lse)
      if (x != kSentinel) return false;
    return true;
  };
  auto decode = [&](const uint64_t* s, size_t n, const void* qp, DType t, float* o, AttentionParams p = {},
                    uint32_t layer = 0) {
    return status_of([&] { attention_decode(sc.cache(), layer, s, n, qp, t, o, lse.data(), p); });
  };
  const uint32_t good_len[] = {3, 15};
  auto extend = [&](const uint32_t* ql, const uint64_t* s = nullptr) {
    return status_of([&] {
      attention_extend(sc.cache(), 0, s ? s : seqs.data(), ql, 2, q.data(), DType::f32, out.data(), lse.data(), {});
    });
  };
  const uint64_t unknown[] = {seqs[0], 999999};
  const uint64_t with_empty[] = {seqs[0], empty};
  AttentionParams nan_scale, neg_scale, inf_scale;
  nan_scale.scale = std::numeric_limits<float>::quiet_NaN();
  neg_scale.scale = -0.5f;
  inf_scale.scale = std::numeric_limits<float>::infinity();

  EXPECT_EQ(decode(unknown, 2, q.data(), DType::f32, out.data()), StatusCode::not_found);
  EXPECT_EQ(decode(with_empty, 2, q.data(), DType::f32, out.data()), StatusCode::invalid_argument);
  EXPECT_EQ(decode(nullptr, 2, q.data(), DType::f32, out.data()), StatusCode::null_pointer);
  EXPECT_EQ(decode(seqs.data(), 2, nullptr, DType::f32, out.data()), StatusCode::null_pointer);
  EXPECT_EQ(decode(seqs.data(), 2, q.data(), DType::f32, nullptr), StatusCode::null_pointer);
  EXPECT_EQ(decode(seqs.data(), 2, q.data(), DType(7), out.data()), StatusCode::invalid_argument);
  EXPECT_EQ(decode(seqs.data(), 2, q.data(), DType::f32, out.data(), {}, sh.n_layers), StatusCode::invalid_argument);
  EXPECT_EQ(decode(seqs.data(), 2, q.data(), DType::f32, out.data(), nan_scale), StatusCode::invalid_argument);
  EXPECT_EQ(decode(seqs.data(), 2, q.data(), DType::f32, out.data(), neg_scale), StatusCode::invalid_argument);
  EXPECT_EQ(decode(seqs.data(), 2, q.data(), DType::f32, out.data(), inf_scale), StatusCode::invalid_argument);
  const uint32_t zero_len[] = {3, 0}, too_long[] = {3, 16}, ok_then_unknown[] = {3, 1};
  EXPECT_EQ(extend(zero_len), StatusCode::invalid_argument);
  EXPECT_EQ(extend(too_long), StatusCode::invalid_argument);
  EXPECT_EQ(extend(nullptr), StatusCode::null_pointer);
  EXPECT_EQ(extend(ok_then_unknown, unknown), StatusCode::not_found);
  // A non-finite query value anywhere (here in the last row of the second sequence).
  const size_t last = (3 + 15) * sh.n_q_heads * sh.head_dim - 1;
  q[last] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(extend(good_len), StatusCode::invalid_argument);
  q[last] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(extend(good_len), StatusCode::invalid_argument);
  EXPECT_TRUE(untouched());

  // Zero sequences is a no-op, even with null arrays.
  EXPECT_EQ(decode(nullptr, 0, nullptr, DType::f32, nullptr), StatusCode::ok);
  EXPECT_TRUE(untouched());
  // And with the query repaired the same call succeeds and writes exactly its rows.
  q[last] = 0.5f;
  EXPECT_EQ(extend(good_len), StatusCode::ok);
  for (size_t i = 0; i < 18 * sh.n_q_heads * sh.head_dim; ++i) ASSERT_NE(out[i], kSentinel);
  for (size_t i = 18 * sh.n_q_heads * sh.head_dim; i < values; ++i) ASSERT_EQ(out[i], kSentinel);
}

TEST(AttentionContract, ErrorMessagesNameTheCulprit) {
  Scenario sc(base_config(1));
  const uint64_t seqs[] = {sc.seqs()[1]};
  const uint32_t q_len[] = {16};
  const auto q = sc.queries(16, 1);
  std::vector<float> out(16 * 8 * 64);
  try {
    attention_extend(sc.cache(), 0, seqs, q_len, 1, q.data(), DType::f32, out.data(), nullptr, {});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("attention_extend: sequence " + std::to_string(seqs[0]) +
                                         " (batch index 0) has q_len 16 but holds only 15 tokens in layer 0"),
              std::string::npos)
        << e.what();
  }
}
