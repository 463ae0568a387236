// §9.1 RoPE-logit kernel and MAE on hand-computed cases.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kvbits/eval.hpp"
#include "kvbits/rope_blocks.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

constexpr double kPi = 3.14159265358979323846;

ModelShape shape(uint32_t D, uint32_t R, RopeLayout layout, double theta = 10000.0, uint32_t G = 1) {
  ModelShape s;
  s.n_layers = 1;
  s.n_q_heads = G;
  s.n_kv_heads = 1;
  s.head_dim = D;
  s.rotary_dim = R;
  s.rope_layout = layout;
  s.rope_theta = theta;
  return s;
}

TEST(LogitOffsets, AreTheReferenceLinspace) {
  const auto o = logit_offsets(1024, 50);
  ASSERT_EQ(o.size(), 50u);
  EXPECT_EQ(o.front(), -1024.0);
  EXPECT_EQ(o.back(), 1024.0);
  EXPECT_NEAR(o[1] - o[0], 2048.0 / 49.0, 1e-12);  // real-valued, not integers
  for (size_t j = 0; j < 50; ++j) EXPECT_NEAR(o[j], -o[49 - j], 1e-9);
  EXPECT_THROW(logit_offsets(1024, 0), Error);
}

TEST(RopeLogit, AtOffsetZeroIsTheDotProduct) {
  std::mt19937 rng(3);
  std::normal_distribution<double> n;
  for (RopeLayout layout : {RopeLayout::split_half, RopeLayout::interleaved}) {
    const ModelShape s = shape(16, 12, layout);
    std::vector<double> q(16), k(16);
    for (auto* v : {&q, &k})
      for (double& x : *v) x = n(rng);
    double dot = 0;
    for (int d = 0; d < 16; ++d) dot += q[d] * k[d];
    EXPECT_NEAR(rope_logit(s, q.data(), k.data(), 0.0), dot, 1e-12);
  }
}

TEST(RopeLogit, OneBlockAtAKnownAngle) {
  // D = 4, rotary dim 2: one rotary block (dims 0, 1; frequency theta^0 = 1) and one static
  // block (dims 2, 3). k rotated by Δ = π/2: (k0, k1) -> (-k1, k0).
  const ModelShape s = shape(4, 2, RopeLayout::split_half);
  const double q[4] = {1, 2, 3, 0}, k[4] = {1, 5, 1, 1};
  // q . (-5, 1, 1, 1) = -5 + 2 + 3 = 0
  EXPECT_NEAR(rope_logit(s, q, k, kPi / 2), 0.0, 1e-12);
  // Δ = π: (k0, k1) -> (-1, -5): -1 - 10 + 3 = -8
  EXPECT_NEAR(rope_logit(s, q, k, kPi), -8.0, 1e-12);
}

TEST(RopeLogit, EqualsTheDotWithARopeRotatedKeyAndIsRelative) {
  std::mt19937 rng(4);
  std::normal_distribution<double> n;
  const ModelShape s = shape(8, 8, RopeLayout::interleaved);
  std::vector<double> q(8), k(8);
  for (auto* v : {&q, &k})
    for (double& x : *v) x = n(rng);
  const double delta = 37.25;
  std::vector<double> kr = k;
  apply_rope(s, delta, kr.data());
  double dot = 0;
  for (int d = 0; d < 8; ++d) dot += q[d] * kr[d];
  EXPECT_NEAR(rope_logit(s, q.data(), k.data(), delta), dot, 1e-10);
  // Rotating q and k by the same position leaves the kernel unchanged.
  std::vector<double> qp = q, kp = k;
  apply_rope(s, 123.0, qp.data());
  apply_rope(s, 123.0, kp.data());
  EXPECT_NEAR(rope_logit(s, qp.data(), kp.data(), delta), rope_logit(s, q.data(), k.data(), delta), 1e-10);
}

