// The canonical fp64 sum (src/quant/canonical_sum.hpp) against its definition written out lane by
// lane, and the CPU encoder against it: inputs built so that the canonical order and a plain
// ascending chain give different codes, so a test passes only with the canonical order.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kvbits/tq_mse.hpp"
#include "quant/canonical_sum.hpp"
#include "quant_test_util.hpp"

namespace kvbits {
namespace {

using testing::all_unit_codebooks;
using testing::identity_matrix;
using testing::TestRng;

// The definition, independently: 32 lists of terms, each summed in order, then the tree levels.
double by_definition(const std::vector<double>& t) {
  std::vector<double> lane(32, 0.0);
  for (size_t l = 0; l < 32; ++l)
    for (size_t j = l; j < t.size(); j += 32) lane[l] = lane[l] + t[j];
  for (size_t width = 16; width >= 1; width /= 2) {
    std::vector<double> next(lane);
    for (size_t l = 0; l < width; ++l) next[l] = lane[l] + lane[l + width];
    lane = next;
  }
  return lane[0];
}

double sequential(const std::vector<double>& t) {
  double s = 0.0;
  for (double e : t) s += e;
  return s;
}

bool same_bits(double a, double b) { return std::memcmp(&a, &b, sizeof a) == 0; }

TEST(CanonicalSum, MatchesTheDefinitionForEveryLength) {
  TestRng rng(3);
  size_t differ_from_chain = 0, cases = 0;
  for (uint32_t n = 1; n <= 1024; n += (n < 80 ? 1 : 37)) {
    for (int trial = 0; trial < 4; ++trial) {
      std::vector<double> t(n);
      // Exact products of fp32 values of mixed sign and scale, as the encoder sums.
      for (double& e : t) e = double(float(rng.gauss() * 3.0)) * double(float(rng.gauss() * (trial % 2 ? 1e-3 : 7.0)));
      const double want = by_definition(t);
      const double got = canonical_sum(n, [&](uint32_t j) { return t[j]; });
      const double got4 = canonical_sum_quads(n, [&](uint32_t q, double* out) {
        for (uint32_t c = 0; c < 4; ++c) out[c] = 4 * q + c < n ? t[4 * q + c] : 12345.0;  // past n: ignored
      });
      ASSERT_TRUE(same_bits(got, want)) << "n " << n << " trial " << trial << ": " << got << " vs " << want;
      ASSERT_TRUE(same_bits(got4, want)) << "n " << n << " trial " << trial << " (quads)";
      differ_from_chain += !same_bits(want, sequential(t));
      ++cases;
    }
  }
  // The order matters: a plain chain rounds differently in many of these sums.
  EXPECT_GT(differ_from_chain, cases / 4) << cases << " sums";
}

TEST(CanonicalSum, TreeAddsSmallLanesBeforeTheLargeOne) {
  // 1 followed by 63 terms of 2^-54: a chain drops every one of them. By hand: lane 0 is
  // 1 + 2^-54 = 1, lanes 1..31 are 2^-53; the tree adds 2^-53 (a tie, to even: 1), then 2^-52,
  // 2^-51, 2^-50 and the odd lanes' 2^-49: 1 + 15 * 2^-52.
  std::vector<double> t(64, 0x1p-54);
  t[0] = 1.0;
  EXPECT_EQ(sequential(t), 1.0);
  EXPECT_EQ(by_definition(t), 1.0 + 15 * 0x1p-52);
  EXPECT_EQ(canonical_sum(64, [&](uint32_t j) { return t[j]; }), 1.0 + 15 * 0x1p-52);
}

// A 2-bit V quantizer of dim 1024 whose rotation row 0 is (b, b*2^-20, sqrt(rest), 0, ...) with b
// the codebook's upper boundary; x = (1, 2^-27, 0, 2^-27, ...). The ascending chain drops every
// 2^-54 square (n = 1, y = b(1 + 2^-47) > b: code 3); the canonical lanes keep them (n = 1 + ~2^-45,
// y just below b: code 2).
TEST(CanonicalSum, EncoderNormUsesTheCanonicalOrder) {
  const uint32_t d = 1024;
  const auto books = all_unit_codebooks(CodebookRecipe::lloyd_max);
  const GroupCodebook cb = make_group_codebook(books[2], 2, d);
  const float b = cb.boundaries[2];
  ASSERT_GT(b, 0.0f);
  std::vector<float> rot = identity_matrix(d);
  rot[0] = b;
  rot[1] = b * 0x1p-20f;
  rot[2] = float(std::sqrt(1.0 - double(b) * b));
  std::vector<float> x(d, 0x1p-27f);
  x[0] = 1.0f;
  x[2] = 0.0f;
  const TqQuantizer q = make_value_quantizer(d, 2, rot, books);
  std::vector<uint8_t> codes(d);
  uint16_t scale = 0;
  q.encode_codes(x.data(), codes.data(), &scale);

  std::vector<double> sq(d), dot(d);
  for (uint32_t j = 0; j < d; ++j) sq[j] = double(x[j]) * x[j], dot[j] = double(rot[j]) * x[j];
  const double n_canon = std::sqrt(by_definition(sq)), n_chain = std::sqrt(sequential(sq));
  ASSERT_EQ(n_chain, 1.0);
  ASSERT_GT(n_canon, 1.0);
  ASSERT_TRUE(same_bits(by_definition(dot), sequential(dot)));  // only the norm's order matters here
  EXPECT_EQ(cb.code_of(by_definition(dot) / n_chain), 3u);
  EXPECT_EQ(cb.code_of(by_definition(dot) / n_canon), 2u);
  EXPECT_EQ(codes[0], 2u);
}

// A 1-bit V quantizer of dim 64 (boundary 0) whose rotation row 0 is (a, c x 31, -a, 0, ...);
// x = (1, 2^-60 x 31, 1, 0, ...). The chain loses the 31 tiny products against a and ends at
// a - a = 0 (code 0); lane 0 cancels a - a first and the tree keeps 31 c 2^-60 > 0 (code 1).
TEST(CanonicalSum, EncoderDotUsesTheCanonicalOrder) {
  const uint32_t d = 64;
  const auto books = all_unit_codebooks(CodebookRecipe::lloyd_max);
  std::vector<float> rot = identity_matrix(d);
  const float a = 0.7f, c = float(std::sqrt((1.0 - 2.0 * double(a) * a) / 31.0));
  rot[0] = a;
  for (uint32_t j = 1; j < 32; ++j) rot[j] = c;
  rot[32] = -a;
  std::vector<float> x(d, 0.0f);
  x[0] = x[32] = 1.0f;
  for (uint32_t j = 1; j < 32; ++j) x[j] = 0x1p-60f;
  const TqQuantizer q = make_value_quantizer(d, 1, rot, books);
  std::vector<uint8_t> codes(d);
  uint16_t scale = 0;
  q.encode_codes(x.data(), codes.data(), &scale);

  std::vector<double> dot(d);
  for (uint32_t j = 0; j < d; ++j) dot[j] = double(rot[j]) * x[j];
  ASSERT_EQ(sequential(dot), 0.0);
  ASSERT_GT(by_definition(dot), 0.0);
  EXPECT_EQ(codes[0], 1u);
}

}  // namespace
}  // namespace kvbits
