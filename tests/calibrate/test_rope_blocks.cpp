#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <set>

#include "kvbits/rope_blocks.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;

static ModelShape shape_of(uint32_t D, uint32_t R, RopeLayout l) {
  ModelShape s;
  s.n_layers = 1, s.n_q_heads = 2, s.n_kv_heads = 1, s.head_dim = D, s.rotary_dim = R, s.rope_layout = l;
  return s;
}

TEST(RopeBlocks, SplitHalfPairsIWithIPlusHalf) {
  const auto s = shape_of(8, 8, RopeLayout::split_half);
  EXPECT_EQ(block_dims(s, 0), (std::array<uint32_t, 2>{0, 4}));
  EXPECT_EQ(block_dims(s, 3), (std::array<uint32_t, 2>{3, 7}));
}

TEST(RopeBlocks, InterleavedPairsAdjacentDims) {
  const auto s = shape_of(8, 8, RopeLayout::interleaved);
  EXPECT_EQ(block_dims(s, 0), (std::array<uint32_t, 2>{0, 1}));
  EXPECT_EQ(block_dims(s, 3), (std::array<uint32_t, 2>{6, 7}));
}

TEST(RopeBlocks, PartialRotaryAddsStaticPairsAfterRotaryDims) {
  const auto s = shape_of(12, 8, RopeLayout::split_half);
  EXPECT_EQ(s.n_blocks(), 6u);
  EXPECT_EQ(s.n_rotary_blocks(), 4u);
  EXPECT_EQ(block_dims(s, 1), (std::array<uint32_t, 2>{1, 5}));
  EXPECT_EQ(block_dims(s, 4), (std::array<uint32_t, 2>{8, 9}));
  EXPECT_EQ(block_dims(s, 5), (std::array<uint32_t, 2>{10, 11}));
  EXPECT_EQ(block_frequency(s, 4), 0.0);
  EXPECT_THROW(block_dims(s, 6), Error);
}

TEST(RopeBlocks, EveryDimBelongsToExactlyOneBlock) {
  for (auto l : {RopeLayout::split_half, RopeLayout::interleaved})
    for (uint32_t R : {2u, 64u, 96u, 128u}) {
      const auto s = shape_of(128, R, l);
      std::set<uint32_t> seen;
      for (uint32_t b = 0; b < s.n_blocks(); ++b)
        for (uint32_t d : block_dims(s, b)) EXPECT_TRUE(seen.insert(d).second) << d;
      EXPECT_EQ(seen.size(), 128u);
    }
}

TEST(RopeBlocks, FrequencyFollowsThetaPower) {
  auto s = shape_of(128, 128, RopeLayout::split_half);
  s.rope_theta = 500000.0;
  EXPECT_DOUBLE_EQ(block_frequency(s, 0), 1.0);
  EXPECT_NEAR(block_frequency(s, 32), std::pow(500000.0, -0.5), 1e-15);
  EXPECT_NEAR(block_frequency(s, 63), std::pow(500000.0, -126.0 / 128.0), 1e-18);
}

TEST(RopeBlocks, ApplyRopeRotatesEachBlockAndKeepsItsNorm) {
  for (auto l : {RopeLayout::split_half, RopeLayout::interleaved}) {
    const auto s = shape_of(16, 12, l);
    std::mt19937_64 rng(7);
    std::normal_distribution<double> n;
    double x[16], y[16];
    for (double& v : x) v = n(rng);
    std::copy(x, x + 16, y);
    apply_rope(s, 37.0, y);
    for (uint32_t b = 0; b < s.n_blocks(); ++b) {
      const auto d = block_dims(s, b);
      EXPECT_NEAR(x[d[0]] * x[d[0]] + x[d[1]] * x[d[1]], y[d[0]] * y[d[0]] + y[d[1]] * y[d[1]], 1e-12);
      // angle check: y = R(pos*w) x
      const double a = 37.0 * block_frequency(s, b);
      EXPECT_NEAR(y[d[0]], x[d[0]] * std::cos(a) - x[d[1]] * std::sin(a), 1e-12);
      EXPECT_NEAR(y[d[1]], x[d[0]] * std::sin(a) + x[d[1]] * std::cos(a), 1e-12);
    }
    EXPECT_EQ(y[12], x[12]);  // static dims untouched
    EXPECT_EQ(y[15], x[15]);
  }
}

TEST(ModelShape, ValidateRejectsEachBadField) {
  auto good = shape_of(128, 128, RopeLayout::split_half);
  EXPECT_NO_THROW(good.validate());
  auto s = good; s.n_layers = 0; EXPECT_THROW(s.validate(), Error);
  s = good; s.n_q_heads = 3; s.n_kv_heads = 2; EXPECT_THROW(s.validate(), Error);
  s = good; s.head_dim = 127; EXPECT_THROW(s.validate(), Error);
  s = good; s.rotary_dim = 130; EXPECT_THROW(s.validate(), Error);
  s = good; s.rotary_dim = 3; EXPECT_THROW(s.validate(), Error);
  s = good; s.rope_theta = NAN; EXPECT_THROW(s.validate(), Error);
  s = good; s.rope_layout = RopeLayout(7); EXPECT_THROW(s.validate(), Error);
  try { s = good; s.head_dim = 0; s.validate(); FAIL(); } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::invalid_argument);
    EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos);
  }
}
