// Plan::validate: each invariant, broken one at a time, is caught with a message naming it.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>

#include "kvbits/plan.hpp"
#include "kvbits/status.hpp"
#include "test_plans.hpp"

namespace kvbits {
namespace {

Plan base_plan() { return test::random_plan(test::stories260k_shape(), 41); }
HeadPlan& head0(Plan& p) { return p.layers[0].heads[0]; }
HeadPlan& head2(Plan& p) { return p.layers[2].heads[1]; }  // a head with generated rotations only

TEST(PlanValidate, SamplePlansAreValid) {
  EXPECT_NO_THROW(base_plan().validate());
  EXPECT_NO_THROW(test::golden_plan().validate());
  EXPECT_NO_THROW(test::random_plan(test::split_half_128_shape(), 3).validate());
}

struct BadField {
  const char* name;
  std::function<void(Plan&)> mutate;
  std::string message;  // expected substring
};

std::vector<BadField> bad_fields() {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  return {
      {"n_kv_heads", [](Plan& p) { p.shape.n_kv_heads = 3; }, "n_q_heads (8) must be a multiple of n_kv_heads (3)"},
      {"head_dim odd", [](Plan& p) { p.shape.head_dim = 7; }, "head_dim must be even"},
      {"rope_theta", [](Plan& p) { p.shape.rope_theta = 1.0; }, "rope_theta must be finite and > 1"},
      {"method", [](Plan& p) { p.method = Method(5); }, "method is 5"},
      {"score", [](Plan& p) { p.score = ScoreKind(2); }, "score is 2"},
      {"recipe", [](Plan& p) { p.recipe = CodebookRecipe(9); }, "recipe is 9"},
      {"k_min_bits 0", [](Plan& p) { p.k_min_bits = 0; }, "k_min_bits/k_max_bits are 0/6"},
      {"k_max_bits 9", [](Plan& p) { p.k_max_bits = 9; }, "k_min_bits/k_max_bits are 1/9"},
      {"k_min > k_max", [](Plan& p) { p.k_min_bits = 7; }, "k_min_bits/k_max_bits are 7/6"},
      {"k_avg_bits NaN", [=](Plan& p) { p.k_avg_bits = nan; }, "k_avg_bits is nan"},
      {"k_avg_bits above max", [](Plan& p) { p.k_avg_bits = 6.5; }, "k_avg_bits is 6.5"},
      {"sink_tokens", [](Plan& p) { p.sink_tokens = (1u << 24) + 1; }, "sink_tokens is 16777217"},
      {"window_tokens", [](Plan& p) { p.window_tokens = ~0u; }, "window_tokens is 4294967295"},
      {"fingerprint kind", [](Plan& p) { p.fingerprint.kind = Fingerprint::Kind(3); }, "fingerprint.kind is 3"},
      {"fingerprint padding", [](Plan& p) { p.fingerprint.bytes[20] = 1; }, "fingerprint.bytes[20] must be 0"},
      {"tool too long", [](Plan& p) { p.producer.tool = std::string(257, 'a'); }, "producer.tool is 257 bytes"},
      {"corpus not UTF-8", [](Plan& p) { p.producer.corpus = "caf\xE9"; }, "producer.corpus is not UTF-8"},
      {"date with NUL", [](Plan& p) { p.producer.date = std::string("2025\0", 5); }, "producer.date is not UTF-8"},
      {"surrogate", [](Plan& p) { p.producer.tool = "\xED\xA0\x80"; }, "producer.tool is not UTF-8"},
      {"codebooks size", [](Plan& p) { p.unit_codebooks.resize(8); }, "unit_codebooks has 8 entries, expected 9"},
      {"codebook 0", [](Plan& p) { p.unit_codebooks[0] = {1.0}; }, "unit_codebooks[0] must be empty"},
      {"codebook size", [](Plan& p) { p.unit_codebooks[3].pop_back(); }, "unit_codebooks[3] has 7 centroids, expected 8"},
      {"codebook order", [](Plan& p) { std::swap(p.unit_codebooks[3][2], p.unit_codebooks[3][3]); },
       "unit_codebooks[3] is not strictly increasing at index 3"},
      {"codebook NaN", [=](Plan& p) { p.unit_codebooks[3][0] = nan; }, "unit_codebooks[3][0] is not finite"},
      {"codebook missing for a K width", [](Plan& p) { p.unit_codebooks[1].clear(); }, "uses K width 1 but unit_codebooks has no entry"},
      {"layers size", [](Plan& p) { p.layers.pop_back(); }, "layers has 4 entries, shape has n_layers=5"},
      {"fp16 layer with heads", [](Plan& p) { p.layers[1].heads.push_back(p.layers[0].heads[0]); },
       "layer 1 is kept at 16 bits but has 1 head plans"},
      {"heads per layer", [](Plan& p) { p.layers[3].heads.pop_back(); }, "layer 3 has 3 head plans, expected 4"},
      {"block_bits size", [](Plan& p) { head2(p).block_bits.pop_back(); }, "layer 2 kv head 1: block_bits has 3 entries, expected 4"},
      {"block width 0", [](Plan& p) { head2(p).block_bits[0] = 0; }, "layer 2 kv head 1: block_bits[0] is 0, outside [k_min_bits, k_max_bits] = [1, 6]"},
      {"block width above k_max", [](Plan& p) { head2(p).block_bits[1] = 7; }, "block_bits[1] is 7, outside"},
      {"block_order not a permutation", [](Plan& p) { head2(p).block_order[1] = head2(p).block_order[0]; },
       "layer 2 kv head 1: block_order: head layout: block order is not a permutation"},
      {"block_order out of range", [](Plan& p) { head2(p).block_order[0] = 4; }, "block order is not a permutation (position 0)"},
      {"block_order not sorted by width", [](Plan& p) { std::reverse(head2(p).block_order.begin(), head2(p).block_order.end()); },
       "block order is not sorted by width"},
      {"uniform with two widths", [](Plan& p) { p.method = Method::uniform_tq_mse; }, "method uniform-tq-mse needs one width per head"},
      {"q_energy size", [](Plan& p) { head2(p).q_energy.push_back(1.0); }, "layer 2 kv head 1: q_energy has 5 values, expected 4"},
      {"k_energy negative", [](Plan& p) { head2(p).k_energy[2] = -1.0; }, "k_energy[2] is not a finite value >= 0"},
      {"q_energy infinite", [](Plan& p) { head2(p).q_energy[3] = INFINITY; }, "q_energy[3] is not a finite value >= 0"},
      {"k_rotations count", [](Plan& p) { head2(p).k_rotations.push_back(head2(p).k_rotations[0]); }, "k_rotations has"},
      {"k rotation dim", [](Plan& p) { head2(p).k_rotations[0].dim += 2; }, "k_rotations[0] (group of width"},
      {"k rotation kind", [](Plan& p) { head2(p).k_rotations[0].kind = RotationSpec::Kind(2); }, "k_rotations[0] (group of width"},
      {"generated with matrix", [](Plan& p) {
         auto& r = head2(p).k_rotations[0];
         r.matrix.assign(size_t(r.dim) * r.dim, 0.0f);
       }, "is generated but carries"},
      {"explicit matrix size", [](Plan& p) { head0(p).v_rotation.matrix.pop_back(); }, "layer 0 kv head 0: v_rotation.matrix has 63 values, expected 64"},
      {"explicit matrix NaN", [](Plan& p) { head0(p).v_rotation.matrix[9] = NAN; }, "v_rotation.matrix[1][1] is not finite"},
      {"explicit matrix row norm", [](Plan& p) { head0(p).v_rotation.matrix[16] += 0.5f; }, "v_rotation.matrix row 2 has norm^2"},
      {"v_bits 0", [](Plan& p) { head2(p).v_bits = 0; }, "layer 2 kv head 1: v_bits is 0, outside [1, 8]"},
      {"v_bits 9", [](Plan& p) { head2(p).v_bits = 9; }, "v_bits is 9"},
      {"v codebook missing", [](Plan& p) { head2(p).v_bits = 8; }, "uses V width 8 but unit_codebooks has no entry"},
      {"v rotation dim", [](Plan& p) { head2(p).v_rotation.dim = 4; }, "v_rotation.dim is 4, expected 8"},
  };
}

TEST(PlanValidate, EachInvalidFieldIsNamed) {
  for (const BadField& c : bad_fields()) {
    Plan p = base_plan();
    c.mutate(p);
    try {
      p.validate();
      ADD_FAILURE() << c.name << ": accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::corrupt_data) << c.name;
      EXPECT_NE(std::string(e.what()).find(c.message), std::string::npos) << c.name << ": " << e.what();
      EXPECT_EQ(std::string(e.what()).rfind("plan: ", 0), 0u) << e.what();
    }
  }
}

TEST(PlanValidate, ExtraCodebooksForUnusedWidthsAreAllowed) {
  Plan p = base_plan();
  ASSERT_TRUE(p.unit_codebooks[8].empty());
  p.unit_codebooks[8] = test::test_codebook(8);
  EXPECT_NO_THROW(p.validate());
}

}  // namespace
}  // namespace kvbits
