// The evaluation driver on a small synthetic panel: every setting, sane metric ranges.
#include <gtest/gtest.h>

#include <vector>

#include "kvbits/eval.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

Activations panel(uint64_t stream) {
  SyntheticOptions o;
  o.head_dim = 64;
  o.n_layers = 2;
  o.n_q_heads = 4;
  o.n_kv_heads = 2;
  o.sequences = 2;
  o.seq_tokens = 128;
  o.stream = stream;
  return synthetic_activations(o);
}

TEST(QualityEval, RunsEverySettingWithSaneMetrics) {
  EvalOptions o;
  o.bits = {2, 4};
  o.kl_window = 32;
  const EvalReport rep = run_quality_eval(panel(1), panel(2), o);
  ASSERT_EQ(rep.settings.size(), 8u);
  EXPECT_EQ(rep.settings[0].bits, 2);  // bits-major, methods in option order
  EXPECT_EQ(rep.settings[1].method, KeyMethod::bgt_energy);
  for (const SettingResult& r : rep.settings) {
    ASSERT_EQ(r.layer_mae.size(), 2u);
    ASSERT_EQ(r.layer_kl.size(), 2u);
    EXPECT_GT(r.mae(), 0.0);
    EXPECT_GE(r.kl(), 0.0);
    EXPECT_GT(r.top10(), 0.0);
    EXPECT_LE(r.top10(), 1.0);
    EXPECT_EQ(r.plan == nullptr, r.method == KeyMethod::kivi);
  }
  for (KeyMethod m : o.methods) {
    EXPECT_LT(rep.find(m, 4)->mae(), rep.find(m, 2)->mae()) << key_method_name(m);
    EXPECT_LT(rep.find(m, 4)->kl(), rep.find(m, 2)->kl()) << key_method_name(m);
  }
  EXPECT_EQ(rep.find(KeyMethod::kivi, 3), nullptr);
}

TEST(QualityEval, BlockGtqBeatsUniformOnTheSyntheticPanel) {
  EvalOptions o;
  o.bits = {3};
  o.methods = {KeyMethod::uniform, KeyMethod::bgt_energy, KeyMethod::bgt_product};
  o.attention = false;
  const EvalReport rep = run_quality_eval(panel(1), panel(2), o);
  const SettingResult& uni = *rep.find(KeyMethod::uniform, 3);
  for (KeyMethod m : {KeyMethod::bgt_energy, KeyMethod::bgt_product}) {
    EXPECT_EQ(layers_won(rep.find(m, 3)->layer_mae, uni.layer_mae), 2u) << key_method_name(m);
    EXPECT_TRUE(rep.find(m, 3)->layer_kl.empty());
  }
}

TEST(QualityEval, Comparisons) {
  EXPECT_DOUBLE_EQ(relative_change(7.0, 10.0), -0.3);
  EXPECT_EQ(layers_won({1, 5, 2}, {2, 4, 3}), 2u);
  EXPECT_THROW(layers_won({1}, {1, 2}), Error);
}

TEST(QualityEval, RejectsMismatchedSets) {
  SyntheticOptions o;
  o.head_dim = 32;
  o.n_layers = 1;
  o.n_q_heads = 2;
  o.n_kv_heads = 1;
  o.sequences = 1;
  o.seq_tokens = 32;
  try {
    run_quality_eval(panel(1), synthetic_activations(o), EvalOptions{});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::shape_mismatch);
  }
  EvalOptions bad;
  bad.bits = {};
  EXPECT_THROW(run_quality_eval(panel(1), panel(2), bad), Error);
}

}  // namespace
}  // namespace kvbits::eval
