#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "kvbits/calibrator.hpp"
#include "kvbits/rope_blocks.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;

namespace {

ModelShape shape(uint32_t D, uint32_t R, RopeLayout l = RopeLayout::split_half) {
  ModelShape s;
  s.n_layers = 3, s.n_q_heads = 4, s.n_kv_heads = 2, s.head_dim = D, s.rotary_dim = R, s.rope_layout = l;
  return s;
}

// Activations whose block b has standard deviation ~ 2^(b * slope / n_blocks), so energies
// span orders of magnitude and grow toward low frequencies, as in real models.
EnergyAccumulator observed(const ModelShape& s, size_t T = 64, uint64_t seed = 1) {
  EnergyAccumulator acc(s);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n;
  for (uint32_t l = 0; l < s.n_layers; ++l) {
    std::vector<float> q(T * s.n_q_heads * s.head_dim), k(T * s.n_kv_heads * s.head_dim);
    auto fill = [&](std::vector<float>& x, uint32_t heads) {
      for (size_t t = 0; t < T; ++t)
        for (uint32_t h = 0; h < heads; ++h)
          for (uint32_t b = 0; b < s.n_blocks(); ++b) {
            const float sd = std::pow(2.0f, 6.0f * float(b) / float(s.n_blocks()) + float(h + l) * 0.3f);
            for (uint32_t d : block_dims(s, b)) x[(t * heads + h) * s.head_dim + d] = sd * n(rng);
          }
    };
    fill(q, s.n_q_heads);
    fill(k, s.n_kv_heads);
    acc.observe(l, q.data(), k.data(), T, DType::f32);
  }
  return acc;
}

}  // namespace

TEST(Calibrator, WidthsAreTheAllocatorsOnEachHeadsScores) {
  const auto s = shape(64, 64);
  const auto acc = observed(s);
  for (auto score : {ScoreKind::energy, ScoreKind::product}) {
    PlanOptions o;
    o.score = score;
    o.k_avg_bits = 3.0;
    const Plan p = build_plan(acc, o);
    for (uint32_t l = 0; l < s.n_layers; ++l)
      for (uint32_t h = 0; h < s.n_kv_heads; ++h) {
        const auto expect = allocate_bits(acc.scores(l, h, score), {3.0, 1, 8});
        EXPECT_EQ(p.head(l, h).block_bits, expect);
        EXPECT_EQ(p.head(l, h).q_energy, acc.mean_q_energy(l, h));
        int sum = 0;
        for (uint8_t b : expect) sum += b;
        EXPECT_EQ(sum, 96);
        // Energies grow with the block index here, so the allocation must not be uniform.
        EXPECT_LT(p.head(l, h).block_bits.front(), p.head(l, h).block_bits.back());
      }
  }
}

TEST(Calibrator, OneRotationPerGroupWithDistinctSeedsAndCodebooksForEveryWidth) {
  const auto s = shape(32, 32);
  PlanOptions o;
  o.k_avg_bits = 2.5;
  o.v_bits = 4;
  const Plan p = build_plan(observed(s), o);
  std::set<uint64_t> seeds;
  for (uint32_t l = 0; l < s.n_layers; ++l)
    for (uint32_t h = 0; h < s.n_kv_heads; ++h) {
      const HeadPlan& hp = p.head(l, h);
      const HeadLayout lay = p.head_layout(l, h);
      ASSERT_EQ(hp.k_rotations.size(), lay.groups.size());
      for (size_t g = 0; g < lay.groups.size(); ++g) {
        EXPECT_EQ(hp.k_rotations[g].dim, lay.groups[g].dims);
        EXPECT_TRUE(seeds.insert(hp.k_rotations[g].seed).second);
        EXPECT_EQ(p.unit_codebooks[lay.groups[g].bits].size(), size_t(1) << lay.groups[g].bits);
      }
      EXPECT_EQ(hp.v_bits, 4);
      EXPECT_EQ(hp.v_rotation.dim, 32u);
      EXPECT_TRUE(seeds.insert(hp.v_rotation.seed).second);
    }
  EXPECT_EQ(p.unit_codebooks[4].size(), 16u);
  EXPECT_EQ(p.producer.calib_tokens, 64u);
}

