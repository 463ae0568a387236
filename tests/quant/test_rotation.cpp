// Tests of the portable rotation generator: accuracy of portable_log, orthogonality, det,
// determinism, pinned golden output, distribution sanity and seed derivation.
#include "kvbits/rotation.hpp"

#include <gtest/gtest.h>
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <limits>
#include <random>
#include <set>
#include <utility>
#include <vector>

#include "kvbits/status.hpp"

namespace {

using kvbits::haar_rotation;
using kvbits::portable_log;

uint32_t float_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return b;
}

double rel_err(double got, double want) { return std::fabs(got - want) / std::fabs(want); }

// max_ij |(Q^T Q - I)_ij|, accumulated in fp64.
double orthogonality_error(const std::vector<float>& q, size_t d) {
  double worst = 0.0;
  for (size_t a = 0; a < d; ++a) {
    for (size_t b = 0; b < d; ++b) {
      double dot = 0.0;
      for (size_t i = 0; i < d; ++i) dot += double(q[i * d + a]) * double(q[i * d + b]);
      worst = std::max(worst, std::fabs(dot - (a == b ? 1.0 : 0.0)));
    }
  }
  return worst;
}

// Determinant by LU with partial pivoting in fp64 (test-only; the generator never needs it).
double determinant(const std::vector<float>& q, size_t d) {
  std::vector<double> m(q.begin(), q.end());
  double det = 1.0;
  for (size_t k = 0; k < d; ++k) {
    size_t p = k;
    for (size_t i = k + 1; i < d; ++i)
      if (std::fabs(m[i * d + k]) > std::fabs(m[p * d + k])) p = i;
    if (m[p * d + k] == 0.0) return 0.0;
    if (p != k) {
      for (size_t j = 0; j < d; ++j) std::swap(m[k * d + j], m[p * d + j]);
      det = -det;
    }
    det *= m[k * d + k];
    for (size_t i = k + 1; i < d; ++i) {
      const double l = m[i * d + k] / m[k * d + k];
      for (size_t j = k; j < d; ++j) m[i * d + j] -= l * m[k * d + j];
    }
  }
  return det;
}

// XXH64 (seed 0) of the fp32 bit patterns laid out little-endian, whatever the host order.
uint64_t hash_of(const std::vector<float>& q) {
  std::vector<unsigned char> bytes;
  bytes.reserve(q.size() * 4);
  for (float f : q) {
    const uint32_t b = float_bits(f);
    for (int k = 0; k < 4; ++k) bytes.push_back(static_cast<unsigned char>(b >> (8 * k)));
  }
  return XXH64(bytes.data(), bytes.size(), 0);
}

// ---------------------------------------------------------------------------------------------
// portable_log

TEST(PortableLog, ExactAtOne) {
  const double r = portable_log(1.0);
  EXPECT_EQ(r, 0.0);
  EXPECT_FALSE(std::signbit(r));
}

