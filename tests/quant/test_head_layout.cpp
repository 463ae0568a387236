// Head layout: hp order, slot -> dim maps and groups for both RoPE layouts and partial rotary.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "kvbits/head_layout.hpp"
#include "kvbits/status.hpp"

namespace kvbits {
namespace {

ModelShape shape(uint32_t d, uint32_t r, RopeLayout layout) {
  ModelShape s;
  s.n_layers = 1;
  s.n_q_heads = 2;
  s.n_kv_heads = 1;
  s.head_dim = d;
  s.rotary_dim = r;
  s.rope_layout = layout;
  return s;
}

void expect_group(const KeyGroup& g, int bits, uint32_t first, uint32_t dims) {
  EXPECT_EQ(int(g.bits), bits);
  EXPECT_EQ(g.first_slot, first);
  EXPECT_EQ(g.dims, dims);
}

TEST(HeadLayout, CanonicalOrderSortsByWidthThenBlockId) {
  EXPECT_EQ(canonical_block_order({3, 2, 4, 3}), (std::vector<uint32_t>{1, 0, 3, 2}));
  EXPECT_EQ(canonical_block_order({5, 5, 1, 5, 1}), (std::vector<uint32_t>{2, 4, 0, 1, 3}));
}

TEST(HeadLayout, InterleavedByHand) {
  // Blocks (2i, 2i+1) with widths 3,2,4,3 -> hp order 1,0,3,2.
  const HeadLayout l = make_head_layout(shape(8, 8, RopeLayout::interleaved), {3, 2, 4, 3});
  EXPECT_EQ(l.block_order, (std::vector<uint32_t>{1, 0, 3, 2}));
  EXPECT_EQ(l.slot_dim, (std::vector<uint32_t>{2, 3, 0, 1, 6, 7, 4, 5}));
  ASSERT_EQ(l.groups.size(), 3u);
  expect_group(l.groups[0], 2, 0, 2);
  expect_group(l.groups[1], 3, 2, 4);
  expect_group(l.groups[2], 4, 6, 2);
  EXPECT_EQ(l.code_bits(), 2u * 2 + 3 * 4 + 4 * 2);
}

TEST(HeadLayout, SplitHalfByHand) {
  // Blocks (i, i+4) with the same widths.
  const HeadLayout l = make_head_layout(shape(8, 8, RopeLayout::split_half), {3, 2, 4, 3});
  EXPECT_EQ(l.slot_dim, (std::vector<uint32_t>{1, 5, 0, 4, 3, 7, 2, 6}));
  EXPECT_EQ(l.block_bits, (std::vector<uint8_t>{3, 2, 4, 3}));
  ASSERT_EQ(l.groups.size(), 3u);
  expect_group(l.groups[1], 3, 2, 4);
}

TEST(HeadLayout, SplitHalfWithFourWidthsOneBlockEach) {
  const HeadLayout l = make_head_layout(shape(8, 8, RopeLayout::split_half), {2, 3, 3, 4});
  EXPECT_EQ(l.slot_dim, (std::vector<uint32_t>{0, 4, 1, 5, 2, 6, 3, 7}));
  ASSERT_EQ(l.groups.size(), 3u);
  expect_group(l.groups[0], 2, 0, 2);
  expect_group(l.groups[1], 3, 2, 4);
  expect_group(l.groups[2], 4, 6, 2);
}

TEST(HeadLayout, PartialRotaryPairsStaticDimsInOrder) {
  // D = 8, R = 4, split-half: rotary blocks (0,2), (1,3); static blocks (4,5), (6,7).
  const HeadLayout l = make_head_layout(shape(8, 4, RopeLayout::split_half), {4, 1, 1, 2});
  EXPECT_EQ(l.block_order, (std::vector<uint32_t>{1, 2, 3, 0}));
  EXPECT_EQ(l.slot_dim, (std::vector<uint32_t>{1, 3, 4, 5, 6, 7, 0, 2}));
  ASSERT_EQ(l.groups.size(), 3u);
  expect_group(l.groups[0], 1, 0, 4);
  expect_group(l.groups[1], 2, 4, 2);
  expect_group(l.groups[2], 4, 6, 2);
  EXPECT_EQ(l.code_bits(), 4u + 4 + 8);
}

TEST(HeadLayout, ExplicitOrderInsideAWidthIsKept) {
  const std::vector<uint32_t> order{2, 1, 3, 0};
  const HeadLayout l = make_head_layout(shape(8, 4, RopeLayout::split_half), {4, 1, 1, 2}, &order);
  EXPECT_EQ(l.block_order, order);
  EXPECT_EQ(l.slot_dim, (std::vector<uint32_t>{4, 5, 1, 3, 6, 7, 0, 2}));
}

TEST(HeadLayout, UniformWidthIsOneGroup) {
  const HeadLayout l = make_head_layout(shape(128, 128, RopeLayout::split_half), std::vector<uint8_t>(64, 3));
  ASSERT_EQ(l.groups.size(), 1u);
  expect_group(l.groups[0], 3, 0, 128);
  EXPECT_EQ(l.slot_dim[0], 0u);
  EXPECT_EQ(l.slot_dim[1], 64u);
  EXPECT_EQ(l.slot_dim[127], 127u);
  EXPECT_EQ(l.code_bits(), 384u);
}

TEST(HeadLayout, RejectsInvalidInput) {
  const ModelShape s = shape(8, 8, RopeLayout::split_half);
  auto expect_invalid = [](auto&& f) {
    try {
      f();
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), StatusCode::invalid_argument);
    }
  };
  expect_invalid([&] { make_head_layout(s, {1, 2, 3}); });        // too few widths
  expect_invalid([&] { make_head_layout(s, {1, 2, 3, 4, 5}); });  // too many
  expect_invalid([&] { make_head_layout(s, {1, 0, 3, 4}); });     // width 0
  expect_invalid([&] { make_head_layout(s, {1, 9, 3, 4}); });     // width 9
  const std::vector<uint8_t> bits{1, 1, 2, 2};
  const std::vector<uint32_t> unsorted{2, 0, 1, 3}, dup{0, 0, 2, 3}, out_of_range{0, 1, 2, 4}, short_order{0, 1, 2};
  expect_invalid([&] { make_head_layout(s, bits, &unsorted); });
  expect_invalid([&] { make_head_layout(s, bits, &dup); });
  expect_invalid([&] { make_head_layout(s, bits, &out_of_range); });
  expect_invalid([&] { make_head_layout(s, bits, &short_order); });
}

}  // namespace
}  // namespace kvbits
