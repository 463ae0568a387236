// Quality regression bound on the bundled real model: Block-GTQ must beat uniform TQ-MSE on
// the §9.1 RoPE-logit MAE of every layer at 3 bits (calibrate 4x128 self-sampled tokens with
// seed 1, test 4x128 with seed 2; the full 8x256 numbers are in docs/QUALITY.md).
#include <gtest/gtest.h>

#include <cmath>

#include "../llama2c/stories.hpp"
#include "capture.hpp"
#include "kvbits/activation_dump.hpp"
#include "kvbits/eval.hpp"
#include "kvbits/safetensors.hpp"
#include "kvbits/status.hpp"

namespace kvbits::eval {
namespace {

using llama2c_test::stories_model;

llama2c::Capture capture(uint64_t seed, RopeApplied rope, int sequences, int tokens) {
  llama2c::CaptureOptions o;
  o.sequences = sequences;
  o.tokens = tokens;
  o.seed = seed;
  o.rope = rope;
  o.corpus = "stories260K self-sampled, seed " + std::to_string(seed);
  return llama2c::capture_activations(stories_model(), o);
}

Activations from_capture(const llama2c::Capture& c, uint32_t seq_tokens) {
  Activations a;
  a.shape = c.metadata.shape;
  a.seq_tokens = seq_tokens;
  a.tokens = c.metadata.tokens;
  a.q = c.q;
  a.k = c.k;
  a.source = c.metadata.corpus;
  a.validate();
  return a;
}

TEST(StoriesQuality, BlockGtqBeatsUniformOnEveryLayerAt3Bits) {
  const Activations calib = from_capture(capture(1, RopeApplied::pre, 4, 128), 128);
  const Activations test = from_capture(capture(2, RopeApplied::pre, 4, 128), 128);
  EvalOptions o;
  o.bits = {3};
  o.methods = {KeyMethod::uniform, KeyMethod::bgt_energy, KeyMethod::bgt_product};
  o.attention = false;
  const EvalReport rep = run_quality_eval(calib, test, o);
  const SettingResult& uni = *rep.find(KeyMethod::uniform, 3);
  for (KeyMethod m : {KeyMethod::bgt_energy, KeyMethod::bgt_product}) {
    const SettingResult& r = *rep.find(m, 3);
    EXPECT_EQ(layers_won(r.layer_mae, uni.layer_mae), 5u) << key_method_name(m);
    // Stated bound on the layer mean (the full run measures far more, see docs/QUALITY.md).
    EXPECT_LT(relative_change(r.mae(), uni.mae()), -0.10) << key_method_name(m);
  }
}

TEST(StoriesQuality, PostRopeDumpsAreUnrotatedToThePreRopeRows) {
  const std::string path = llama2c_test::temp_path("post.safetensors");
  llama2c::write_capture(path, capture(3, RopeApplied::post, 2, 32));
  const SafetensorsFile file = SafetensorsFile::load(path);
  const Activations post = activations_from_dump(view_activation_dump(file), 32);
  const Activations pre = from_capture(capture(3, RopeApplied::pre, 2, 32), 32);
  for (uint32_t l = 0; l < 5; ++l)
    for (size_t i = 0; i < pre.k[l].size(); ++i) ASSERT_NEAR(post.k[l][i], pre.k[l][i], 1e-4);
  EXPECT_THROW(activations_from_dump(view_activation_dump(file), 48), Error);  // 64 rows, not whole sequences
}

}  // namespace
}  // namespace kvbits::eval