TEST(PortableLog, SpecialValues) {
  EXPECT_TRUE(std::isinf(portable_log(0.0)) && portable_log(0.0) < 0);
  EXPECT_TRUE(std::isnan(portable_log(-1.0)));
  EXPECT_TRUE(std::isnan(portable_log(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_EQ(portable_log(std::numeric_limits<double>::infinity()), std::numeric_limits<double>::infinity());
}

TEST(PortableLog, PowersOfTwoMatchStdLog) {
  for (int e = -1074; e <= 1023; ++e) {
    if (e == 0) continue;  // log(1) = 0 exactly, see ExactAtOne
    const double x = std::ldexp(1.0, e);
    ASSERT_LT(rel_err(portable_log(x), std::log(x)), 4e-16) << "x = 2^" << e;
  }
}

// Random positive finite doubles over the whole range (random bit patterns, subnormals
// included) and dense samples around 1, where log is small and cancellation would show.
TEST(PortableLog, RelativeErrorAgainstStdLog) {
  std::mt19937_64 gen(12345);
  double worst = 0.0;
  auto check = [&](double x) {
    if (x == 1.0) return;
    const double err = rel_err(portable_log(x), std::log(x));
    worst = std::max(worst, err);
    ASSERT_LT(err, 4e-16) << std::hexfloat << "x = " << x;
  };
  for (int n = 0; n < 1000000; ++n) {
    uint64_t b = gen() & 0x7fffffffffffffffull;
    double x;
    std::memcpy(&x, &b, sizeof x);
    if (x == 0.0 || !std::isfinite(x)) continue;
    check(x);
  }
  std::uniform_real_distribution<double> near_one(0.5, 2.0);
  for (int n = 0; n < 1000000; ++n) check(near_one(gen));
  std::uniform_real_distribution<double> tiny(-1e-6, 1e-6);
  for (int n = 0; n < 100000; ++n) check(1.0 + tiny(gen));
  for (int n = 1; n <= 60; ++n) {
    check(1.0 + std::ldexp(1.0, -n));
    check(1.0 - std::ldexp(1.0, -n));
  }
  std::cout << "portable_log worst relative error vs std::log: " << worst << "\n";
}

// ---------------------------------------------------------------------------------------------
// haar_rotation

TEST(HaarRotation, RejectsDimOutOfRange) {
  for (uint32_t d : {0u, 4097u, 100000u}) {
    try {
      (void)haar_rotation(d, 1);
      FAIL() << "dim " << d << " accepted";
    } catch (const kvbits::Error& e) {
      EXPECT_EQ(e.code(), kvbits::StatusCode::invalid_argument);
    }
  }
}

TEST(HaarRotation, DimOneIsOne) {
  for (uint64_t seed = 0; seed < 16; ++seed) {
    const auto q = haar_rotation(1, seed);
    ASSERT_EQ(q.size(), 1u);
    EXPECT_EQ(float_bits(q[0]), float_bits(1.0f));
  }
}

TEST(HaarRotation, Orthogonal) {
  for (uint32_t d : {2u, 3u, 4u, 5u, 8u, 16u, 64u, 128u, 256u}) {
    for (uint64_t seed : {0ull, 1ull, 42ull}) {
      const auto q = haar_rotation(d, seed);
      ASSERT_EQ(q.size(), size_t(d) * d);
      EXPECT_LT(orthogonality_error(q, d), 2e-6) << "d=" << d << " seed=" << seed;
    }
  }
}

// Many seeds per size, so both the "det was -1" and "det was +1" branches are exercised.
TEST(HaarRotation, DeterminantIsPlusOne) {
  for (uint32_t d : {2u, 3u, 4u, 7u, 8u, 16u, 64u, 128u}) {
    const uint64_t seeds = d <= 16 ? 64 : 8;
    for (uint64_t seed = 0; seed < seeds; ++seed) {
      const double det = determinant(haar_rotation(d, seed), d);
      EXPECT_NEAR(det, 1.0, 1e-4) << "d=" << d << " seed=" << seed;
    }
  }
}

TEST(HaarRotation, DeterministicBitwise) {
  for (uint32_t d : {2u, 5u, 64u, 128u}) {
    const auto a = haar_rotation(d, 7);
    const auto b = haar_rotation(d, 7);
    ASSERT_EQ(a.size(), b.size());
    EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0) << "d=" << d;
  }
}

TEST(HaarRotation, DifferentSeedsDiffer) {
  for (uint32_t d : {2u, 8u, 128u}) {
    std::set<uint64_t> hashes;
    for (uint64_t seed = 0; seed < 32; ++seed) hashes.insert(hash_of(haar_rotation(d, seed)));
    EXPECT_EQ(hashes.size(), 32u) << "d=" << d;
  }
  // Adjacent seeds must not give near-identical matrices either.
  const auto a = haar_rotation(64, 100);
  const auto b = haar_rotation(64, 101);
  double diff = 0.0;
  for (size_t i = 0; i < a.size(); ++i) diff = std::max(diff, double(std::fabs(a[i] - b[i])));
  EXPECT_GT(diff, 0.1);
}

// Pins the exact output: XXH64 of the fp32 bytes (see hash_of). A change here
// means every plan's rotations changed; it must be deliberate and versioned.
TEST(HaarRotation, GoldenHashes) {
  struct Golden {
    uint32_t dim;
    uint64_t seed;
    uint64_t hash;
  };
  const Golden golden[] = {
      {2, 1, 0xa3a9d04b0e921f66ull},
      {8, 42, 0x720cb45d2db57d4full},
      {64, 7, 0x438219ba1c801b58ull},
      {128, 43, 0xc571d270f6a9e92full},
  };
  for (const auto& g : golden) {
    const uint64_t got = hash_of(haar_rotation(g.dim, g.seed));
    EXPECT_EQ(got, g.hash) << "dim=" << g.dim << " seed=" << g.seed << " got 0x" << std::hex << got;
  }
}

TEST(HaarRotation, GoldenFirstRowDim8Seed42) {
  // 0.17651403, -0.41032845, -0.3282949, 0.43068159, -0.25943136, 0.27495202, -0.41337043, 0.43980771
  const uint32_t want[8] = {0x3e34c018u, 0xbed21692u, 0xbea81645u, 0x3edc824cu,
                            0xbe84d430u, 0x3e8cc683u, 0xbed3a54au, 0x3ee12e7au};
  const auto q = haar_rotation(8, 42);
  for (int j = 0; j < 8; ++j) {
    EXPECT_EQ(float_bits(q[size_t(j)]), want[j]) << "j=" << j << std::hex << " got 0x" << float_bits(q[size_t(j)]);
  }
}

// For Haar Q in SO(d), d >= 2, every entry has mean 0, variance 1/d and fourth moment
// 3/(d(d+2)); E[trace Q] = 0 with Var = 1. A missing or wrong sign fix shows up as a biased
// trace and biased diagonal signs. Tolerances are about 4 standard deviations.
TEST(HaarRotation, DistributionSanity) {
  constexpr uint32_t d = 128;
  constexpr int n_seeds = 200;
  double q00_sum = 0.0, q00_sq = 0.0;
  int q00_positive = 0;
  double diag_sum = 0.0, diag_sq = 0.0;
  long diag_positive = 0;
  double fourth = 0.0;
  long all_positive = 0;
  for (int s = 0; s < n_seeds; ++s) {
    const auto q = haar_rotation(d, uint64_t(1000 + s));
    const double x = q[0];
    q00_sum += x;
    q00_sq += x * x;
    q00_positive += x > 0 ? 1 : 0;
    for (uint32_t i = 0; i < d; ++i) {
      const double y = q[size_t(i) * d + i];
      diag_sum += y;
      diag_sq += y * y;
      diag_positive += y > 0 ? 1 : 0;
    }
    for (float v : q) {
      fourth += double(v) * v * v * v;
      all_positive += v > 0 ? 1 : 0;
    }
  }
  // Q[0][0] over 200 seeds: sd(mean) = sqrt(1/(200 d)); sd(var * d) ~ sqrt(2/200) = 0.1.
  const double q00_mean = q00_sum / n_seeds;
  const double q00_var = q00_sq / n_seeds - q00_mean * q00_mean;
  EXPECT_LT(std::fabs(q00_mean), 4.0 * std::sqrt(1.0 / (double(d) * n_seeds))) << "Q00 mean " << q00_mean;
  EXPECT_NEAR(q00_var * d, 1.0, 0.4) << "Q00 var*d " << q00_var * d;
  EXPECT_LT(std::abs(q00_positive - n_seeds / 2), 29) << "Q00 positives " << q00_positive;  // sd 7.1

  // The d diagonal entries of 200 matrices (25600 samples, nearly independent) pin the
  // variance much more tightly: sd(var * d) ~ sqrt(2/25600) = 0.009.
  const double n_diag = double(n_seeds) * d;
  const double diag_mean = diag_sum / n_diag;
  const double diag_var = diag_sq / n_diag - diag_mean * diag_mean;
  EXPECT_LT(std::fabs(diag_mean), 4.0 * std::sqrt(1.0 / (double(d) * n_diag))) << "diag mean " << diag_mean;
  EXPECT_NEAR(diag_var * d, 1.0, 0.2) << "diag var*d " << diag_var * d;
  // Mean trace = d * diag_mean: sd 1/sqrt(200) = 0.071.
  EXPECT_LT(std::fabs(diag_mean * d), 0.3) << "mean trace " << diag_mean * d;
  EXPECT_LT(std::fabs(double(diag_positive) - n_diag / 2), 4 * std::sqrt(n_diag / 4)) << "diag positives " << diag_positive;

  // All entries pooled: fourth moment and sign balance.
  const double n_all = double(n_seeds) * d * d;
  std::cout << "d=128, 200 seeds: Q00 mean " << q00_mean << ", Q00 var*d " << q00_var * d << ", Q00 positives "
            << q00_positive << "; diag var*d " << diag_var * d << ", mean trace " << diag_mean * d
            << ", diag positives " << diag_positive << "/" << n_diag << "; fourth moment ratio "
            << fourth / n_all * d * (d + 2) / 3.0 << ", positive fraction " << all_positive / n_all << "\n";
  EXPECT_NEAR(fourth / n_all * d * (d + 2) / 3.0, 1.0, 0.1) << "normalised fourth moment";
  EXPECT_LT(std::fabs(double(all_positive) - n_all / 2), 0.005 * n_all) << "positives " << all_positive;
}

TEST(HaarRotation, Timing128) {
  (void)haar_rotation(128, 0);  // warm up allocator / caches
  constexpr int reps = 20;
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) (void)haar_rotation(128, uint64_t(r));
  const auto t1 = std::chrono::steady_clock::now();
  const double ms = std::chrono::duration<double, std::milli>(t1 - t0).count() / reps;
  std::cout << "haar_rotation(128): " << ms << " ms per call\n";
  // Generous bound (sanitiser builds included); catches an accidental O(d^4).
  EXPECT_LT(ms, 250.0);
}

// ---------------------------------------------------------------------------------------------
// derive_rotation_seed

TEST(DeriveRotationSeed, DeterministicAndDistinctOverGrid) {
  std::set<uint64_t> seen;
  size_t n = 0;
  for (uint64_t base : {0ull, 42ull, 0xFFFFFFFFFFFFFFFFull}) {
    for (uint32_t layer = 0; layer < 32; ++layer)
      for (uint32_t head = 0; head < 8; ++head)
        for (uint32_t role = 0; role < 2; ++role)
          for (uint32_t group = 0; group < 8; ++group) {
            const uint64_t s = kvbits::derive_rotation_seed(base, layer, head, role, group);
            ASSERT_EQ(s, kvbits::derive_rotation_seed(base, layer, head, role, group));
            seen.insert(s);
            ++n;
          }
  }
  EXPECT_EQ(seen.size(), n);
  // Seeds must not collide with the base seeds themselves either.
  EXPECT_EQ(seen.count(0), 0u);
  EXPECT_EQ(seen.count(42), 0u);
}

TEST(DeriveRotationSeed, EveryFieldMatters) {
  const uint64_t ref = kvbits::derive_rotation_seed(7, 1, 2, 0, 3);
  EXPECT_NE(ref, kvbits::derive_rotation_seed(8, 1, 2, 0, 3));
  EXPECT_NE(ref, kvbits::derive_rotation_seed(7, 2, 2, 0, 3));
  EXPECT_NE(ref, kvbits::derive_rotation_seed(7, 1, 3, 0, 3));
  EXPECT_NE(ref, kvbits::derive_rotation_seed(7, 1, 2, 1, 3));
  EXPECT_NE(ref, kvbits::derive_rotation_seed(7, 1, 2, 0, 4));
  // Swapping fields must change the seed (layer/head and role/group are packed, not summed).
  EXPECT_NE(kvbits::derive_rotation_seed(7, 1, 2, 0, 0), kvbits::derive_rotation_seed(7, 2, 1, 0, 0));
  EXPECT_NE(kvbits::derive_rotation_seed(7, 0, 0, 1, 0), kvbits::derive_rotation_seed(7, 0, 0, 0, 1));
  // Avalanche: one flipped input bit flips about half of the output bits.
  int total = 0;
  for (int bit = 0; bit < 32; ++bit) {
    const uint64_t a = kvbits::derive_rotation_seed(7, 0, 0, 0, 0);
    const uint64_t b = kvbits::derive_rotation_seed(7, 1u << bit, 0, 0, 0);
    for (uint64_t x = a ^ b; x != 0; x &= x - 1) ++total;
  }
  EXPECT_GT(total, 32 * 20);
  EXPECT_LT(total, 32 * 44);
}

}  // namespace
