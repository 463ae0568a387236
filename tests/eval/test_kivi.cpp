// KIVI reference quantizer: hand-computed groups, rounding, guards, layouts and byte counts.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kvbits/eval.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

TEST(Kivi, ExactGridIsReproduced) {
  const KiviGroup g = kivi_group(0.0f, 3.0f, 2);  // scale (3 - 0) / 3 = 1
  EXPECT_EQ(g.min, 0.0f);
  EXPECT_EQ(g.scale, 1.0f);
  for (uint32_t c = 0; c < 4; ++c) {
    EXPECT_EQ(kivi_encode(float(c), g, 2), c);
    EXPECT_EQ(kivi_decode(c, g), float(c));
  }
}

TEST(Kivi, TiesRoundHalfToEven) {
  const KiviGroup g = kivi_group(0.0f, 3.0f, 2);
  EXPECT_EQ(kivi_encode(0.5f, g, 2), 0u);  // half-away-from-zero would give 1
  EXPECT_EQ(kivi_encode(1.5f, g, 2), 2u);
  EXPECT_EQ(kivi_encode(2.5f, g, 2), 2u);  // ... and 3 here
}

TEST(Kivi, ScaleAndArithmeticAreFp16) {
  // scale = fp16(1/3) = 0.333251953125; 0.5 / scale = 1.50036..., which fp16 rounds to exactly
  // 1.5 -> code 2; decode fp16(2 * scale) = 0.66650390625.
  const KiviGroup g = kivi_group(0.0f, 1.0f, 2);
  EXPECT_EQ(g.scale, 0.333251953125f);
  EXPECT_EQ(kivi_encode(0.5f, g, 2), 2u);
  EXPECT_EQ(kivi_decode(2, g), 0.66650390625f);
  EXPECT_EQ(kivi_encode(0.17f, g, 2), 1u);
  // 3 * scale = 0.999755859375, halfway between two fp16 values: even mantissa -> 1.0.
  EXPECT_EQ(kivi_decode(3, g), 1.0f);
  // The minimum is stored in fp16 too.
  EXPECT_EQ(kivi_group(0.1f, 1.0f, 2).min, 0.0999755859375f);
}

TEST(Kivi, ConstantGroupDecodesToItsMinimum) {
  const KiviGroup g = kivi_group(5.0f, 5.0f, 4);
  EXPECT_EQ(g.scale, 0.0f);
  EXPECT_EQ(kivi_encode(5.0f, g, 4), 0u);  // no 0/0
  EXPECT_EQ(kivi_decode(0, g), 5.0f);
  const std::vector<float> k = {5, 5, 5, 5};
  std::vector<float> k_hat(4);
  kivi_roundtrip_keys(k.data(), 4, 1, KiviOptions{2, 4, 0}, k_hat.data());
  EXPECT_EQ(k_hat, k);
}

TEST(Kivi, CodesAreClampedToTheGrid) {
  const KiviGroup g = kivi_group(0.0f, 3.0f, 2);
  EXPECT_EQ(kivi_encode(-7.0f, g, 2), 0u);
  EXPECT_EQ(kivi_encode(9.0f, g, 2), 3u);
}

TEST(Kivi, KeysArePerChannelOverTokenGroups) {
  // 5 tokens x 2 channels, G = 4, 1 bit. Channel 0 tokens 0..3 = {0, 1, 3, 4}: min 0,
  // scale 4, codes {0, 0, 1, 1} -> {0, 0, 4, 4}. Channel 1 = {10, 10, 10, 10}: constant.
  // Token 4 is a group of its own: exact.
  const std::vector<float> k = {0, 10, 1, 10, 3, 10, 4, 10, 7, -2};
  std::vector<float> k_hat(k.size());
  kivi_roundtrip_keys(k.data(), 5, 2, KiviOptions{1, 4, 0}, k_hat.data());
  const std::vector<float> want = {0, 10, 0, 10, 4, 10, 4, 10, 7, -2};
  EXPECT_EQ(k_hat, want);
}

