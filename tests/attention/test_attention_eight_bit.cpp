// At 8 bits per dim (K and V), attention on the packed cache must equal attention over the
// ORIGINAL K/V within a bound derived from the 8-bit codebook's error; at 2 bits the same
// bound must fail (the test is not vacuous).
#include <gtest/gtest.h>

#include <cmath>

#include "attention_scenario.hpp"
#include "kvbits/codebook.hpp"

using namespace kvbits;
using namespace kvbits::test_attn;

namespace {

// Decode for every sequence of a D = 128, GQA 4 cache at `bits` for K and V, against fp64
// attention over the appended (original) K/V.
ErrorStats error_vs_original(int bits, uint64_t seed) {
  ScenarioConfig c;
  c.shape = make_shape(2, 8, 2, 128);
  c.plan.k_avg_bits = bits;
  c.plan.v_bits = bits;
  c.cache.page_size = 32;
  c.cache.sink_tokens = 0, c.cache.window_tokens = 0;
  c.lengths = {1, 31, 33, 200, 700};
  c.seed = seed;
  Scenario sc(c);
  const ModelShape& sh = sc.shape();
  const size_t n = sc.seqs().size();
  ErrorStats all;
  for (uint32_t layer = 0; layer < sh.n_layers; ++layer) {
    const auto q = sc.queries(n, 5 + layer);
    std::vector<float> out(n * sh.n_q_heads * sh.head_dim), lse(n * sh.n_q_heads);
    attention_decode(sc.cache(), layer, sc.seqs().data(), n, q.data(), DType::f32, out.data(), lse.data(), {});
    std::vector<double> ref, ref_lse;
    sc.reference(layer, {0, 1, 2, 3, 4}, std::vector<uint32_t>(n, 1), q.data(), 1.0 / std::sqrt(128.0), true, ref,
                 ref_lse);
    all.merge(compare(out, ref, lse.data(), ref_lse, sh.head_dim));
  }
  return all;
}

// The bound. After the per-group rotation a unit vector's coordinates are ~N(0, 1/d), so the
// codebook leaves a relative error eps = sqrt(mse_b) on every K and V vector (mse_b: the unit
// Gaussian codebook's MSE per unit variance, 4.1e-5 at 8 bits, eps = 6.4e-3; norm correction
// keeps the norm; the fp16 scale adds <= 2^-11). The test vectors have RMS 1 per dim, so
//   - a logit q.k/sqrt(D) moves by ~N(0, eps^2) (|q| |dk| / sqrt(D) = eps), and the LSE, a
//     softmax mean of those moves, by at most as much;
//   - an output coordinate is a softmax average of values with ~N(0, eps^2) errors plus the
//     first-order effect of the logit moves: an error of ~eps per unit of output scale.
// The test takes the maximum over ~10^4 such errors (80 rows x 128 dims), and the maximum of
// 10^4 standard normals is about sqrt(2 ln 10^4) = 4.3, so the bound is 5 eps (3.2e-2 at 8 bits)
// on both max|err| / max|ref| and |lse - ref|. Measured over eight seeds: 1.8-2.9 eps on the
// output, 1.4-3.5 eps on the LSE. At 2 bits eps = 0.34 and the same 3.2e-2 must fail.
double bound_for(int bits) {
  const double mse = gaussian_codebook_mse(unit_gaussian_codebook(bits, CodebookRecipe::lloyd_max));
  return 5.0 * std::sqrt(mse);
}

}  // namespace

TEST(AttentionEightBit, EqualsAttentionOverTheOriginalKvWithinTheCodebookBound) {
  const double bound = bound_for(8);
  const ErrorStats st = error_vs_original(8, 3);
  std::printf("K8V8 vs original K/V: %zu rows, max rel err %.3g, max lse err %.3g (bound %.3g)\n", st.rows,
              st.max_rel, st.max_lse, bound);
  EXPECT_LT(bound, 3.5e-2);
  EXPECT_LT(st.max_rel, bound);
  EXPECT_LT(st.max_lse, bound);
}

TEST(AttentionEightBit, TheBoundFailsAtTwoBits) {
  const double bound = bound_for(8);
  const ErrorStats st = error_vs_original(2, 3);
  std::printf("K2V2 vs original K/V: max rel err %.3g, max lse err %.3g (8-bit bound %.3g)\n", st.max_rel, st.max_lse,
              bound);
  EXPECT_GT(st.max_rel, bound);
}
