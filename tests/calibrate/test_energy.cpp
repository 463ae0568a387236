#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kvbits/energy.hpp"
#include "kvbits/half.hpp"
#include "kvbits/rope_blocks.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;

namespace {
ModelShape gqa_shape(RopeLayout l, uint32_t D = 16, uint32_t R = 16) {
  ModelShape s;
  s.n_layers = 2, s.n_q_heads = 6, s.n_kv_heads = 2, s.head_dim = D, s.rotary_dim = R, s.rope_layout = l;
  return s;
}
std::vector<float> randn(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = d(rng);
  return v;
}
}  // namespace

TEST(Energy, HandComputedTinyCase) {
  // D=4 split-half: blocks (0,2) and (1,3). 2 query heads share one KV head.
  ModelShape s;
  s.n_layers = 1, s.n_q_heads = 2, s.n_kv_heads = 1, s.head_dim = 4, s.rotary_dim = 4;
  const float q[] = {1, 2, 3, 4, /*head1*/ 0, 1, 0, 1};
  const float k[] = {2, 0, 0, 2};
  EnergyAccumulator acc(s);
  acc.observe(0, q, k, 1, DType::f32);
  // q energies per sample: head0 block0 = 1+9 = 10, block1 = 4+16 = 20; head1: 0, 2.
  EXPECT_EQ(acc.mean_q_energy(0, 0), (std::vector<double>{5.0, 11.0}));
  EXPECT_EQ(acc.mean_k_energy(0, 0), (std::vector<double>{4.0, 4.0}));
  EXPECT_EQ(acc.q_samples(0, 0), 2u);
  EXPECT_EQ(acc.k_samples(0, 0), 1u);
  EXPECT_EQ(acc.scores(0, 0, ScoreKind::energy), (std::vector<double>{4.5, 7.5}));
  EXPECT_EQ(acc.scores(0, 0, ScoreKind::product), (std::vector<double>{20.0, 44.0}));
}

TEST(Energy, PreAndPostRopeGiveTheSameScores) {
  for (auto layout : {RopeLayout::split_half, RopeLayout::interleaved}) {
    const auto s = gqa_shape(layout, 16, 12);
    const size_t T = 50;
    auto q = randn(T * s.n_q_heads * s.head_dim, 1), k = randn(T * s.n_kv_heads * s.head_dim, 2, 3.0f);
    auto q_rot = q, k_rot = k;
    for (size_t t = 0; t < T; ++t) {
      auto rope_rows = [&](std::vector<float>& x, uint32_t heads) {
        for (uint32_t h = 0; h < heads; ++h) {
          double tmp[16];
          float* row = &x[(t * heads + h) * s.head_dim];
          for (int d = 0; d < 16; ++d) tmp[d] = row[d];
          apply_rope(s, double(t) * 17.0 + 3.0, tmp);
          for (int d = 0; d < 16; ++d) row[d] = float(tmp[d]);
        }
      };
      rope_rows(q_rot, s.n_q_heads);
      rope_rows(k_rot, s.n_kv_heads);
    }
    EnergyAccumulator pre(s), post(s);
    pre.observe(1, q.data(), k.data(), T, DType::f32);
    post.observe(1, q_rot.data(), k_rot.data(), T, DType::f32);
    for (uint32_t h = 0; h < s.n_kv_heads; ++h)
      for (auto kind : {ScoreKind::energy, ScoreKind::product}) {
        const auto a = pre.scores(1, h, kind), b = post.scores(1, h, kind);
        for (size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5 * a[i]) << "block " << i;
      }
  }
}

