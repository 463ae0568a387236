// Damaged files: every truncation and every bit flip is refused with corrupt_data.
#include <gtest/gtest.h>

#include <map>

#include "kvbits/plan_format.hpp"
#include "kvbits/status.hpp"
#include "plan_file_edit.hpp"
#include "test_plans.hpp"

namespace kvbits {
namespace {

// The status parse_plan ends with (ok when it accepts).
StatusCode parse_status(const std::vector<uint8_t>& bytes) {
  try {
    parse_plan(bytes.data(), bytes.size());
  } catch (const Error& e) {
    return e.code();
  }
  return StatusCode::ok;
}

// Which part of the file a byte belongs to, for reporting and per-region counts.
std::string region_of(const std::vector<uint8_t>& bytes, size_t at) {
  if (at < 64) return "header";
  const test::PlanFile f = test::split_plan_file(bytes);
  if (at < 64 + f.sections.size() * 40) return "table";
  for (size_t i = 0; i < f.sections.size(); ++i) {
    const uint8_t* e = &bytes[64 + i * 40];
    const uint64_t off = test::load_u64(e + 8, 8), n = test::load_u64(e + 16, 8);
    if (at >= off && at < off + n) return f.sections[i].id;
  }
  return "padding";
}

TEST(PlanDamage, EveryTruncationIsCorruptData) {
  for (const Plan& plan : {test::golden_plan(), test::random_plan(test::stories260k_shape(), 21)}) {
    const std::vector<uint8_t> bytes = serialize_plan(plan);
    for (size_t n = 0; n < bytes.size(); ++n) {
      const std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + long(n));
      ASSERT_EQ(parse_status(cut), StatusCode::corrupt_data) << "truncated to " << n << " of " << bytes.size();
    }
  }
}

TEST(PlanDamage, TruncationMessageNamesBothSizes) {
  const std::vector<uint8_t> bytes = serialize_plan(test::golden_plan());
  const std::vector<uint8_t> cut(bytes.begin(), bytes.end() - 10);
  try {
    parse_plan(cut.data(), cut.size());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "plan file: truncated: file is " + std::to_string(cut.size()) +
                                         " bytes, header says " + std::to_string(bytes.size()));
  }
}

// Flips every bit of every byte of a small plan: each must be refused, and every region
// (header, table, each section, padding) must have been hit.
TEST(PlanDamage, EveryBitFlipOfASmallPlanIsCorruptData) {
  const std::vector<uint8_t> bytes = serialize_plan(test::random_plan(test::stories260k_shape(), 22));
  ASSERT_EQ(parse_status(bytes), StatusCode::ok);
  std::map<std::string, size_t> flips_per_region;
  std::vector<uint8_t> damaged = bytes;
  for (size_t at = 0; at < bytes.size(); ++at) {
    const std::string region = region_of(bytes, at);
    for (int bit = 0; bit < 8; ++bit) {
      damaged[at] = uint8_t(bytes[at] ^ (1u << bit));
      ASSERT_EQ(parse_status(damaged), StatusCode::corrupt_data) << "byte " << at << " bit " << bit << " (" << region << ")";
      ++flips_per_region[region];
    }
    damaged[at] = bytes[at];
  }
  for (const char* r : {"header", "table", "SHAP", "METH", "FPRT", "PROD", "CODE", "LAYR", "HEAD"})
    EXPECT_GT(flips_per_region[r], 0u) << r;
}

TEST(PlanDamage, SampledBitFlipsOfALargeCompressedPlan) {
  const std::vector<uint8_t> bytes = serialize_plan(test::random_plan(test::split_half_128_shape(), 23));
  ASSERT_TRUE(test::split_plan_file(bytes).section("HEAD").flags & test::kSectionZstd);
  test::Rng rng(7);
  std::vector<uint8_t> damaged = bytes;
  for (int i = 0; i < 3000; ++i) {
    // Half the flips inside the first 1 KiB (header, table, small sections), half anywhere.
    const size_t at = i % 2 ? rng.below(1024) : rng.below(uint32_t(bytes.size()));
    const int bit = int(rng.below(8));
    damaged[at] ^= uint8_t(1u << bit);
    ASSERT_EQ(parse_status(damaged), StatusCode::corrupt_data) << "byte " << at << " bit " << bit;
    damaged[at] = bytes[at];
  }
}

TEST(PlanDamage, ChecksumMessageNamesTheSection) {
  std::vector<uint8_t> bytes = serialize_plan(test::golden_plan());
  const test::PlanFile f = test::split_plan_file(bytes);
  const uint64_t head_offset = test::load_u64(&bytes[64 + 6 * 40 + 8], 8);
  ASSERT_EQ(f.sections[6].id, "HEAD");
  bytes[head_offset + 3] ^= 0x10;
  try {
    parse_plan(bytes.data(), bytes.size());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::corrupt_data);
    EXPECT_EQ(std::string(e.what()).rfind("plan file: section 'HEAD' checksum mismatch", 0), 0u) << e.what();
  }
}

TEST(PlanDamage, NonZeroPaddingIsCorruptData) {
  // PROD of the golden plan ends unaligned, so padding follows it.
  std::vector<uint8_t> bytes = serialize_plan(test::golden_plan());
  size_t padding = 0;
  for (size_t at = 64 + 7 * 40; at < bytes.size() && !padding; ++at)
    if (region_of(bytes, at) == "padding") padding = at;
  ASSERT_NE(padding, 0u);
  bytes[padding] = 1;
  try {
    parse_plan(bytes.data(), bytes.size());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::corrupt_data);
    EXPECT_NE(std::string(e.what()).find("padding byte at offset " + std::to_string(padding)), std::string::npos)
        << e.what();
  }
}

TEST(PlanDamage, EmptyAndTinyInputs) {
  EXPECT_EQ(parse_status({}), StatusCode::corrupt_data);
  EXPECT_EQ(parse_status({'K', 'V', 'B'}), StatusCode::corrupt_data);
  EXPECT_EQ(parse_status({'P', 'K', 0x03, 0x04}), StatusCode::corrupt_data);
  EXPECT_THROW(parse_plan(nullptr, 0), Error);
  try {
    parse_plan(nullptr, 10);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), StatusCode::null_pointer);
  }
}

}  // namespace
}  // namespace kvbits
