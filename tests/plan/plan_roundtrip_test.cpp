// Round trips: plan -> bytes -> plan is the identity, the writer is deterministic, and files
// are saved atomically.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "kvbits/plan_format.hpp"
#include "kvbits/status.hpp"
#include "plan_file_edit.hpp"
#include "test_plans.hpp"

namespace kvbits {
namespace {

struct NamedPlan {
  const char* name;
  Plan plan;
};

std::vector<NamedPlan> sample_plans() {
  test::RandomPlanOptions wide;
  wide.min_bits = 1;
  wide.max_bits = 8;
  wide.v_bits = 4;
  ModelShape partial = test::split_half_128_shape();
  partial.rotary_dim = 96;  // 16 static blocks
  test::RandomPlanOptions uniform;
  uniform.min_bits = uniform.max_bits = 3;
  uniform.fp16_layer = false;
  uniform.explicit_rotation = false;
  Plan uniform_plan = test::random_plan(test::stories260k_shape(), 9, uniform);
  uniform_plan.method = Method::uniform_tq_mse;
  return {
      {"golden", test::golden_plan()},
      {"stories260k", test::random_plan(test::stories260k_shape(), 1)},
      {"stories260k_widths_1_8", test::random_plan(test::stories260k_shape(), 2, wide)},
      {"split_half_128", test::random_plan(test::split_half_128_shape(), 3)},
      {"partial_rotary_96", test::random_plan(partial, 4)},
      {"uniform", uniform_plan},
  };
}

TEST(PlanRoundTrip, ParseOfSerializeIsIdentity) {
  for (const NamedPlan& s : sample_plans()) {
    SCOPED_TRACE(s.name);
    const std::vector<uint8_t> bytes = serialize_plan(s.plan);
    const Plan back = parse_plan(bytes.data(), bytes.size());
    EXPECT_TRUE(back == s.plan);
    EXPECT_EQ(back.shape.describe(), s.plan.shape.describe());
    EXPECT_EQ(back.layers.size(), s.plan.layers.size());
    EXPECT_EQ(back.fingerprint.hex(), s.plan.fingerprint.hex());
    EXPECT_EQ(back.producer.corpus, s.plan.producer.corpus);
    EXPECT_EQ(serialize_plan(back), bytes);  // and back to the same bytes
  }
}

TEST(PlanRoundTrip, SerializeTwiceGivesIdenticalBytes) {
  for (const NamedPlan& s : sample_plans()) {
    SCOPED_TRACE(s.name);
    const Plan copy = s.plan;
    EXPECT_EQ(serialize_plan(s.plan), serialize_plan(copy));
  }
}

TEST(PlanRoundTrip, LargeHeadSectionIsCompressedAndRestored) {
  const Plan plan = test::random_plan(test::split_half_128_shape(), 3);
  const std::vector<uint8_t> bytes = serialize_plan(plan);
  const test::PlanFile file = test::split_plan_file(bytes);
  ASSERT_EQ(file.sections.size(), 7u);
  const char* order[] = {"SHAP", "METH", "FPRT", "PROD", "CODE", "LAYR", "HEAD"};
  for (size_t i = 0; i < 7; ++i) EXPECT_EQ(file.sections[i].id, order[i]);
  const test::FileSection& head = file.sections[6];
  EXPECT_TRUE(head.flags & test::kSectionZstd);
  EXPECT_LT(head.stored.size(), head.raw_size);
  // 2 quantized layers x 2 heads; fixed part of a record is 1 + 19 * 64 bytes.
  EXPECT_GE(head.raw_size, 4u * (1 + 19 * 64));
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(file.sections[i].flags, test::kSectionRequired) << order[i];
}

TEST(PlanRoundTrip, ExplicitMatricesAndFp16LayerSurvive) {
  const Plan plan = test::random_plan(test::stories260k_shape(), 5);
  ASSERT_EQ(plan.layers[0].heads[0].v_rotation.kind, RotationSpec::Kind::explicit_matrix);
  ASSERT_TRUE(plan.layers[1].keep_fp16);
  const std::vector<uint8_t> bytes = serialize_plan(plan);
  const Plan back = parse_plan(bytes.data(), bytes.size());
  EXPECT_TRUE(back.layers[1].keep_fp16);
  EXPECT_TRUE(back.layers[1].heads.empty());
  EXPECT_EQ(back.layers[0].heads[0].v_rotation.matrix, plan.layers[0].heads[0].v_rotation.matrix);
  EXPECT_EQ(back.layers[0].heads[0].v_rotation.matrix.size(), 64u);
  EXPECT_EQ(back.layers[0].heads[0].k_rotations[0].kind, RotationSpec::Kind::explicit_matrix);
}

TEST(PlanRoundTrip, NegativeZeroAndExactBitsAreKept) {
  Plan plan = test::golden_plan();
  plan.layers[0].heads[0].q_energy[1] = -0.0;
  plan.layers[0].heads[0].k_energy[0] = 0.1 + 0.2;  // not representable exactly as typed
  const std::vector<uint8_t> bytes = serialize_plan(plan);
  const Plan back = parse_plan(bytes.data(), bytes.size());
  EXPECT_TRUE(std::signbit(back.layers[0].heads[0].q_energy[1]));
  EXPECT_EQ(back.layers[0].heads[0].k_energy[0], 0.1 + 0.2);
  Plan positive = plan;
  positive.layers[0].heads[0].q_energy[1] = 0.0;
  EXPECT_FALSE(positive == plan);  // equality is by bit pattern, like the bytes
  EXPECT_NE(serialize_plan(positive), bytes);
}

TEST(PlanRoundTrip, SerializeRefusesInvalidPlan) {
  Plan plan = test::golden_plan();
  plan.layers[0].heads[0].v_bits = 9;
  try {
    serialize_plan(plan);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::corrupt_data);
    EXPECT_NE(std::string(e.what()).find("v_bits"), std::string::npos) << e.what();
  }
}

class PlanFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() /
           ("kvbits_plan_test_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::filesystem::path dir_;
};

TEST_F(PlanFileTest, SaveThenLoad) {
  const Plan plan = test::random_plan(test::stories260k_shape(), 11);
  const std::string path = (dir_ / "model.kvbplan").string();
  save_plan_file(plan, path);
  EXPECT_TRUE(load_plan_file(path) == plan);
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
  EXPECT_EQ(std::filesystem::file_size(path), serialize_plan(plan).size());
  // Overwrites atomically.
  const Plan other = test::golden_plan();
  save_plan_file(other, path);
  EXPECT_TRUE(load_plan_file(path) == other);
}

TEST_F(PlanFileTest, InvalidPlanLeavesExistingFileUntouched) {
  const std::string path = (dir_ / "model.kvbplan").string();
  save_plan_file(test::golden_plan(), path);
  Plan bad = test::golden_plan();
  bad.k_min_bits = 0;
  EXPECT_THROW(save_plan_file(bad, path), Error);
  EXPECT_TRUE(load_plan_file(path) == test::golden_plan());
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

TEST_F(PlanFileTest, IoErrors) {
  auto code_of = [](auto&& f) {
    try {
      f();
    } catch (const Error& e) {
      return e.code();
    }
    return StatusCode::ok;
  };
  EXPECT_EQ(code_of([&] { load_plan_file((dir_ / "missing.kvbplan").string()); }), StatusCode::io_error);
  EXPECT_EQ(code_of([&] { save_plan_file(test::golden_plan(), (dir_ / "no" / "such" / "dir.kvbplan").string()); }),
            StatusCode::io_error);
  const std::string junk = (dir_ / "junk.kvbplan").string();
  std::ofstream(junk) << "not a plan";
  EXPECT_EQ(code_of([&] { load_plan_file(junk); }), StatusCode::corrupt_data);
}

}  // namespace
}  // namespace kvbits
