#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "kvbits/allocator.hpp"
#include "kvbits/status.hpp"

using namespace kvbits;

static double objective(const std::vector<double>& s, const std::vector<uint8_t>& b) {
  double o = 0;
  for (size_t i = 0; i < s.size(); ++i) o += s[i] * std::ldexp(1.0, -2 * b[i]);
  return o;
}

TEST(Allocator, HandComputedGreedySteps) {
  // budget 8 = 4 at min + 4 greedy bits. Priorities s*4^-b:
  //  [0.25 1 4 16] -> b3; [.25 1 4 4] tie -> b2 (lowest index); [.25 1 1 4] -> b3; [.25 1 1 1] -> b1.
  const auto b = allocate_bits({1, 4, 16, 64}, {2.0, 1, 8});
  EXPECT_EQ(b, (std::vector<uint8_t>{1, 2, 2, 3}));
}

TEST(Allocator, EqualScoresGiveUniformAndTiesGoToLowestIndex) {
  EXPECT_EQ(allocate_bits({1, 1, 1, 1}, {3.0, 1, 8}), (std::vector<uint8_t>{3, 3, 3, 3}));
  EXPECT_EQ(allocate_bits({1, 1, 1, 1}, {2.5, 1, 8}), (std::vector<uint8_t>{3, 3, 2, 2}));
}

TEST(Allocator, BudgetIsFloorOfBlocksTimesAverage) {
  EXPECT_EQ(bit_budget(64, 2.3), 147);
  EXPECT_EQ(bit_budget(4, 2.5), 10);
  const auto b = allocate_bits(std::vector<double>(64, 2.0), {2.3, 1, 8});
  EXPECT_EQ(std::accumulate(b.begin(), b.end(), 0), 147);
}

TEST(Allocator, UniformIsMinEqualsMax) {
  EXPECT_EQ(allocate_bits({5, 0.1, 300, 2}, {3.0, 3, 3}), (std::vector<uint8_t>{3, 3, 3, 3}));
}

TEST(Allocator, StopsEarlyOnZeroEnergyAndAtTheCap) {
  // Block 2 takes bits up to the cap; zero-energy blocks absorb nothing, so 1 bit is left unspent.
  EXPECT_EQ(allocate_bits({0, 0, 5, 0}, {3.0, 1, 8}), (std::vector<uint8_t>{1, 1, 8, 1}));
  EXPECT_EQ(allocate_bits({1, 2}, {8.0, 1, 4}), (std::vector<uint8_t>{4, 4}));
  EXPECT_EQ(allocate_bits({0, 0}, {4.0, 1, 8}), (std::vector<uint8_t>{1, 1}));
}

TEST(Allocator, GreedyIsOptimalForTheSeparableObjective) {
  // The objective is separable and convex in each b_i, so no single-bit move may improve it.
  std::mt19937_64 rng(11);
  std::lognormal_distribution<double> ln(0.0, 2.0);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<double> s(64);
    for (double& v : s) v = ln(rng);
    const auto b = allocate_bits(s, {3.0, 1, 8});
    ASSERT_EQ(std::accumulate(b.begin(), b.end(), 0), 192);
    const double best = objective(s, b);
    for (size_t i = 0; i < s.size(); ++i)
      for (size_t j = 0; j < s.size(); ++j) {
        if (i == j || b[i] == 1 || b[j] == 8) continue;
        auto c = b;
        --c[i], ++c[j];
        EXPECT_GE(objective(s, c), best * (1 - 1e-12));
      }
  }
}

TEST(Allocator, MatchesReverseWaterFillingClosedForm) {
  // Continuous optimum: b_i = avg + 0.5*log2(s_i / geomean(s)); the integer greedy solution is
  // within one bit of it wherever the continuous value is inside [min, max].
  std::mt19937_64 rng(5);
  std::lognormal_distribution<double> ln(0.0, 1.0);
  std::vector<double> s(64);
  for (double& v : s) v = ln(rng);
  double log_gm = 0;
  for (double v : s) log_gm += std::log2(v) / 64.0;
  const auto b = allocate_bits(s, {4.0, 1, 8});
  int checked = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    const double cont = 4.0 + 0.5 * (std::log2(s[i]) - log_gm);
    if (cont < 1.5 || cont > 7.5) continue;
    EXPECT_LE(std::fabs(double(b[i]) - cont), 1.0) << "block " << i;
    ++checked;
  }
  EXPECT_GT(checked, 50);
}

TEST(Allocator, FourTimesTheEnergyIsWorthOneBit) {
  EXPECT_EQ(allocate_bits({1, 4}, {2.5, 1, 8}), (std::vector<uint8_t>{2, 3}));
  EXPECT_EQ(allocate_bits({1, 16}, {3.0, 1, 8}), (std::vector<uint8_t>{2, 4}));
}

TEST(Allocator, RejectsBadConfigAndScores) {
  EXPECT_THROW(allocate_bits({1}, {3.0, 0, 8}), Error);
  EXPECT_THROW(allocate_bits({1}, {3.0, 5, 4}), Error);
  EXPECT_THROW(allocate_bits({1}, {3.0, 1, 9}), Error);
  EXPECT_THROW(allocate_bits({1}, {NAN, 1, 8}), Error);
  EXPECT_THROW(allocate_bits({-1.0}, {3.0, 1, 8}), Error);
  EXPECT_THROW(allocate_bits({INFINITY}, {3.0, 1, 8}), Error);
}