TEST(Calibrator, UniformMethodGivesOneGroupAtTheRequestedWidth) {
  const auto s = shape(16, 16);
  PlanOptions o;
  o.method = Method::uniform_tq_mse;
  o.k_avg_bits = 3;
  const Plan p = build_plan(observed(s), o);
  for (uint32_t l = 0; l < s.n_layers; ++l)
    for (uint32_t h = 0; h < s.n_kv_heads; ++h) {
      EXPECT_EQ(p.head(l, h).block_bits, std::vector<uint8_t>(8, 3));
      EXPECT_EQ(p.head_layout(l, h).groups.size(), 1u);
    }
  EXPECT_EQ(p.k_min_bits, 3);
  EXPECT_EQ(p.k_max_bits, 3);
  o.k_avg_bits = 2.5;
  EXPECT_THROW(build_plan(observed(s), o), Error);
}

TEST(Calibrator, PartialRotaryStaticBlocksGetTheFloorWidthOutsideTheBudget) {
  const auto s = shape(24, 16, RopeLayout::interleaved);
  PlanOptions o;
  o.k_avg_bits = 2.5;
  const auto acc = observed(s);
  const Plan p = build_plan(acc, o);
  for (uint32_t h = 0; h < 2; ++h) {
    const auto& bits = p.head(1, h).block_bits;
    ASSERT_EQ(bits.size(), 12u);
    int rot = 0;
    for (size_t b = 0; b < 8; ++b) rot += bits[b];
    EXPECT_EQ(rot, 20);  // floor(8 * 2.5)
    for (size_t b = 8; b < 12; ++b) EXPECT_EQ(bits[b], 2);
    auto sc = acc.scores(1, h, o.score);
    sc.resize(8);
    EXPECT_EQ(std::vector<uint8_t>(bits.begin(), bits.begin() + 8), allocate_bits(sc, {2.5, 1, 8}));
  }
}

TEST(Calibrator, Fp16LayersSinkAndWindowAreRecorded) {
  const auto s = shape(16, 16);
  PlanOptions o;
  o.fp16_layers = {0, 2};
  o.sink_tokens = 4;
  o.window_tokens = 128;
  const Plan p = build_plan(observed(s), o);
  EXPECT_TRUE(p.layers[0].keep_fp16);
  EXPECT_FALSE(p.layers[1].keep_fp16);
  EXPECT_TRUE(p.layers[2].heads.empty());
  EXPECT_EQ(p.bytes_per_token(0, 1), 64u);
  EXPECT_EQ(p.sink_tokens, 4u);
  EXPECT_EQ(p.window_tokens, 128u);
}

TEST(Calibrator, SameInputsGiveTheSamePlan) {
  const auto s = shape(32, 32);
  PlanOptions o;
  EXPECT_TRUE(build_plan(observed(s, 40, 9), o) == build_plan(observed(s, 40, 9), o));
}

TEST(Calibrator, RejectsBadOptionsAndMissingSamples) {
  const auto s = shape(16, 16);
  const auto acc = observed(s);
  auto expect_invalid = [&](PlanOptions o) {
    try {
      build_plan(acc, o);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::invalid_argument) << e.what();
    }
  };
  PlanOptions o;
  o.k_avg_bits = 9; expect_invalid(o);
  o = {}; o.k_avg_bits = 0.5; expect_invalid(o);
  o = {}; o.v_bits = 0; expect_invalid(o);
  o = {}; o.k_min_bits = 4; o.k_max_bits = 3; expect_invalid(o);
  o = {}; o.fp16_layers = {3}; expect_invalid(o);
  EnergyAccumulator empty(s);
  try {
    build_plan(empty, PlanOptions{});
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no query or key samples"), std::string::npos);
  }
}
