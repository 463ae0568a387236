// From plan to quantizers: rotation materialisation, and quantizers built from a plan loaded
// from bytes encode exactly like those built from the original plan.
#include <gtest/gtest.h>

#include "kvbits/codebook.hpp"
#include "kvbits/plan_format.hpp"
#include "kvbits/rotation.hpp"
#include "kvbits/status.hpp"
#include "test_plans.hpp"

namespace kvbits {
namespace {

// A random plan with the real Gaussian codebooks and plan-derived rotation seeds.
Plan realistic_plan(const ModelShape& shape, uint64_t seed) {
  Plan p = test::random_plan(shape, seed);
  for (size_t b = 1; b < p.unit_codebooks.size(); ++b)
    if (!p.unit_codebooks[b].empty()) p.unit_codebooks[b] = unit_gaussian_codebook(int(b), p.recipe);
  for (uint32_t l = 0; l < p.layers.size(); ++l)
    for (uint32_t h = 0; h < p.layers[l].heads.size(); ++h) {
      HeadPlan& hp = p.layers[l].heads[h];
      for (uint32_t g = 0; g < hp.k_rotations.size(); ++g)
        hp.k_rotations[g].seed = derive_rotation_seed(p.rotation_seed, l, h, 0, g);
      hp.v_rotation.seed = derive_rotation_seed(p.rotation_seed, l, h, 1, 0);
    }
  p.validate();
  return p;
}

struct Encoded {
  std::vector<uint8_t> k_packed, v_packed;
  std::vector<uint16_t> k_scales, v_scales;
  bool operator==(const Encoded& o) const {
    return k_packed == o.k_packed && v_packed == o.v_packed && k_scales == o.k_scales && v_scales == o.v_scales;
  }
};

Encoded encode(const HeadQuantizers& q, const std::vector<float>& x) {
  Encoded e;
  e.k_packed.resize(q.k.code_bytes());
  e.k_scales.resize(q.k.n_groups());
  e.v_packed.resize(q.v.code_bytes());
  e.v_scales.resize(q.v.n_groups());
  q.k.encode(x.data(), e.k_packed.data(), e.k_scales.data());
  q.v.encode(x.data(), e.v_packed.data(), e.v_scales.data());
  return e;
}

std::vector<float> random_vector(uint32_t dim, test::Rng& rng) {
  std::vector<float> x(dim);
  for (float& v : x) v = float(4.0 * rng.uniform() - 2.0);
  return x;
}

TEST(PlanQuantizers, MaterializeGeneratedIsTheHaarRotation) {
  const RotationSpec spec{RotationSpec::Kind::generated, 6, 99, {}};
  EXPECT_EQ(spec.materialize(), haar_rotation(6, 99));
  EXPECT_NE(spec.materialize(), haar_rotation(6, 100));
  const std::vector<float> m = test::orthonormal_matrix(4, 5);
  const RotationSpec explicit_spec{RotationSpec::Kind::explicit_matrix, 4, 0, m};
  EXPECT_EQ(explicit_spec.materialize(), m);
  const RotationSpec short_spec{RotationSpec::Kind::explicit_matrix, 5, 0, m};
  try {
    short_spec.materialize();
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::invalid_argument);
  }
}

TEST(PlanQuantizers, LoadedPlanEncodesIdentically) {
  for (const ModelShape& shape : {test::stories260k_shape(), test::split_half_128_shape()}) {
    SCOPED_TRACE(shape.describe());
    const Plan plan = realistic_plan(shape, 61);
    const std::vector<uint8_t> bytes = serialize_plan(plan);
    const Plan loaded = parse_plan(bytes.data(), bytes.size());
    test::Rng rng(62);
    size_t heads_checked = 0;
    for (uint32_t l = 0; l < shape.n_layers; ++l) {
      if (plan.layers[l].keep_fp16) continue;
      for (uint32_t h = 0; h < shape.n_kv_heads; ++h) {
        const HeadQuantizers a = make_head_quantizers(plan, l, h);
        const HeadQuantizers b = make_head_quantizers(loaded, l, h);
        const HeadPlan& hp = plan.head(l, h);
        // The quantizers realise exactly the plan's layout and byte budget.
        ASSERT_EQ(b.k.n_groups(), hp.k_rotations.size());
        EXPECT_EQ(b.k.slot_dim(), plan.head_layout(l, h).slot_dim);
        EXPECT_EQ(b.k.code_bytes() + 2 * b.k.n_groups() + b.v.code_bytes() + 2 * b.v.n_groups(),
                  loaded.bytes_per_token(l, h));
        for (size_t g = 0; g < hp.k_rotations.size(); ++g) EXPECT_EQ(b.k.rotation(g), hp.k_rotations[g].materialize());
        EXPECT_EQ(b.v.rotation(0), hp.v_rotation.materialize());
        for (int i = 0; i < 4; ++i) {
          const std::vector<float> x = random_vector(shape.head_dim, rng);
          EXPECT_TRUE(encode(a, x) == encode(b, x)) << "layer " << l << " head " << h;
        }
        ++heads_checked;
      }
    }
    EXPECT_EQ(heads_checked, size_t(shape.n_layers - 1) * shape.n_kv_heads);  // one fp16 layer
  }
}

TEST(PlanQuantizers, RotationSeedChangesTheEncoding) {
  // Guards the previous test: the stored rotation really reaches the encoder.
  const Plan plan = realistic_plan(test::split_half_128_shape(), 63);
  Plan changed = plan;
  changed.layers[0].heads[1].v_rotation.seed ^= 1;
  test::Rng rng(64);
  const std::vector<float> x = random_vector(128, rng);
  const Encoded a = encode(make_head_quantizers(plan, 0, 1), x);
  const Encoded b = encode(make_head_quantizers(changed, 0, 1), x);
  EXPECT_EQ(a.k_packed, b.k_packed);
  EXPECT_NE(a.v_packed, b.v_packed);
}

TEST(PlanQuantizers, Fp16LayerAndOutOfRangeHeadsHaveNoQuantizers) {
  const Plan plan = realistic_plan(test::stories260k_shape(), 65);
  ASSERT_TRUE(plan.layers[1].keep_fp16);
  for (auto [l, h] : {std::pair<uint32_t, uint32_t>{1, 0}, {0, 4}, {5, 0}}) {
    try {
      make_head_quantizers(plan, l, h);
      ADD_FAILURE() << l << "/" << h;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::invalid_argument);
    }
  }
}

}  // namespace
}  // namespace kvbits
