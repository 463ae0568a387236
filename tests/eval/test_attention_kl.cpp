// §9.2 softmax KL and top-10 overlap on explicit distributions and a hand-computed attention.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kvbits/eval.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

TEST(KlDivergence, OfTwoExplicitDistributions) {
  const double p[2] = {0.5, 0.5}, q[2] = {0.25, 0.75};
  // 0.5 ln(0.5/0.25) + 0.5 ln(0.5/0.75) = 0.5 ln(4/3)
  EXPECT_NEAR(kl_divergence(p, q, 2), 0.5 * std::log(4.0 / 3.0), 1e-15);
  EXPECT_EQ(kl_divergence(p, p, 2), 0.0);
  const double a[3] = {0.0, 0.2, 0.8}, b[3] = {0.5, 0.25, 0.25};  // p_j = 0 terms vanish
  EXPECT_NEAR(kl_divergence(a, b, 3), 0.2 * std::log(0.8) + 0.8 * std::log(3.2), 1e-15);
  const double z[2] = {1.0, 0.0};
  EXPECT_THROW(kl_divergence(p, z, 2), Error);  // infinite
}

TEST(TopK, LargestFirstTiesToTheLowerIndex) {
  const double x[5] = {0.1, 0.5, 0.3, 0.5, 0.2};
  EXPECT_EQ(top_k(x, 5, 3), (std::vector<size_t>{1, 3, 2}));
  EXPECT_EQ(top_k(x, 5, 9).size(), 5u);
}

TEST(TopK, OverlapOfExplicitTop10Lists) {
  std::vector<double> a(12), b(12);
  for (size_t i = 0; i < 12; ++i) a[i] = b[i] = 12.0 - double(i);  // top 10 = {0..9}
  EXPECT_EQ(top_k_overlap(a.data(), b.data(), 12, 10), 1.0);
  b[8] = -1;  // b's top 10 = {0..7, 10, 11}
  b[9] = -2;
  EXPECT_DOUBLE_EQ(top_k_overlap(a.data(), b.data(), 12, 10), 0.8);
  // Fewer than 10 candidates: overlap over all of them.
  EXPECT_EQ(top_k_overlap(a.data(), b.data(), 3, 10), 1.0);
}

ModelShape tiny_shape() {
  ModelShape s;
  s.n_layers = 1;
  s.n_q_heads = 1;
  s.n_kv_heads = 1;
  s.head_dim = 2;
  s.rotary_dim = 2;
  return s;
}

TEST(AttentionDivergence, HandComputedTwoPositions) {
  // One sequence of 2 tokens, window 1: only t = 1 queries keys 0 and 1.
  // q_1 = (sqrt 2, 0), k_0 = 0, k_1 = (ln 3, 0): logits/sqrt(2) = (0, ln 3) -> p = (1/4, 3/4).
  // k̂_1 = 0 -> p̂ = (1/2, 1/2). KL = 1/4 ln(1/2) + 3/4 ln(3/2).
  const double r2 = std::sqrt(2.0), l3 = std::log(3.0);
  const float q[4] = {9, 9, float(r2), 0};  // q_0 is outside the window
  const float k[4] = {0, 0, float(l3), 0}, k_hat[4] = {0, 0, 0, 0};
  const AttentionDivergence d = attention_divergence(tiny_shape(), q, k, k_hat, 2, 2, 1);
  EXPECT_EQ(d.queries, 1u);
  EXPECT_NEAR(d.kl(), 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-6);
  EXPECT_EQ(d.top10(), 1.0);  // both keys are in both top lists
  // Exact keys: KL 0 and full overlap over every position of two sequences.
  const AttentionDivergence e = attention_divergence(tiny_shape(), q, k, k, 2, 1, 8);
  EXPECT_EQ(e.queries, 2u);
  EXPECT_EQ(e.kl(), 0.0);
  EXPECT_EQ(e.top10(), 1.0);
}

TEST(AttentionDivergence, IsCausalWithinEachSequence) {
  // Sequence 2's query must not see sequence 1's keys: key 0 of sequence 1 differs between
  // k and k̂, yet sequence 2 (tokens 2, 3) is unaffected; with window 1 only t = 1 of each
  // sequence is a query, and sequence 1's t = 1 sees key 0, so only one query differs.
  const float q[8] = {1, 0, 1, 0, 1, 0, 1, 0};
  const float k[8] = {5, 0, 0, 0, 0, 0, 0, 0}, k_hat[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const AttentionDivergence d = attention_divergence(tiny_shape(), q, k, k_hat, 4, 2, 1);
  EXPECT_EQ(d.queries, 2u);
  const AttentionDivergence first = attention_divergence(tiny_shape(), q, k, k_hat, 2, 2, 1);
  EXPECT_GT(first.kl_sum, 0.0);
  EXPECT_DOUBLE_EQ(d.kl_sum, first.kl_sum);  // the second sequence adds nothing
  EXPECT_THROW(attention_divergence(tiny_shape(), q, k, k_hat, 3, 2, 1), Error);
}

}  // namespace
}  // namespace kvbits::eval
