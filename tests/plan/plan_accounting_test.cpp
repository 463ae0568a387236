// Plan accessors, byte accounting by hand, shape checks, names and fingerprints.
#include <gtest/gtest.h>
#include <xxhash.h>

#include <filesystem>
#include <fstream>
#include <functional>

#include "kvbits/plan.hpp"
#include "kvbits/status.hpp"
#include "test_plans.hpp"

namespace kvbits {
namespace {

StatusCode status_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return StatusCode::ok;
}

// A one-layer, one-KV-head plan with the given widths (canonical order, generated rotations).
Plan plan_with_widths(const ModelShape& shape, const std::vector<uint8_t>& widths, uint8_t v_bits) {
  Plan p;
  p.shape = shape;
  p.k_avg_bits = 3.0;
  p.unit_codebooks.assign(9, {});
  HeadPlan h;
  h.block_bits = widths;
  h.block_order = canonical_block_order(widths);
  h.q_energy.assign(widths.size(), 1.0);
  h.k_energy.assign(widths.size(), 1.0);
  const HeadLayout layout = make_head_layout(shape, widths, &h.block_order);
  for (const KeyGroup& g : layout.groups) {
    h.k_rotations.push_back({RotationSpec::Kind::generated, g.dims, 100u + g.bits, {}});
    p.unit_codebooks[g.bits] = test::test_codebook(g.bits);
  }
  h.v_bits = v_bits;
  h.v_rotation = {RotationSpec::Kind::generated, shape.head_dim, 1, {}};
  p.unit_codebooks[v_bits] = test::test_codebook(v_bits);
  p.layers.assign(shape.n_layers, LayerPlan{});
  for (LayerPlan& l : p.layers) l.heads.assign(shape.n_kv_heads, h);
  p.validate();
  return p;
}

ModelShape one_head(uint32_t head_dim, RopeLayout layout) {
  ModelShape s;
  s.n_layers = 1;
  s.n_q_heads = 1;
  s.n_kv_heads = 1;
  s.head_dim = head_dim;
  s.rotary_dim = head_dim;
  s.rope_layout = layout;
  return s;
}

TEST(PlanAccounting, BytesPerTokenK3V3AtD128ByHand) {
  // Histogram of reference spec §2 (log-normal scores, avg 3): 1b:9 2b:15 3b:19 4b:11 5b:8 6b:2.
  std::vector<uint8_t> widths;
  const int count[7] = {0, 9, 15, 19, 11, 8, 2};
  for (int b = 1; b <= 6; ++b) widths.insert(widths.end(), size_t(count[b]), uint8_t(b));
  ASSERT_EQ(widths.size(), 64u);
  // Interleave so the widths are not already sorted by block id.
  std::vector<uint8_t> shuffled(64);
  for (size_t i = 0; i < 64; ++i) shuffled[(i * 37) % 64] = widths[i];
  const Plan p = plan_with_widths(one_head(128, RopeLayout::split_half), shuffled, 3);
  // K codes per group, ceil(d_g * b / 8): 1b 18 dims -> 3, 2b 30 -> 8, 3b 38 -> 15,
  // 4b 22 -> 11, 5b 16 -> 10, 6b 4 -> 3: 50 bytes; 6 fp16 scales: 12 bytes.
  // V: 128 * 3 / 8 = 48 bytes + one fp16 scale: 2 bytes. Total 112.
  EXPECT_EQ(p.bytes_per_token(0, 0), 50u + 12u + 48u + 2u);
  EXPECT_EQ(p.head_layout(0, 0).groups.size(), 6u);
  EXPECT_DOUBLE_EQ(p.mean_bytes_per_token(), 112.0);
}

TEST(PlanAccounting, BytesPerTokenSmallHeadsByHand) {
  const ModelShape d8 = one_head(8, RopeLayout::interleaved);
  // K2V2: K 16 bits = 2 bytes + scale 2; V 2 bytes + scale 2.
  EXPECT_EQ(plan_with_widths(d8, {2, 2, 2, 2}, 2).bytes_per_token(0, 0), 8u);
  // Widths {1,3,3,8}: 1b 2 dims -> 1 byte, 3b 4 dims -> 2 bytes, 8b 2 dims -> 2 bytes, 3 scales
  // -> 6 bytes; V4: 4 bytes + 2. Total 17.
  EXPECT_EQ(plan_with_widths(d8, {3, 1, 8, 3}, 4).bytes_per_token(0, 0), 17u);
}

TEST(PlanAccounting, Fp16LayerCountsFourBytesPerDim) {
  ModelShape s = one_head(8, RopeLayout::interleaved);
  s.n_layers = 2;
  s.n_q_heads = 4;
  s.n_kv_heads = 2;
  Plan p = plan_with_widths(s, {2, 2, 2, 2}, 2);
  p.layers[1].keep_fp16 = true;
  p.layers[1].heads.clear();
  p.validate();
  EXPECT_EQ(p.bytes_per_token(1, 0), 32u);
  EXPECT_EQ(p.bytes_per_token(1, 1), 32u);
  EXPECT_EQ(p.bytes_per_token(0, 1), 8u);
  EXPECT_DOUBLE_EQ(p.mean_bytes_per_token(), (8.0 + 8.0 + 32.0 + 32.0) / 4.0);
  EXPECT_EQ(status_of([&] { p.head(1, 0); }), StatusCode::invalid_argument);
  EXPECT_EQ(status_of([&] { p.head(2, 0); }), StatusCode::invalid_argument);
  EXPECT_EQ(status_of([&] { p.head(0, 2); }), StatusCode::invalid_argument);
  EXPECT_EQ(status_of([&] { p.bytes_per_token(1, 2); }), StatusCode::invalid_argument);
  EXPECT_EQ(&p.head(0, 1), &p.layers[0].heads[1]);
}

TEST(PlanAccounting, HeadLayoutFollowsTheStoredOrder) {
  Plan p = plan_with_widths(one_head(8, RopeLayout::interleaved), {2, 1, 2, 1}, 2);
  HeadPlan& h = p.layers[0].heads[0];
  EXPECT_EQ(h.block_order, (std::vector<uint32_t>{1, 3, 0, 2}));
  h.block_order = {3, 1, 2, 0};  // ties in another order: still valid
  p.validate();
  const HeadLayout layout = p.head_layout(0, 0);
  EXPECT_EQ(layout.block_order, (std::vector<uint32_t>{3, 1, 2, 0}));
  EXPECT_EQ(layout.slot_dim, (std::vector<uint32_t>{6, 7, 2, 3, 4, 5, 0, 1}));
  ASSERT_EQ(layout.groups.size(), 2u);
  EXPECT_EQ(layout.groups[1].first_slot, 4u);
}

TEST(PlanAccounting, CheckPlanShapeNamesEachField) {
  const Plan p = test::random_plan(test::stories260k_shape(), 51);
  EXPECT_NO_THROW(check_plan_shape(p, test::stories260k_shape()));
  struct Case {
    std::function<void(ModelShape&)> change;
    std::string message;
  } cases[] = {
      {[](ModelShape& s) { s.n_layers = 6; }, "plan was made for n_layers=5, the model has n_layers=6"},
      {[](ModelShape& s) { s.n_q_heads = 16; }, "plan was made for n_q_heads=8, the model has n_q_heads=16"},
      {[](ModelShape& s) { s.n_kv_heads = 8; }, "plan was made for n_kv_heads=4, the model has n_kv_heads=8"},
      {[](ModelShape& s) { s.head_dim = 16; }, "plan was made for head_dim=8, the model has head_dim=16"},
      {[](ModelShape& s) { s.rotary_dim = 4; }, "plan was made for rotary_dim=8, the model has rotary_dim=4"},
      {[](ModelShape& s) { s.rope_layout = RopeLayout::split_half; },
       "plan was made for rope_layout=interleaved, the model has rope_layout=split-half"},
      {[](ModelShape& s) { s.rope_theta = 500000.0; }, "plan was made for rope_theta=10000, the model has rope_theta=500000"},
  };
  for (const Case& c : cases) {
    ModelShape model = test::stories260k_shape();
    c.change(model);
    try {
      check_plan_shape(p, model);
      ADD_FAILURE() << c.message << ": accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::shape_mismatch);
      EXPECT_EQ(std::string(e.what()), c.message);
    }
  }
}

TEST(PlanAccounting, Names) {
  EXPECT_STREQ(method_name(Method::block_gtq), "block-gtq");
  EXPECT_STREQ(method_name(Method::uniform_tq_mse), "uniform-tq-mse");
  EXPECT_STREQ(method_name(Method(9)), "unknown");
}

TEST(PlanAccounting, FingerprintHex) {
  Fingerprint f;
  EXPECT_EQ(f.hex(), "none");
  f.kind = Fingerprint::Kind::xxh3_128;
  for (size_t i = 0; i < 32; ++i) f.bytes[i] = uint8_t(i < 16 ? 0xF0 + i : 0);
  EXPECT_EQ(f.hex(), "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
  f.kind = Fingerprint::Kind::user;
  f.bytes[31] = 0xAB;
  EXPECT_EQ(f.hex().size(), 64u);
  EXPECT_EQ(f.hex().substr(56), "000000ab");
}

class FingerprintFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (std::filesystem::temp_directory_path() /
             ("kvbits_fingerprint_" + std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
              ::testing::UnitTest::GetInstance()->current_test_info()->name()))
                .string();
  }
  void TearDown() override { std::filesystem::remove(path_); }
  void write(const std::string& content) { std::ofstream(path_, std::ios::binary) << content; }
  std::string path_;
};