TEST(RopeLogitMae, HandComputedWithAStaticBlock) {
  // e = k - k̂ = (1, 0, 1, 0); error(Δ) = cos Δ (q0 e0 + q1 e1) + sin Δ (q1 e0 - q0 e1) + q2 e2
  //  = cos Δ + 2 sin Δ + 3. Δ = 0: 4; Δ = π/2: 5; Δ = π: 2. MAE over {0, π/2, π} = 11/3.
  const ModelShape s = shape(4, 2, RopeLayout::split_half);
  const float q[4] = {1, 2, 3, 0}, k[4] = {1, 0, 1, 1}, k_hat[4] = {0, 0, 0, 1};
  EXPECT_NEAR(rope_logit_mae(s, q, k, k_hat, 1, {0.0, kPi / 2, kPi}), 11.0 / 3.0, 1e-12);
  // The absolute value is taken per row and offset: with q2 = 0 the error at Δ = π is -1,
  // which counts as 1.
  const float q0[4] = {1, 2, 0, 0};
  EXPECT_NEAR(rope_logit_mae(s, q0, k, k_hat, 1, {kPi}), 1.0, 1e-12);
}

TEST(RopeLogitMae, TwoInterleavedBlocksWithTheirOwnFrequencies) {
  // D = R = 4, theta 100: block 0 = dims (0, 1) at frequency 1, block 1 = dims (2, 3) at
  // 100^(-2/4) = 0.1. Δ = 10π rotates block 0 by 10π (identity) and block 1 by π (negation).
  const ModelShape s = shape(4, 4, RopeLayout::interleaved, 100.0);
  const float q[4] = {1, 0, 0, 2}, k[4] = {3, 0, 0, 1}, k_hat[4] = {1, 0, 0, 0};
  // e = (2, 0, 0, 1): block 0 error 1*2 = 2; block 1 error 2*1 = 2 negated -> -2. Sum 0.
  EXPECT_NEAR(rope_logit_mae(s, q, k, k_hat, 1, {10 * kPi}), 0.0, 1e-12);
  EXPECT_NEAR(rope_logit_mae(s, q, k, k_hat, 1, {0.0}), 4.0, 1e-12);
}

TEST(RopeLogitMae, AveragesRowsOfTheGqaGroupThenOffsets) {
  // G = 2 query heads share key t. Rows: q_{0,0} = (1,0), q_{0,1} = (0,1); e = (1, 0).
  // Δ = 0: errors 1 and 0 -> 0.5. Δ = π/2: e -> (0, 1): errors 0 and 1 -> 0.5.
  const ModelShape s = shape(2, 2, RopeLayout::split_half, 10000.0, 2);
  const float q[4] = {1, 0, 0, 1}, k[2] = {1, 0}, k_hat[2] = {0, 0};
  EXPECT_NEAR(rope_logit_mae(s, q, k, k_hat, 1, {0.0, kPi / 2}), 0.5, 1e-12);
}

TEST(RopeLogitMae, IsZeroForExactKeysAndMatchesTheKernel) {
  std::mt19937 rng(7);
  std::normal_distribution<float> n;
  const ModelShape s = shape(16, 12, RopeLayout::split_half, 10000.0, 3);
  const size_t T = 9;
  std::vector<float> q(T * 3 * 16), k(T * 16), k_hat(T * 16);
  for (float& x : q) x = n(rng);
  for (float& x : k) x = n(rng);
  for (size_t i = 0; i < k.size(); ++i) k_hat[i] = k[i] + 0.1f * n(rng);
  const auto offsets = logit_offsets(1024, 50);
  EXPECT_EQ(rope_logit_mae(s, q.data(), k.data(), k.data(), T, offsets), 0.0);
  // Brute force from the kernel definition.
  double want = 0;
  for (double delta : offsets) {
    double sum = 0;
    for (size_t t = 0; t < T; ++t)
      for (size_t g = 0; g < 3; ++g) {
        std::vector<double> qd(q.begin() + long((t * 3 + g) * 16), q.begin() + long((t * 3 + g + 1) * 16));
        std::vector<double> kd(k.begin() + long(t * 16), k.begin() + long((t + 1) * 16));
        std::vector<double> hd(k_hat.begin() + long(t * 16), k_hat.begin() + long((t + 1) * 16));
        sum += std::fabs(rope_logit(s, qd.data(), kd.data(), delta) - rope_logit(s, qd.data(), hd.data(), delta));
      }
    want += sum / double(T * 3);
  }
  EXPECT_NEAR(rope_logit_mae(s, q.data(), k.data(), k_hat.data(), T, offsets), want / 50.0, 1e-9);
}

}  // namespace
}  // namespace kvbits::eval