TEST(Kivi, ResidualTokensStayInFp16) {
  const std::vector<float> k = {0, 1, 3, 4, 0.1f, 0.2f};  // 6 tokens x 1 channel
  std::vector<float> k_hat(k.size());
  kivi_roundtrip_keys(k.data(), 6, 1, KiviOptions{1, 4, 2}, k_hat.data());
  EXPECT_EQ(k_hat[0], 0.0f);
  EXPECT_EQ(k_hat[1], 0.0f);
  EXPECT_EQ(k_hat[2], 4.0f);
  EXPECT_EQ(k_hat[3], 4.0f);
  EXPECT_EQ(k_hat[4], 0.0999755859375f);  // fp16(0.1)
  EXPECT_EQ(k_hat[5], 0.199951171875f);   // fp16(0.2)
  // A sequence shorter than the residual is entirely fp16.
  kivi_roundtrip_keys(k.data(), 2, 1, KiviOptions{1, 4, 8}, k_hat.data());
  EXPECT_EQ(k_hat[1], 1.0f);
}

TEST(Kivi, ValuesArePerTokenOverChannelGroups) {
  // 1 token x 4 channels, G = 2, 2 bits: {0, 3} -> scale 1, exact; {10, 10} constant.
  // Second token {0, 1, 3, 4}: {0, 1} and {3, 4} each decode exactly (1 / fp16(1/3) rounds to 3).
  const std::vector<float> v = {0, 3, 10, 10, 0, 1, 3, 4};
  std::vector<float> v_hat(v.size());
  kivi_roundtrip_values(v.data(), 2, 4, KiviOptions{2, 2, 0}, v_hat.data());
  EXPECT_EQ(v_hat, v);
  // One group of 4 channels: {0, 1, 3, 4} with 1 bit -> {0, 0, 4, 4}.
  kivi_roundtrip_values(v.data() + 4, 1, 4, KiviOptions{1, 32, 0}, v_hat.data());
  EXPECT_EQ(v_hat[1], 0.0f);
  EXPECT_EQ(v_hat[2], 4.0f);
}

TEST(Kivi, BytesPerTokenMatchThePeerSpec) {
  // KIVI-2 with G = 32 stores 3.0 bits per element, KIVI-4 5.0, G = 128: 2.25 (spec §1.6).
  EXPECT_DOUBLE_EQ(kivi_key_bytes_per_token(128, KiviOptions{2, 32, 0}, 4096) * 8 / 128, 3.0);
  EXPECT_DOUBLE_EQ(kivi_key_bytes_per_token(128, KiviOptions{4, 32, 0}, 4096) * 8 / 128, 5.0);
  EXPECT_DOUBLE_EQ(kivi_key_bytes_per_token(128, KiviOptions{2, 128, 0}, 4096) * 8 / 128, 2.25);
  // Values with a 128-token fp16 window at L = 4096: (3968*3 + 128*16) / 4096 = 3.40625 bits.
  EXPECT_DOUBLE_EQ(kivi_value_bytes_per_token(128, KiviOptions{2, 32, 128}, 4096) * 8 / 128, 3.40625);
  // head_dim 8 < G: values use one 8-channel group (8*2/8 + 4 bytes).
  EXPECT_DOUBLE_EQ(kivi_value_bytes_per_token(8, KiviOptions{2, 32, 0}, 256), 6.0);
}

TEST(Kivi, RejectsBadInput) {
  std::vector<float> k = {1, 2}, k_hat(2);
  EXPECT_THROW(kivi_roundtrip_keys(k.data(), 2, 1, KiviOptions{0, 32, 0}, k_hat.data()), Error);
  EXPECT_THROW(kivi_roundtrip_keys(k.data(), 2, 1, KiviOptions{2, 0, 0}, k_hat.data()), Error);
  k[1] = std::nanf("");
  try {
    kivi_roundtrip_keys(k.data(), 2, 1, KiviOptions{2, 32, 0}, k_hat.data());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::invalid_argument);
  }
  EXPECT_THROW(kivi_group(2.0f, 1.0f, 2), Error);
}

}  // namespace
}  // namespace kvbits::eval