TEST_F(FingerprintFileTest, EmptyFileMatchesThePublishedXxh3_128) {
  write("");
  const Fingerprint f = fingerprint_file(path_);
  EXPECT_EQ(f.kind, Fingerprint::Kind::xxh3_128);
  EXPECT_EQ(f.hex(), "99aa06d3014798d86001c324468d497f");
}

TEST_F(FingerprintFileTest, StreamedHashEqualsOneShotBigEndian) {
  // Longer than the 1 MiB read chunk, and not a multiple of it.
  std::string content(3 * 1024 * 1024 + 5, '\0');
  test::Rng rng(3);
  for (char& c : content) c = char(rng.next());
  write(content);
  const XXH128_hash_t h = XXH3_128bits(content.data(), content.size());
  const Fingerprint f = fingerprint_file(path_);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(f.bytes[size_t(i)], uint8_t(h.high64 >> (56 - 8 * i))) << i;
    EXPECT_EQ(f.bytes[size_t(8 + i)], uint8_t(h.low64 >> (56 - 8 * i))) << i;
  }
  for (size_t i = 16; i < 32; ++i) EXPECT_EQ(f.bytes[i], 0);
}

TEST_F(FingerprintFileTest, MissingFileIsIoError) {
  EXPECT_EQ(status_of([&] { fingerprint_file(path_ + ".missing"); }), StatusCode::io_error);
}

}  // namespace
}  // namespace kvbits