TEST(Energy, ChunkingDoesNotChangeTheSums) {
  const auto s = gqa_shape(RopeLayout::split_half);
  const size_t T = 37;
  const auto q = randn(T * s.n_q_heads * s.head_dim, 3), k = randn(T * s.n_kv_heads * s.head_dim, 4);
  EnergyAccumulator whole(s), parts(s);
  whole.observe(0, q.data(), k.data(), T, DType::f32);
  size_t t = 0;
  for (size_t chunk : {1, 5, 13, 18}) {
    parts.observe(0, q.data() + t * s.n_q_heads * s.head_dim, k.data() + t * s.n_kv_heads * s.head_dim, chunk,
                  DType::f32);
    t += chunk;
  }
  ASSERT_EQ(t, T);
  for (uint32_t h = 0; h < 2; ++h) {
    EXPECT_EQ(whole.mean_q_energy(0, h), parts.mean_q_energy(0, h));
    EXPECT_EQ(whole.mean_k_energy(0, h), parts.mean_k_energy(0, h));
  }
  EXPECT_EQ(parts.q_samples(0, 1), T * 3);
  EXPECT_EQ(parts.k_samples(1, 0), 0u);  // layer 1 never observed
}

TEST(Energy, GqaHeadsAreSeparateSamplesNotAveragedVectors) {
  // Two query heads q and -q: averaging vectors first would give zero energy.
  ModelShape s;
  s.n_layers = 1, s.n_q_heads = 2, s.n_kv_heads = 1, s.head_dim = 2, s.rotary_dim = 2;
  const float q[] = {3, 4, -3, -4};
  EnergyAccumulator acc(s);
  acc.observe(0, q, nullptr, 1, DType::f32);
  EXPECT_EQ(acc.mean_q_energy(0, 0), (std::vector<double>{25.0}));
  EXPECT_EQ(acc.k_samples(0, 0), 0u);
}

TEST(Energy, HalfAndBf16InputsConvertExactly) {
  const auto s = gqa_shape(RopeLayout::interleaved);
  const size_t T = 9;
  auto qf = randn(T * s.n_q_heads * s.head_dim, 5), kf = randn(T * s.n_kv_heads * s.head_dim, 6);
  std::vector<uint16_t> qh(qf.size()), kh(kf.size()), qb(qf.size()), kb(kf.size());
  for (size_t i = 0; i < qf.size(); ++i) qh[i] = float_to_half(qf[i]), qb[i] = float_to_bf16(qf[i]);
  for (size_t i = 0; i < kf.size(); ++i) kh[i] = float_to_half(kf[i]), kb[i] = float_to_bf16(kf[i]);
  std::vector<float> qh2(qf.size()), kh2(kf.size()), qb2(qf.size()), kb2(kf.size());
  for (size_t i = 0; i < qf.size(); ++i) qh2[i] = half_to_float(qh[i]), qb2[i] = bf16_to_float(qb[i]);
  for (size_t i = 0; i < kf.size(); ++i) kh2[i] = half_to_float(kh[i]), kb2[i] = bf16_to_float(kb[i]);
  EnergyAccumulator a(s), b(s), c(s), d(s);
  a.observe(0, qh.data(), kh.data(), T, DType::f16);
  b.observe(0, qh2.data(), kh2.data(), T, DType::f32);
  c.observe(0, qb.data(), kb.data(), T, DType::bf16);
  d.observe(0, qb2.data(), kb2.data(), T, DType::f32);
  EXPECT_EQ(a.scores(0, 1, ScoreKind::product), b.scores(0, 1, ScoreKind::product));
  EXPECT_EQ(c.scores(0, 1, ScoreKind::energy), d.scores(0, 1, ScoreKind::energy));
}

TEST(Energy, BadInputLeavesStatisticsUntouched) {
  const auto s = gqa_shape(RopeLayout::split_half);
  auto q = randn(2 * s.n_q_heads * s.head_dim, 7), k = randn(2 * s.n_kv_heads * s.head_dim, 8);
  EnergyAccumulator acc(s);
  acc.observe(0, q.data(), k.data(), 2, DType::f32);
  const auto before = acc.mean_q_energy(0, 0);
  k[5] = NAN;
  try {
    acc.observe(0, q.data(), k.data(), 2, DType::f32);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::invalid_argument);
  }
  EXPECT_EQ(acc.mean_q_energy(0, 0), before);
  EXPECT_EQ(acc.q_samples(0, 0), 6u);
  EXPECT_THROW(acc.observe(2, q.data(), k.data(), 1, DType::f32), Error);
  EXPECT_THROW(acc.mean_k_energy(0, 2), Error);
}
