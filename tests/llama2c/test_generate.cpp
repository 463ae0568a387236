#include "generate.hpp"

#include <gtest/gtest.h>

#include <cmath>

#include "kv_store.hpp"
#include "kvbits/status.hpp"
#include "runner.hpp"
#include "sampler.hpp"
#include "stories.hpp"

namespace llama2c {
namespace {

using kvbits::StatusCode;
using namespace llama2c_test;

// The data README's reference: greedy decoding of "Once upon a time" (llama2.c's
// doc/stories260K.md sample, reproduced by an independent numpy forward pass).
TEST(Generate, GreedyContinuationMatchesTheReference) {
  const Model& model = stories_model();
  const Tokenizer& tok = stories_tokenizer();
  const std::vector<int> prompt = tok.encode("Once upon a time", true, false);
  Sampler greedy(0.0f, 1);
  FloatKvStore kv(model.config());
  const std::vector<int> out = generate(model, kv, prompt, 40, greedy);
  ASSERT_EQ(out.size(), 40u);
  EXPECT_EQ(std::vector<int>(out.begin(), out.begin() + 10),
            (std::vector<int>{432, 383, 286, 261, 376, 298, 315, 421, 395, 317}));
  std::vector<int> all = prompt;
  all.insert(all.end(), out.begin(), out.end());
  const std::string text = tok.decode(all);
  const std::string expected =
      "Once upon a time, there was a little girl named Lily. She loved to play outside in the park.";
  EXPECT_EQ(text.substr(0, expected.size()), expected) << text;
}

TEST(Generate, SameSeedSameTokensAndStepsAreBounded) {
  const Model& model = stories_model();
  const std::vector<int> prompt = {1};
  auto sample = [&](uint64_t seed) {
    Sampler s(1.0f, seed);
    FloatKvStore kv(model.config());
    return generate(model, kv, prompt, 30, s);
  };
  const std::vector<int> a = sample(7);
  EXPECT_EQ(a, sample(7));
  EXPECT_NE(a, sample(8));
  EXPECT_LE(a.size(), 30u);

  Sampler s(0.0f, 1);
  FloatKvStore kv(model.config());
  EXPECT_TRUE(generate(model, kv, {1, 403}, 0, s).empty());
  FloatKvStore kv2(model.config());
  EXPECT_THROW(generate(model, kv2, {}, 5, s), kvbits::Error);
  EXPECT_THROW(generate(model, kv2, {1, 403}, 511, s), kvbits::Error);  // 2 + 511 > seq_len 512
}

TEST(Runner, RejectsTokensAndPositionsOutOfRange) {
  Runner r(stories_model());
  FloatKvStore kv(stories_model().config());
  EXPECT_THROW(r.forward(512, 0, kv), kvbits::Error);
  EXPECT_THROW(r.forward(-1, 0, kv), kvbits::Error);
  EXPECT_THROW(r.forward(1, 512, kv), kvbits::Error);
  // The kv store insists on positions in order.
  EXPECT_THROW(r.forward(1, 1, kv), kvbits::Error);
  const float* logits = r.forward(1, 0, kv);
  EXPECT_TRUE(std::isfinite(logits[0]));
}

TEST(FloatKvStore, AttentionIsTheSoftmaxWeightedValueMean) {
  Config c;
  c.dim = 4;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.n_layers = 1;
  c.seq_len = 4;
  FloatKvStore kv(c);  // head_dim 2, both query heads read the one KV head
  const float k0[2] = {1, 0}, v0[2] = {10, 20};
  const float k1[2] = {0, 1}, v1[2] = {30, 40};
  kv.append(0, 0, k0, v0);
  kv.append(0, 1, k1, v1);
  const float q[4] = {std::sqrt(2.0f) * std::log(3.0f), 0, 0, 0};  // head 0 prefers k0 3:1; head 1 even
  float out[4];
  kv.attention(0, 1, q, out);
  EXPECT_NEAR(out[0], 0.75 * 10 + 0.25 * 30, 1e-4);
  EXPECT_NEAR(out[1], 0.75 * 20 + 0.25 * 40, 1e-4);
  EXPECT_NEAR(out[2], 20, 1e-5);
  EXPECT_NEAR(out[3], 30, 1e-5);
  kv.attention(0, 0, q, out);  // causal: position 0 sees only itself
  EXPECT_FLOAT_EQ(out[0], 10);
  EXPECT_FLOAT_EQ(out[3], 20);

  EXPECT_THROW(kv.append(0, 3, k0, v0), kvbits::Error);  // skips position 2
  EXPECT_THROW(kv.append(1, 0, k0, v0), kvbits::Error);  // no layer 1
  EXPECT_THROW(kv.attention(0, 2, q, out), kvbits::Error);  // not appended yet
}

TEST(Sampler, SplitMix64MatchesItsReferenceStream) {
  SplitMix64 rng(0);
  EXPECT_EQ(rng.next(), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(rng.next(), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(rng.next(), 0x06C45D188009454Full);
  SplitMix64 u(0);
  EXPECT_EQ(u.uniform(), double(0xE220A8397B1DCDAFull >> 11) / 9007199254740992.0);
}

TEST(Sampler, GreedyTakesTheLowestIndexOfTheMaximum) {
  const float logits[5] = {1, 3, -2, 3, 0};
  EXPECT_EQ(argmax(logits, 5), 1);
  Sampler s(0.0f, 123);
  EXPECT_EQ(s.sample(logits, 5), 1);
  EXPECT_THROW(Sampler(-1.0f, 1), kvbits::Error);
  EXPECT_THROW(Sampler(std::nanf(""), 1), kvbits::Error);
}

TEST(Sampler, TemperatureSamplingFollowsTheSoftmax) {
  // logits (0, ln 3, -inf-ish): probabilities 1/4, 3/4, ~0 at T = 1; (1/4)^2 -> 1/10, 9/10 at T = 0.5.
  const float logits[3] = {0.0f, std::log(3.0f), -200.0f};
  for (const auto& [temperature, p1] : {std::pair<float, double>{1.0f, 0.75}, {0.5f, 0.9}}) {
    Sampler s(temperature, 42);
    int counts[3] = {0, 0, 0};
    const int n = 200000;
    for (int i = 0; i < n; ++i) ++counts[s.sample(logits, 3)];
    EXPECT_NEAR(double(counts[1]) / n, p1, 0.005) << "T=" << temperature;
    EXPECT_EQ(counts[2], 0);
  }
}

}  // namespace
}  // namespace llama2c
