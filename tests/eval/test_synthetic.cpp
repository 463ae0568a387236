// The synthetic LLM-like panel: determinism and the structure it promises.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "kvbits/energy.hpp"
#include "kvbits/eval.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

SyntheticOptions options(uint32_t D, RopeLayout layout = RopeLayout::split_half) {
  SyntheticOptions o;
  o.head_dim = D;
  o.n_layers = 2;
  o.n_q_heads = 4;
  o.n_kv_heads = 2;
  o.layout = layout;
  o.sequences = 2;
  o.seq_tokens = 128;
  return o;
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

TEST(Synthetic, SameSeedGivesTheSameBytes) {
  const Activations a = synthetic_activations(options(64)), b = synthetic_activations(options(64));
  for (uint32_t l = 0; l < 2; ++l) {
    EXPECT_TRUE(same_bytes(a.q[l], b.q[l]));
    EXPECT_TRUE(same_bytes(a.k[l], b.k[l]));
  }
  SyntheticOptions other = options(64);
  other.stream = 1;  // a different token draw of the same "model"
  EXPECT_FALSE(same_bytes(synthetic_activations(other).k[0], a.k[0]));
  other = options(64);
  other.seed = 2;
  EXPECT_FALSE(same_bytes(synthetic_activations(other).k[0], a.k[0]));
}

TEST(Synthetic, ShapeAndSequences) {
  const Activations a = synthetic_activations(options(128, RopeLayout::interleaved));
  EXPECT_EQ(a.shape.head_dim, 128u);
  EXPECT_EQ(a.shape.rope_layout, RopeLayout::interleaved);
  EXPECT_EQ(a.tokens, 256u);
  EXPECT_EQ(a.seq_tokens, 128u);
  EXPECT_NE(a.source.find("synthetic"), std::string::npos);
  SyntheticOptions bad = options(64);
  bad.n_q_heads = 3;
  EXPECT_THROW(synthetic_activations(bad), Error);
}

// Block energies span orders of magnitude and rise towards low frequencies, in both layouts.
TEST(Synthetic, EnergySpanAndFrequencyTrend) {
  for (uint32_t D : {64u, 128u})
    for (RopeLayout layout : {RopeLayout::split_half, RopeLayout::interleaved}) {
      const Activations a = synthetic_activations(options(D, layout));
      const EnergyAccumulator acc = calibration_energies(a);
      for (uint32_t l = 0; l < 2; ++l)
        for (uint32_t h = 0; h < 2; ++h)
          for (const auto& e : {acc.mean_k_energy(l, h), acc.mean_q_energy(l, h)}) {
            const size_t n = e.size();
            double lo = 1e300, hi = 0, low_half = 0, high_half = 0;
            for (size_t i = 0; i < n; ++i) {
              lo = std::min(lo, e[i]);
              hi = std::max(hi, e[i]);
              (i < n / 2 ? high_half : low_half) += std::log10(e[i]) / double(n / 2);
            }
            EXPECT_GT(hi / lo, 30.0) << "D " << D << " layer " << l << " head " << h;
            // Mean log-energy of the low-frequency half exceeds the high-frequency half.
            EXPECT_GT(low_half - high_half, 0.4) << "D " << D << " layer " << l << " head " << h;
          }
    }
}

TEST(Synthetic, SinkTokenIsMassiveAndAttracted) {
  const Activations a = synthetic_activations(options(128));
  const HeadRows r = head_rows(a, 0, 0, true);
  auto norm = [&](size_t t) {
    double s = 0;
    for (size_t d = 0; d < 128; ++d) s += double(r.k[t * 128 + d]) * r.k[t * 128 + d];
    return std::sqrt(s);
  };
  double others = 0;
  for (size_t t = 1; t < 128; ++t) others += norm(t) / 127.0;
  EXPECT_GT(norm(0), 4.0 * others);
  EXPECT_GT(norm(128), 4.0 * others);  // every sequence starts with a sink
  // The sink draws most of the attention of late queries (uniform would give 1/128).
  const size_t G = 2;
  double weight = 0;
  for (size_t t = 64; t < 128; ++t) {
    std::vector<double> logits(t + 1);
    for (size_t j = 0; j <= t; ++j) {
      double s = 0;
      for (size_t d = 0; d < 128; ++d) s += double(r.q[(t * G) * 128 + d]) * r.k[j * 128 + d];
      logits[j] = s / std::sqrt(128.0);
    }
    double m = logits[0], z = 0;
    for (double x : logits) m = std::max(m, x);
    for (double x : logits) z += std::exp(x - m);
    weight += std::exp(logits[0] - m) / z / 64.0;
  }
  EXPECT_GT(weight, 0.3);
}

}  // namespace
}  // namespace kvbits::eval
