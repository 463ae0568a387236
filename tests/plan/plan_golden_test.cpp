// The golden plan's bytes are pinned: any change to the writer's output is a format change
// (and docs/plan-format.md §8 shows the same header bytes).
#include <gtest/gtest.h>
#include <xxhash.h>

#include "kvbits/plan_format.hpp"
#include "test_plans.hpp"

namespace kvbits {
namespace {

std::string hex(const uint8_t* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s += digits[p[i] >> 4];
    s += digits[p[i] & 15];
  }
  return s;
}

TEST(PlanGolden, BytesArePinned) {
  const std::vector<uint8_t> bytes = serialize_plan(test::golden_plan());
  ASSERT_EQ(bytes.size(), 625u);
  EXPECT_EQ(XXH64(bytes.data(), bytes.size(), 0), 0xdcc6494983b33f15ull);
  EXPECT_EQ(hex(bytes.data(), 64),
            "4b5642504c414e00"   // magic
            "0100" "0000"        // version 1.0
            "40000000"           // header_size 64
            "0000000000000000"   // required_flags
            "0000000000000000"   // optional_flags
            "7102000000000000"   // file_size 625
            "07000000"           // section_count
            "28000000"           // table_entry_size 40
            "3a18ec3aa2b2dde8"   // table_checksum
            "67c6539fbc50eb1b");  // header_checksum
  EXPECT_EQ(hex(bytes.data() + 64, 40),
            "53484150"           // "SHAP"
            "02000000"           // flags: required
            "5801000000000000"   // offset 344
            "2000000000000000"   // stored_size 32
            "2000000000000000"   // raw_size 32
            "e335a9cc9fceff44");  // XXH3-64 of the section
}

TEST(PlanGolden, SectionPayloadsByHand) {
  const std::vector<uint8_t> bytes = serialize_plan(test::golden_plan());
  // SHAP at 344: 1 layer, 2 q heads, 1 kv head, D 4, R 4, interleaved, theta 10000.
  EXPECT_EQ(hex(bytes.data() + 344, 32),
            "01000000" "02000000" "01000000" "04000000" "04000000" "01" "000000"
            "000000000088c340");  // 10000.0 = 0x40c3880000000000
  // LAYR at 552: one layer, not fp16. HEAD at 560 starts with v_bits 2, widths {2, 2},
  // order {0, 1}.
  EXPECT_EQ(bytes[552], 0);
  EXPECT_EQ(hex(bytes.data() + 560, 7), "02" "0202" "0000" "0100");
  // The last 13 bytes: the V rotation, generated, dim 4, seed 8.
  EXPECT_EQ(hex(bytes.data() + bytes.size() - 13, 13), "00" "04000000" "0800000000000000");
}

}  // namespace
}  // namespace kvbits
