// Gaussian codebooks: the authors' recipe (spec §3.3 values), converged Lloyd-Max, their MSE,
// and the per-group fp32 tables with the boundary-count rule.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "kvbits/codebook.hpp"
#include "kvbits/status.hpp"

namespace kvbits {
namespace {

constexpr double kPi = 3.14159265358979323846;

std::vector<double> book(int bits, CodebookRecipe r) { return unit_gaussian_codebook(bits, r); }

// Positive half of a symmetric codebook, ascending.
std::vector<double> upper_half(const std::vector<double>& c) { return {c.begin() + long(c.size() / 2), c.end()}; }

void expect_upper_half(const std::vector<double>& c, const std::vector<double>& want, double tol) {
  const auto got = upper_half(c);
  ASSERT_EQ(got.size(), want.size());
  for (size_t k = 0; k < want.size(); ++k) EXPECT_NEAR(got[k], want[k], tol) << "k=" << k;
}

// Naive conditional mean with erf, independent of the library's tail-safe forms.
double naive_conditional_mean(double a, double b) {
  auto pdf = [](double x) { return std::isinf(x) ? 0.0 : std::exp(-0.5 * x * x) / std::sqrt(2.0 * kPi); };
  auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  return (pdf(a) - pdf(b)) / (cdf(b) - cdf(a));
}

// Expected (x - nearest c)^2 under N(0,1) by composite Simpson on [-12, 12].
double simpson_mse(const std::vector<double>& c) {
  const int n = 480000;
  const double lo = -12.0, h = 24.0 / n;
  double sum = 0.0;
  for (int i = 0; i <= n; ++i) {
    const double x = lo + h * i;
    double best = std::numeric_limits<double>::infinity();
    for (double ck : c) best = std::fmin(best, (x - ck) * (x - ck));
    const double w = (i == 0 || i == n) ? 1.0 : (i % 2 ? 4.0 : 2.0);
    sum += w * best * std::exp(-0.5 * x * x);
  }
  return sum * h / 3.0 / std::sqrt(2.0 * kPi);
}

TEST(Codebook, ReferenceOneAndTwoBitsAreTheFixedConstants) {
  const double c1 = std::sqrt(2.0 / kPi);
  EXPECT_EQ(book(1, CodebookRecipe::reference), (std::vector<double>{-c1, c1}));
  EXPECT_NEAR(c1, 0.7979, 5e-5);
  EXPECT_EQ(book(2, CodebookRecipe::reference), (std::vector<double>{-1.51, -0.453, 0.453, 1.51}));
}

TEST(Codebook, ReferenceThreeBitsMatchesSpec) {
  expect_upper_half(book(3, CodebookRecipe::reference), {0.2451, 0.7560, 1.3439, 2.1519}, 6e-5);
}

TEST(Codebook, ReferenceFourBitsIsTheUnconvergedHundredIterationResult) {
  const auto ref = book(4, CodebookRecipe::reference);
  expect_upper_half(ref, {0.1260, 0.3812, 0.6459, 0.9282, 1.2400, 1.6008, 2.0521, 2.7177}, 6e-5);
  const auto lm = book(4, CodebookRecipe::lloyd_max);
  EXPECT_NEAR(lm.back(), 2.7326, 6e-5);
  EXPECT_NEAR(lm[8], 0.1284, 6e-5);
  EXPECT_GT(lm.back() - ref.back(), 0.01);  // the reference stops visibly short of the optimum
}

TEST(Codebook, ReferenceFiveToEightBitsInnerOuterMatchSpec) {
  const double inner[] = {0.0488, 0.0202, 0.0099, 0.0049};
  const double outer[] = {3.0722, 3.3218, 3.5404, 3.7402};
  for (int b = 5; b <= 8; ++b) {
    const auto c = book(b, CodebookRecipe::reference);
    EXPECT_NEAR(c[c.size() / 2], inner[b - 5], 5e-4) << "bits " << b;
    EXPECT_NEAR(c.back(), outer[b - 5], 5e-4) << "bits " << b;
  }
}

TEST(Codebook, LloydMaxKnownValues) {
  EXPECT_NEAR(book(1, CodebookRecipe::lloyd_max)[1], 0.7979, 5e-5);
  expect_upper_half(book(2, CodebookRecipe::lloyd_max), {0.4528, 1.5104}, 5e-5);
  expect_upper_half(book(3, CodebookRecipe::lloyd_max), {0.2451, 0.7560, 1.3439, 2.1519}, 6e-5);
}

TEST(Codebook, ShapeSymmetryAndOrder) {
  for (auto r : {CodebookRecipe::lloyd_max, CodebookRecipe::reference}) {
    for (int b = 1; b <= 8; ++b) {
      const auto c = book(b, r);
      ASSERT_EQ(c.size(), size_t(1) << b);
      for (size_t k = 0; k < c.size(); ++k) {
        EXPECT_EQ(c[k], -c[c.size() - 1 - k]) << "bits " << b << " k " << k;  // exact
        if (k > 0) {
          EXPECT_LT(c[k - 1], c[k]);
        }
      }
    }
  }
}

TEST(Codebook, LloydMaxIsAFixedPointOfTheLloydStep) {
  for (int b = 1; b <= 8; ++b) {
    const auto c = book(b, CodebookRecipe::lloyd_max);
    double worst = 0.0;
    for (size_t k = 0; k < c.size(); ++k) {
      const double a = k == 0 ? -INFINITY : 0.5 * (c[k - 1] + c[k]);
      const double hi = k + 1 == c.size() ? INFINITY : 0.5 * (c[k] + c[k + 1]);
      worst = std::fmax(worst, std::fabs(naive_conditional_mean(a, hi) - c[k]));
    }
    EXPECT_LT(worst, 1e-9) << "bits " << b;  // naive erf differences limit this check, not the codebook
  }
}

TEST(Codebook, ReferenceMseMatchesSpec) {
  const double want[] = {0.363, 0.118, 0.0347, 0.00959, 0.00280, 0.00103, 0.00041, 0.00017};
  for (int b = 1; b <= 8; ++b) {
    const double mse = gaussian_codebook_mse(book(b, CodebookRecipe::reference));
    EXPECT_NEAR(mse / want[b - 1], 1.0, 0.02) << "bits " << b << " mse " << mse;
  }
}

TEST(Codebook, ConvergedMseIsOptimalAndMatchesSpec) {
  EXPECT_NEAR(gaussian_codebook_mse(book(5, CodebookRecipe::lloyd_max)) / 0.00252, 1.0, 0.02);
  EXPECT_NEAR(gaussian_codebook_mse(book(6, CodebookRecipe::lloyd_max)) / 0.00064, 1.0, 0.02);
  for (int b = 1; b <= 8; ++b) {
    const double lm = gaussian_codebook_mse(book(b, CodebookRecipe::lloyd_max));
    const double ref = gaussian_codebook_mse(book(b, CodebookRecipe::reference));
    EXPECT_LE(lm, ref * (1.0 + 1e-12)) << "bits " << b;
  }
  // At 8 bits the converged codebook is about 4x better (spec: the reference loses 1.6-4x).
  EXPECT_GT(gaussian_codebook_mse(book(8, CodebookRecipe::reference)) /
                gaussian_codebook_mse(book(8, CodebookRecipe::lloyd_max)),
            3.5);
}

TEST(Codebook, MseClosedFormAgreesWithSimpsonIntegral) {
  for (int b : {1, 3, 5}) {
    const auto c = book(b, CodebookRecipe::lloyd_max);
    EXPECT_NEAR(gaussian_codebook_mse(c) / simpson_mse(c), 1.0, 1e-7) << "bits " << b;
  }
  // An arbitrary asymmetric codebook.
  const std::vector<double> odd{-2.0, -0.1, 0.3, 1.7};
  EXPECT_NEAR(gaussian_codebook_mse(odd) / simpson_mse(odd), 1.0, 1e-7);
}

TEST(Codebook, MseRejectsBadCodebooks) {
  EXPECT_THROW(gaussian_codebook_mse({}), Error);
  EXPECT_THROW(gaussian_codebook_mse({1.0, 0.5}), Error);
  EXPECT_THROW(gaussian_codebook_mse({0.0, NAN}), Error);
}

TEST(Codebook, AllEightConvergedWidthsAreFast) {
  const auto t0 = std::chrono::steady_clock::now();
  for (int b = 1; b <= 8; ++b) book(b, CodebookRecipe::lloyd_max);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 200.0);
}

TEST(Codebook, RejectsBadWidthsAndNamesRecipes) {
  for (int b : {-1, 0, 9, 100}) {
    try {
      book(b, CodebookRecipe::lloyd_max);
      ADD_FAILURE() << "bits " << b << " accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::invalid_argument);
    }
  }
  EXPECT_STREQ(codebook_recipe_name(CodebookRecipe::lloyd_max), "lloyd-max");
  EXPECT_STREQ(codebook_recipe_name(CodebookRecipe::reference), "reference");
}

TEST(GroupCodebook, TablesFollowTheHeaderFormulas) {
  const auto unit = book(3, CodebookRecipe::lloyd_max);
  const GroupCodebook g = make_group_codebook(unit, 3, 38);
  EXPECT_EQ(g.bits, 3);
  EXPECT_EQ(g.dim, 38u);
  ASSERT_EQ(g.centroids.size(), 8u);
  ASSERT_EQ(g.boundaries.size(), 7u);
  for (size_t k = 0; k < 8; ++k) EXPECT_EQ(g.centroids[k], float(unit[k] / std::sqrt(38.0)));
  for (size_t k = 0; k < 7; ++k)
    EXPECT_EQ(g.boundaries[k], float((double(g.centroids[k]) + double(g.centroids[k + 1])) / 2.0));
  EXPECT_NEAR(g.centroids[7], 2.1519 / std::sqrt(38.0), 1e-5);
}

TEST(GroupCodebook, CodeIsTheNumberOfBoundariesStrictlyBelow) {
  const GroupCodebook g = make_group_codebook(book(2, CodebookRecipe::reference), 2, 1);
  // Boundaries of {-1.51, -0.453, 0.453, 1.51}: -0.9815, 0, 0.9815 (fp32).
  EXPECT_EQ(g.code_of(-INFINITY), 0u);
  EXPECT_EQ(g.code_of(-5.0), 0u);
  EXPECT_EQ(g.code_of(0.0), 1u);  // a tie on a boundary goes to the lower code
  EXPECT_EQ(g.code_of(std::nextafter(0.0, 1.0)), 2u);
  const double b2 = g.boundaries[2];
  EXPECT_EQ(g.code_of(b2), 2u);
  EXPECT_EQ(g.code_of(std::nextafter(b2, 2.0)), 3u);
  EXPECT_EQ(g.code_of(std::nextafter(b2, 0.0)), 2u);
  EXPECT_EQ(g.code_of(INFINITY), 3u);
}

TEST(GroupCodebook, CodeOfIsExactNearestCentroid) {
  for (int b = 1; b <= 8; ++b) {
    const GroupCodebook g = make_group_codebook(book(b, CodebookRecipe::lloyd_max), b, 128);
    uint64_t s = 0x9E3779B97F4A7C15ull + uint64_t(b);
    for (int i = 0; i < 4000; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      const double y = (double(s >> 11) / 9007199254740992.0 - 0.5) * 0.9;  // covers beyond +-4.6/sqrt(128)
      uint32_t best = 0;
      for (uint32_t k = 1; k < g.centroids.size(); ++k)
        if (std::fabs(y - g.centroids[k]) < std::fabs(y - g.centroids[best])) best = k;
      EXPECT_EQ(g.code_of(y), best) << "bits " << b << " y " << y;
    }
  }
}

TEST(GroupCodebook, RejectsBadInput) {
  const auto unit3 = book(3, CodebookRecipe::lloyd_max);
  auto expect_invalid = [](auto&& f) {
    try {
      f();
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::invalid_argument);
      EXPECT_NE(std::string(e.what()).find("group codebook"), std::string::npos);
    }
  };
  expect_invalid([&] { make_group_codebook(unit3, 2, 8); });   // wrong size for the width
  expect_invalid([&] { make_group_codebook(unit3, 0, 8); });   // width
  expect_invalid([&] { make_group_codebook(unit3, 9, 8); });   // width
  expect_invalid([&] { make_group_codebook(unit3, 3, 0); });   // dim
  expect_invalid([&] { make_group_codebook({0.5, -0.5}, 1, 4); });            // descending
  expect_invalid([&] { make_group_codebook({-1.0, NAN}, 1, 4); });            // non-finite
  expect_invalid([&] { make_group_codebook({1.0, 1.0 + 1e-12}, 1, 4); });     // equal in fp32
}

}  // namespace
}  // namespace kvbits
