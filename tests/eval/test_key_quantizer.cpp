// K-only quantize -> dequantize per method through the plan machinery, and byte counts.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "kvbits/bitpack.hpp"
#include "kvbits/energy.hpp"
#include "kvbits/eval.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

Activations small_set(uint64_t stream, uint32_t D = 16) {
  SyntheticOptions o;
  o.head_dim = D;
  o.n_layers = 2;
  o.n_q_heads = 4;
  o.n_kv_heads = 2;
  o.sequences = 2;
  o.seq_tokens = 64;
  o.stream = stream;
  return synthetic_activations(o);
}

double rel_error(const std::vector<float>& k, const std::vector<float>& k_hat) {
  double num = 0, den = 0;
  for (size_t i = 0; i < k.size(); ++i) num += (k[i] - k_hat[i]) * double(k[i] - k_hat[i]), den += double(k[i]) * k[i];
  return num / den;
}

TEST(KeyMethod, NamesRoundTrip) {
  for (KeyMethod m : {KeyMethod::uniform, KeyMethod::bgt_energy, KeyMethod::bgt_product, KeyMethod::kivi})
    EXPECT_EQ(key_method_from_name(key_method_name(m)), m);
  try {
    key_method_from_name("gtq");
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::invalid_argument);
  }
}

TEST(KeyQuantizer, TqRoundTripIsThePlansEncodeDecode) {
  const Activations calib = small_set(1), test = small_set(2);
  const EnergyAccumulator acc = calibration_energies(calib);
  const EvalOptions opt;
  const KeyQuantizer kq(KeyMethod::bgt_product, 3, acc, opt);
  ASSERT_NE(kq.plan(), nullptr);
  EXPECT_EQ(kq.plan()->method, Method::block_gtq);
  EXPECT_EQ(kq.plan()->score, ScoreKind::product);
  const HeadRows rows = head_rows(test, 1, 1, false);
  const size_t T = test.tokens;
  std::vector<float> k_hat(T * 16), want(T * 16);
  kq.roundtrip(1, 1, rows.k.data(), T, test.seq_tokens, k_hat.data());
  const HeadQuantizers hq = make_head_quantizers(*kq.plan(), 1, 1);
  std::vector<uint8_t> packed(hq.k.code_bytes());
  std::vector<uint16_t> scales(hq.k.n_groups());
  for (size_t t = 0; t < T; ++t) {
    hq.k.encode(&rows.k[t * 16], packed.data(), scales.data());
    hq.k.decode(packed.data(), scales.data(), &want[t * 16]);
  }
  EXPECT_EQ(k_hat, want);
}

TEST(KeyQuantizer, ErrorShrinksWithBitsForEveryMethod) {
  const Activations calib = small_set(1), test = small_set(2);
  const EnergyAccumulator acc = calibration_energies(calib);
  const HeadRows rows = head_rows(test, 0, 0, false);
  const size_t T = test.tokens;
  for (KeyMethod m : {KeyMethod::uniform, KeyMethod::bgt_energy, KeyMethod::bgt_product, KeyMethod::kivi}) {
    double previous = 1e30;
    for (int bits : {2, 4, 8}) {
      const KeyQuantizer kq(m, bits, acc, EvalOptions{});
      std::vector<float> k_hat(T * 16);
      kq.roundtrip(0, 0, rows.k.data(), T, test.seq_tokens, k_hat.data());
      const double err = rel_error(rows.k, k_hat);
      EXPECT_LT(err, previous) << key_method_name(m) << " " << bits;
      previous = err;
    }
    EXPECT_LT(previous, 1e-3) << key_method_name(m);
  }
}

TEST(KeyQuantizer, KiviGroupsNeverStraddleTwoSequences) {
  const Activations calib = small_set(1), test = small_set(2);
  const KeyQuantizer kq(KeyMethod::kivi, 2, calibration_energies(calib), EvalOptions{});
  EXPECT_EQ(kq.plan(), nullptr);
  const HeadRows rows = head_rows(test, 0, 1, false);
  std::vector<float> k_hat(rows.k.size()), want(rows.k.size());
  kq.roundtrip(0, 1, rows.k.data(), 128, 64, k_hat.data());
  const KiviOptions o{2, 32, 0};
  kivi_roundtrip_keys(rows.k.data(), 64, 16, o, want.data());
  kivi_roundtrip_keys(rows.k.data() + 64 * 16, 64, 16, o, want.data() + 64 * 16);
  EXPECT_EQ(k_hat, want);
  EXPECT_THROW(kq.roundtrip(0, 1, rows.k.data(), 100, 64, k_hat.data()), Error);
}

TEST(KeyQuantizer, BytesPerToken) {
  const Activations calib = small_set(1);
  const EnergyAccumulator acc = calibration_energies(calib);
  // Uniform 2 bits at D = 16: 4 code bytes + one fp16 scale; K+V doubles it.
  const KeyQuantizer uni(KeyMethod::uniform, 2, acc, EvalOptions{});
  EXPECT_DOUBLE_EQ(uni.key_bytes_per_token(64), 6.0);
  EXPECT_DOUBLE_EQ(uni.kv_bytes_per_token(64), 12.0);
  // Block-GTQ: the same code bits (the budget is spent) plus one scale per width group.
  const KeyQuantizer bgt(KeyMethod::bgt_energy, 3, acc, EvalOptions{});
  double want = 0;
  for (uint32_t l = 0; l < 2; ++l)
    for (uint32_t h = 0; h < 2; ++h) {
      const HeadLayout lay = bgt.plan()->head_layout(l, h);
      for (const KeyGroup& g : lay.groups) want += double(packed_bytes(g.dims, g.bits) + 2);
    }
  EXPECT_DOUBLE_EQ(bgt.key_bytes_per_token(64), want / 4);
  EXPECT_DOUBLE_EQ(bgt.kv_bytes_per_token(64), bgt.plan()->mean_bytes_per_token());
  // KIVI-2, G = 32: 4 code bytes + 16 channels * 4 bytes / 32 tokens.
  const KeyQuantizer kivi(KeyMethod::kivi, 2, acc, EvalOptions{});
  EXPECT_DOUBLE_EQ(kivi.key_bytes_per_token(64), 6.0);
}

TEST(KeyQuantizer, RejectsBadBits) {
  const EnergyAccumulator acc = calibration_energies(small_set(1));
  EXPECT_THROW(KeyQuantizer(KeyMethod::uniform, 0, acc, EvalOptions{}), Error);
  EXPECT_THROW(KeyQuantizer(KeyMethod::kivi, 9, acc, EvalOptions{}), Error);
}

}  // namespace
}  // namespace kvbits::eval
